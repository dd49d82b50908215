//! Property tests of the kernel layer's seccomp filter: for any system call data, the BPF
//! program answers what a plain reading of the rules says.

use proptest::prelude::*;

use egress_policy::seccomp::{
    filter, nr, nr32, Program, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, RET_ALLOW, RET_KILL_PROCESS,
    RET_USER_NOTIF, ROUTE_OPTIONS, STUB_CODE, STUB_IP_OFFSET, X32_BIT,
};

#[derive(Clone, Debug)]
struct Data {
    nr: u32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

fn word(d: &Data, off: u32) -> u32 {
    match off {
        0 => d.nr,
        4 => d.arch,
        8 => d.ip as u32,
        12 => (d.ip >> 32) as u32,
        o if (16..64).contains(&o) => {
            let a = d.args[((o - 16) / 8) as usize];
            if (o - 16) % 8 == 0 {
                a as u32
            } else {
                (a >> 32) as u32
            }
        }
        o => panic!("load beyond seccomp_data: {o}"),
    }
}

/// Runs a classic BPF program as the kernel does, for the opcodes a seccomp filter may use
/// here; panics on anything else, a backward jump or running off the end.
fn run(p: &Program, d: &Data) -> u32 {
    let mut a = 0u32;
    let mut pc = 0usize;
    loop {
        assert!(pc < p.len, "ran off the end");
        let i = p.insns[pc];
        match i.code {
            0x20 => a = word(d, i.k),
            0x15 => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
            0x45 => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
            0x06 => return i.k,
            c => panic!("unexpected opcode {c:#x}"),
        }
        pc += 1;
    }
}

fn reference(d: &Data, fast: Option<u64>) -> u32 {
    let trap = || {
        if fast == Some(d.ip) {
            RET_ALLOW
        } else {
            RET_USER_NOTIF
        }
    };
    match d.arch {
        AUDIT_ARCH_X86_64 if d.nr & X32_BIT != 0 => RET_USER_NOTIF,
        AUDIT_ARCH_X86_64 => match d.nr {
            nr::CONNECT | nr::SENDMSG | nr::SENDMMSG => trap(),
            nr::SENDTO if d.args[4] == 0 => RET_ALLOW,
            nr::SENDTO => trap(),
            nr::IO_URING_SETUP => RET_USER_NOTIF,
            nr::SETSOCKOPT if ROUTE_OPTIONS.contains(&(d.args[1] as u32, d.args[2] as u32)) => {
                trap()
            }
            _ => RET_ALLOW,
        },
        AUDIT_ARCH_I386 => match d.nr {
            nr32::SOCKETCALL
            | nr32::CONNECT
            | nr32::SENDTO
            | nr32::SENDMSG
            | nr32::SENDMMSG
            | nr32::IO_URING_SETUP => RET_USER_NOTIF,
            _ => RET_ALLOW,
        },
        _ => RET_KILL_PROCESS,
    }
}

fn interesting_nr() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(nr::CONNECT),
        Just(nr::SENDTO),
        Just(nr::SENDMSG),
        Just(nr::SENDMMSG),
        Just(nr::IO_URING_SETUP),
        Just(nr::SETSOCKOPT),
        Just(nr::SETSOCKOPT),
        Just(nr32::SOCKETCALL),
        Just(nr32::CONNECT),
        Just(nr32::SENDTO),
        (0u32..512).prop_map(|n| n | X32_BIT),
        0u32..1024,
        any::<u32>(),
    ]
}

fn arch() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => Just(AUDIT_ARCH_X86_64),
        2 => Just(AUDIT_ARCH_I386),
        1 => any::<u32>(),
    ]
}

fn data(fast: u64) -> impl Strategy<Value = Data> {
    let ip = prop_oneof![
        Just(fast),
        Just(fast ^ (1 << 40)),
        Just(fast & 0xffff_ffff),
        Just(fast + 2),
        any::<u64>(),
    ];
    let sendto_addr = prop_oneof![Just(0u64), Just(1u64 << 32), any::<u64>()];
    let level = prop_oneof![Just(0u64), Just(41u64), Just(41u64 | 1 << 32), any::<u64>()];
    let name = prop_oneof![
        Just(4u64),
        Just(57u64),
        Just(5u64),
        Just(6u64),
        Just(4u64 | 1 << 33),
        0u64..64
    ];
    (
        interesting_nr(),
        arch(),
        ip,
        any::<[u64; 6]>(),
        sendto_addr,
        level,
        name,
    )
        .prop_map(|(nr, arch, ip, mut args, addr, level, name)| {
            args[4] = addr;
            if nr == 54 {
                args[1] = level;
                args[2] = name;
            }
            Data { nr, arch, ip, args }
        })
}

proptest! {
    #[test]
    fn the_filter_agrees_with_the_rules(
        page in 0x3f00_0000u64..0x3f10_0000,
        with_fast in any::<bool>(),
        pick in any::<prop::sample::Index>(),
        d in data(0),
    ) {
        // The fast-path address, and data whose ip is (near) it half the time.
        let ip = page * 4096 + STUB_IP_OFFSET;
        let fast = with_fast.then_some(ip);
        let mut d = d;
        let near = [ip, ip ^ (1 << 40), ip & 0xffff_ffff, ip + 2, d.ip];
        if d.nr % 2 == 0 {
            d.ip = near[pick.index(near.len())];
        }
        let p = filter(fast);
        prop_assert_eq!(run(&p, &d), reference(&d, fast));
    }
}

#[test]
fn the_stub_ip_is_just_after_its_syscall_instruction() {
    let at = STUB_IP_OFFSET as usize;
    assert_eq!(&STUB_CODE[at - 2..at], &[0x0f, 0x05]);
    assert_eq!(STUB_CODE[at], 0xc3, "ret right after");
}
