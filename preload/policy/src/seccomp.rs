//! The kernel layer's seccomp filter (x86-64), shared by the launcher (which installs it on a
//! COMMAND the library cannot enter) and the library (which installs it before it execs such a
//! program deeper in the tree, and on the whole tree with `--seccomp`).
//!
//! The filter decides nothing about destinations: it only picks the system calls the launcher's
//! supervisor must see (`SECCOMP_RET_USER_NOTIF`) and lets every other call through at the cost
//! of a few instructions. Built without allocation (the library builds it in `vfork` children).

/// One classic BPF instruction, as `struct sock_filter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// Set in the system call number of the x32 ABI.
pub const X32_BIT: u32 = 0x4000_0000;

/// x86-64 system call numbers the filter traps.
pub mod nr {
    pub const CONNECT: u32 = 42;
    pub const SENDTO: u32 = 44;
    pub const SENDMSG: u32 = 46;
    pub const SENDMMSG: u32 = 307;
    pub const IO_URING_SETUP: u32 = 425;
    pub const SETSOCKOPT: u32 = 54;
}

/// The socket options that can set a source route (trapped only for these levels and names):
/// `(level, name)`.
pub const ROUTE_OPTIONS: [(u32, u32); 4] = [(0, 4), (41, 57), (41, 5), (41, 6)];

/// i386 system call numbers (a 64-bit program may use `int 0x80`; a 32-bit one below a static
/// program must): every network entry point goes to the supervisor, which refuses them in
/// block mode.
pub mod nr32 {
    pub const SOCKETCALL: u32 = 102;
    pub const SENDMMSG: u32 = 345;
    pub const CONNECT: u32 = 362;
    pub const SENDTO: u32 = 369;
    pub const SENDMSG: u32 = 370;
    pub const IO_URING_SETUP: u32 = 425;
}

/// A process that gets `EBUSY` for a new listener is already under a filter with one: it asks
/// whose with `connect(-1, PROBE_ADDR, PROBE_LEN)`, which this filter traps and the launcher's
/// supervisor answers with the launcher's pid (without a supervisor: `EBADF`).
pub const PROBE_ADDR: u64 = 0x6567_7265_7373_2d72;
pub const PROBE_LEN: u32 = 0x6b65_726e;

/// A thread in an allowed name lookup under `--seccomp` says so around libc's resolver (whose
/// internal sends no hook sees): `connect(-1, LOOKUP_BEGIN | LOOKUP_END, 0)`. Between the two
/// the supervisor lets that thread reach the name servers of `/etc/resolv.conf` on port 53.
pub const LOOKUP_BEGIN: u64 = 0x6567_7265_7373_2d62;
pub const LOOKUP_END: u64 = 0x6567_7265_7373_2d65;

/// The library's system call stub (`--seccomp`): `long stub(long nr, long a1, ..., long a6)`
/// in the C calling convention, returning the kernel's raw result (-errno on failure). Mapped
/// at `Locator::stub_addr` in every process of the run, so that the filter can let the calls
/// the library has decided through by their instruction pointer.
pub const STUB_CODE: [u8; 26] = [
    0x48, 0x89, 0xf8, // mov rax, rdi
    0x48, 0x89, 0xf7, // mov rdi, rsi
    0x48, 0x89, 0xd6, // mov rsi, rdx
    0x48, 0x89, 0xca, // mov rdx, rcx
    0x4d, 0x89, 0xc2, // mov r10, r8
    0x4d, 0x89, 0xc8, // mov r8, r9
    0x4c, 0x8b, 0x4c, 0x24, 0x08, // mov r9, [rsp+8]
    0x0f, 0x05, // syscall
    0xc3, // ret
];
/// The instruction pointer the filter sees for the stub's system call: just after `syscall`.
pub const STUB_IP_OFFSET: u64 = 25;

// Offsets in `struct seccomp_data` (little-endian: the low half of a 64-bit field first).
const NR: u32 = 0;
const ARCH: u32 = 4;
const IP_LO: u32 = 8;
const IP_HI: u32 = 12;
const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn arg_hi(i: u32) -> u32 {
    20 + 8 * i
}

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// Longest program `filter` builds.
pub const MAX_LEN: usize = 64;

/// A built filter: `insns[..len]`.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    pub insns: [Insn; MAX_LEN],
    pub len: usize,
}

impl Program {
    pub fn as_slice(&self) -> &[Insn] {
        &self.insns[..self.len]
    }
}

/// Where a jump goes: the next instruction or a label further down.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    Next,
    Trap,
    Notify,
    Allow,
    I386,
    Kill,
    SendtoAddr,
    Sockopt,
    IpOpt,
    Ip6Opt,
}

#[derive(Clone, Copy)]
enum Step {
    Load(u32),
    Eq(u32, To, To),
    Set(u32, To, To),
    Ret(u32),
    Label(To),
}

/// The filter. `fast_ip`: the address just after the `syscall` instruction of the library's
/// per-run stub (`--seccomp`): a trapped call made from there has been decided by the library
/// already and passes without a round trip. That is a fast path, not a boundary: any code can
/// jump there, and a call that does so was decided by nobody, which is why it is only used
/// where the library is loaded and hooks the calls that lead there.
///
/// In order: the architecture (anything but x86-64 and i386 is killed: it cannot occur on an
/// x86-64 kernel), then the system call number, and only for `sendto` an argument (a null
/// destination carries no address: a `send` on a connected socket passes). Arguments in
/// registers cannot change after the check; everything in memory is read by the supervisor.
pub fn filter(fast_ip: Option<u64>) -> Program {
    use Step::*;
    use To::*;
    let head = [
        Load(ARCH),
        Eq(AUDIT_ARCH_X86_64, Next, I386),
        Load(NR),
        // x32: the supervisor sees all of it (no such program is known to run here).
        Set(X32_BIT, Notify, Next),
        Eq(nr::CONNECT, Trap, Next),
        Eq(nr::SENDTO, SendtoAddr, Next),
        Eq(nr::SENDMSG, Trap, Next),
        Eq(nr::SENDMMSG, Trap, Next),
        Eq(nr::IO_URING_SETUP, Notify, Next),
        Eq(nr::SETSOCKOPT, Sockopt, Next),
        Ret(RET_ALLOW),
        // setsockopt: only the options that set a source route (IP_OPTIONS, IPV6_RTHDR,
        // IPV6_2292RTHDR, IPV6_2292PKTOPTIONS), by level and name (ints: the low halves).
        Label(Sockopt),
        Load(arg_lo(1)),
        Eq(0, IpOpt, Next),
        Eq(41, Ip6Opt, Allow),
        Label(IpOpt),
        Load(arg_lo(2)),
        Eq(4, Trap, Allow),
        Label(Ip6Opt),
        Load(arg_lo(2)),
        Eq(57, Trap, Next),
        Eq(5, Trap, Next),
        Eq(6, Trap, Allow),
        Label(SendtoAddr),
        Load(arg_lo(4)),
        Eq(0, Next, Trap),
        Load(arg_hi(4)),
        Eq(0, Allow, Trap),
        Label(I386),
        Eq(AUDIT_ARCH_I386, Next, Kill),
        Load(NR),
        Eq(nr32::SOCKETCALL, Notify, Next),
        Eq(nr32::CONNECT, Notify, Next),
        Eq(nr32::SENDTO, Notify, Next),
        Eq(nr32::SENDMSG, Notify, Next),
        Eq(nr32::SENDMMSG, Notify, Next),
        Eq(nr32::IO_URING_SETUP, Notify, Next),
        Ret(RET_ALLOW),
        Label(Trap),
    ];
    let (lo, hi) = fast_ip.map_or((0, 0), |ip| (ip as u32, (ip >> 32) as u32));
    let fast = [
        Load(IP_LO),
        Eq(lo, Next, Notify),
        Load(IP_HI),
        Eq(hi, Allow, Notify),
    ];
    let tail = [
        Label(Notify),
        Ret(RET_USER_NOTIF),
        Label(Allow),
        Ret(RET_ALLOW),
        Label(Kill),
        Ret(RET_KILL_PROCESS),
    ];
    let fast: &[Step] = if fast_ip.is_some() { &fast } else { &[] };
    let steps = head.iter().chain(fast).chain(tail.iter());
    // First pass: where each label lands.
    let mut at = [0usize; 16];
    let mut pc = 0;
    for step in steps.clone() {
        match *step {
            Label(l) => at[l as usize] = pc,
            _ => pc += 1,
        }
    }
    let mut out = Program {
        insns: [Insn::default(); MAX_LEN],
        len: 0,
    };
    let offset = |pc: usize, to: To| -> u8 {
        match to {
            Next => 0,
            // Labels are all below their jumps (BPF jumps only forward).
            l => (at[l as usize] - pc - 1) as u8,
        }
    };
    for step in steps {
        let pc = out.len;
        let insn = match *step {
            Label(_) => continue,
            Load(off) => Insn {
                code: LD_W_ABS,
                jt: 0,
                jf: 0,
                k: off,
            },
            Eq(k, t, f) => Insn {
                code: JEQ_K,
                jt: offset(pc, t),
                jf: offset(pc, f),
                k,
            },
            Set(k, t, f) => Insn {
                code: JSET_K,
                jt: offset(pc, t),
                jf: offset(pc, f),
                k,
            },
            Ret(k) => Insn {
                code: RET_K,
                jt: 0,
                jf: 0,
                k,
            },
        };
        out.insns[pc] = insn;
        out.len += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seccomp_data for the interpreter below.
    struct Data {
        nr: u32,
        arch: u32,
        ip: u64,
        args: [u64; 6],
    }

    impl Data {
        fn word(&self, off: u32) -> u32 {
            match off {
                0 => self.nr,
                4 => self.arch,
                8 => self.ip as u32,
                12 => (self.ip >> 32) as u32,
                o => {
                    let i = ((o - 16) / 8) as usize;
                    if (o - 16) % 8 == 0 {
                        self.args[i] as u32
                    } else {
                        (self.args[i] >> 32) as u32
                    }
                }
            }
        }
    }

    /// Runs the program as the kernel would (only the instructions `filter` uses).
    fn run(p: &Program, d: &Data) -> u32 {
        let mut a = 0u32;
        let mut pc = 0;
        loop {
            let i = p.insns[pc];
            assert!(pc < p.len, "ran off the end");
            match i.code {
                LD_W_ABS => a = d.word(i.k),
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                RET_K => return i.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    fn call(nr: u32, args: [u64; 6]) -> Data {
        Data {
            nr,
            arch: AUDIT_ARCH_X86_64,
            ip: 0x7f00_1234_5678,
            args,
        }
    }

    #[test]
    fn network_calls_trap_and_others_pass() {
        let p = filter(None);
        assert!(p.len <= MAX_LEN);
        assert_eq!(
            run(&p, &call(nr::CONNECT, [3, 0x1000, 16, 0, 0, 0])),
            RET_USER_NOTIF
        );
        assert_eq!(run(&p, &call(nr::SENDMSG, [3; 6])), RET_USER_NOTIF);
        assert_eq!(run(&p, &call(nr::SENDMMSG, [3; 6])), RET_USER_NOTIF);
        assert_eq!(run(&p, &call(nr::IO_URING_SETUP, [0; 6])), RET_USER_NOTIF);
        for other in [0, 1, 39, 41, 43, 45, 59, 231, 424, 426] {
            assert_eq!(run(&p, &call(other, [0; 6])), RET_ALLOW, "nr {other}");
        }
    }

    #[test]
    fn sendto_traps_only_with_an_address_in_either_half() {
        let p = filter(None);
        assert_eq!(run(&p, &call(nr::SENDTO, [3, 1, 1, 0, 0, 0])), RET_ALLOW);
        assert_eq!(
            run(&p, &call(nr::SENDTO, [3, 1, 1, 0, 0x1000, 16])),
            RET_USER_NOTIF
        );
        assert_eq!(
            run(&p, &call(nr::SENDTO, [3, 1, 1, 0, 1 << 32, 16])),
            RET_USER_NOTIF
        );
    }

    #[test]
    fn other_abis_are_trapped_or_killed() {
        let p = filter(None);
        let x32 = call(nr::CONNECT | X32_BIT, [0; 6]);
        assert_eq!(run(&p, &x32), RET_USER_NOTIF);
        let i386 = |nr| Data {
            arch: AUDIT_ARCH_I386,
            ..call(nr, [0; 6])
        };
        assert_eq!(run(&p, &i386(nr32::SOCKETCALL)), RET_USER_NOTIF);
        assert_eq!(run(&p, &i386(nr32::CONNECT)), RET_USER_NOTIF);
        assert_eq!(run(&p, &i386(4)), RET_ALLOW);
        let alien = Data {
            arch: 0xc000_00b7,
            ..call(nr::CONNECT, [0; 6])
        };
        assert_eq!(run(&p, &alien), RET_KILL_PROCESS);
    }

    #[test]
    fn the_fast_path_needs_both_halves_of_the_address() {
        let ip = 0x0000_7f12_3456_7002u64;
        let p = filter(Some(ip));
        assert!(p.len <= MAX_LEN);
        let from = |ip| Data {
            ip,
            ..call(nr::CONNECT, [3, 0x1000, 16, 0, 0, 0])
        };
        assert_eq!(run(&p, &from(ip)), RET_ALLOW);
        assert_eq!(run(&p, &from(ip + 2)), RET_USER_NOTIF);
        assert_eq!(
            run(&p, &from(ip ^ (1 << 40))),
            RET_USER_NOTIF,
            "same low half"
        );
        assert_eq!(
            run(&p, &from(ip as u32 as u64)),
            RET_USER_NOTIF,
            "high half zero"
        );
        // io_uring never takes the fast path.
        let ring = Data {
            ip,
            ..call(nr::IO_URING_SETUP, [0; 6])
        };
        assert_eq!(run(&p, &ring), RET_USER_NOTIF);
    }
}
