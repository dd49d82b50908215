//! The policy shared by the egress-run launcher and its preload library: the rule grammar, the
//! matcher, the policy's sealed binary form, and the names both sides agree on.
#![forbid(unsafe_code)]

pub mod elf;
pub mod event;
pub mod rule;
pub mod seccomp;
pub mod wire;

pub use rule::{
    canonical_ip, contained_in, is_localhost_name, is_loopback, parse_rule, suggest_rule,
    PortRange, Rule, RuleError, Target,
};
pub use wire::{encode, DecodeError, DenyAs, Mode, PolicyView, RuleView};

/// Environment variable that locates the policy: `v1:<launcher pid>:<fd>:<st_dev>:<st_ino>`.
/// It only says where the sealed policy is; its content cannot widen what is allowed.
pub const POLICY_ENV: &str = "EGRESS_RUN_POLICY";

/// The launcher's hidden first argument that makes it a spawn trampoline:
/// `egress-run __exec-under-layer PATH ARG0 ARGS...` execs PATH with argv `ARG0 ARGS...` and
/// its own environment (the guard's execve hook puts it under the kernel layer), or exits 127
/// (PATH not found) or 126. The library spawns it in place of a program only the kernel layer
/// can guard (preload/src/hooks/exec.rs).
pub const EXEC_UNDER_LAYER: &std::ffi::CStr = c"__exec-under-layer";

/// A nested run's [`POLICY_ENV`] holds one locator per level, innermost first, separated by
/// this byte: `<inner>;<outer>`. An attempt passes only if every level allows it.
pub const CHAIN_SEP: u8 = b';';

/// The most levels a process honours; a longer chain makes it fail closed.
pub const MAX_LEVELS: usize = 8;

/// Where the guard's own descriptors live (the launcher's policy and counters memfds, each
/// process's event sockets): the lowest free number from here up, so that a guarded program
/// gets the descriptor numbers it would get natively (its first `open()` returns 3). Below
/// 1024, so that the fd table stays small and `select()` users are unaffected. Where the soft
/// `RLIMIT_NOFILE` does not reach it, [`GUARD_FD_BELOW_LIMIT`] below the limit instead.
pub const GUARD_FD_BASE: i32 = 992;

/// With a soft `RLIMIT_NOFILE` at or below [`GUARD_FD_BASE`]: how far below the limit the
/// guard's descriptors go. A limit under twice this leaves no room: the launcher keeps its
/// memfds where they are, and a process's event socket is opened for each event and closed.
pub const GUARD_FD_BELOW_LIMIT: u64 = 32;

/// Whether a child's [`POLICY_ENV`] value keeps every level of this process's own `chain`:
/// the same value, or levels added in front of it (a nested run, which can only narrow).
pub fn chain_extends(child: &[u8], chain: &[u8]) -> bool {
    child == chain
        || (child.len() > chain.len()
            && child.ends_with(chain)
            && child[child.len() - chain.len() - 1] == CHAIN_SEP)
}

/// The launcher's policy service (a `SOCK_SEQPACKET` socket at an abstract address, see
/// [`Locator::policy_service_name`]) hands the sealed policy memfd to a process of its own tree
/// that lost its descriptor and cannot reopen it through `/proc` (after a uid change, in
/// another PID namespace). A client connects and sends nothing; the launcher checks the
/// peer's `SO_PEERCRED` pid is its descendant and answers one message, then closes:
/// [`POLICY_SERVICE_OK`] with the memfd attached (`SCM_RIGHTS`), or
/// [`POLICY_SERVICE_REFUSED`] followed by the reason, with no descriptor. The client checks
/// what it receives exactly as an inherited descriptor (inode, seals, contents).
pub const POLICY_SERVICE_SUFFIX: &[u8] = b".policy";
/// The policy service's answer carrying the memfd.
pub const POLICY_SERVICE_OK: &[u8] = b"ok";
/// The policy service's refusal (a process outside the run's tree), followed by the reason.
pub const POLICY_SERVICE_REFUSED: &[u8] = b"refused: ";

/// Where `Locator::own_dir` lives: memory-backed, and named by the run's launcher and policy.
pub const OWN_DIR_PREFIX: &str = "/dev/shm/egress-run.";

/// Where a policy is, as the environment variable says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locator {
    pub launcher_pid: u32,
    pub fd: i32,
    pub dev: u64,
    pub ino: u64,
}

impl Locator {
    /// Parses the value of [`POLICY_ENV`] without allocating.
    pub fn parse(value: &[u8]) -> Option<Locator> {
        let mut parts = value.split(|&b| b == b':');
        if parts.next()? != b"v1" {
            return None;
        }
        let launcher_pid = u32::try_from(parse_u64(parts.next()?)?).ok()?;
        let fd = i32::try_from(parse_u64(parts.next()?)?).ok()?;
        let dev = parse_u64(parts.next()?)?;
        let ino = parse_u64(parts.next()?)?;
        if parts.next().is_some() || launcher_pid == 0 {
            return None;
        }
        Some(Locator {
            launcher_pid,
            fd,
            dev,
            ino,
        })
    }

    pub fn to_env_value(&self) -> String {
        format!(
            "v1:{}:{}:{}:{}",
            self.launcher_pid, self.fd, self.dev, self.ino
        )
    }

    /// The directory where the run's processes record their loopback listeners for
    /// `loopback:own` (one empty file per socket inode), as a string for the launcher.
    pub fn own_dir(&self) -> String {
        format!("{OWN_DIR_PREFIX}{}.{}.own", self.launcher_pid, self.ino)
    }

    /// `own_dir` without allocating, NUL-terminated, for the library: the length without
    /// the NUL.
    pub fn own_dir_into(&self, buf: &mut [u8; 64]) -> usize {
        let mut w = Cursor { buf, len: 0 };
        w.put(OWN_DIR_PREFIX.as_bytes());
        w.put_u64(u64::from(self.launcher_pid));
        w.put(b".");
        w.put_u64(self.ino);
        w.put(b".own");
        let n = w.len.min(63);
        w.buf[n] = 0;
        n
    }

    /// The abstract Unix socket name (without its leading NUL) the launcher listens on.
    /// Written into `buf`; returns the length used.
    pub fn socket_name(&self, buf: &mut [u8; 64]) -> usize {
        let mut w = Cursor { buf, len: 0 };
        w.put(b"egress-run.");
        w.put_u64(u64::from(self.launcher_pid));
        w.put(b".");
        w.put_u64(self.ino);
        w.len
    }

    /// The abstract name (without its leading NUL) of the launcher's policy service: the event
    /// socket's name followed by [`POLICY_SERVICE_SUFFIX`]. Written into `buf`; returns the
    /// length used.
    pub fn policy_service_name(&self, buf: &mut [u8; 64]) -> usize {
        let len = self.socket_name(buf);
        let mut w = Cursor { buf, len };
        w.put(POLICY_SERVICE_SUFFIX);
        w.len
    }
}

impl Locator {
    /// Where every process of this run maps the library's system call stub (`--seccomp`): a
    /// page derived from the run, in a range nothing else maps (below the usual places of
    /// programs, heaps, libraries and stacks).
    pub fn stub_addr(&self) -> u64 {
        let h = (self.ino ^ u64::from(self.launcher_pid).rotate_left(32))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        0x3f00_0000_0000 + ((h >> 40) & 0xff_ffff) * 4096
    }

    /// The abstract Unix socket name (without its leading NUL) where the launcher's kernel
    /// layer takes over the seccomp listeners of processes that put themselves under its
    /// filter before they exec a program the library cannot enter.
    pub fn kernel_socket_name(&self, buf: &mut [u8; 64]) -> usize {
        let n = self.socket_name(buf);
        let mut w = Cursor { buf, len: n };
        w.put(b".kernel");
        w.len
    }
}

struct Cursor<'a> {
    buf: &'a mut [u8; 64],
    len: usize,
}

impl Cursor<'_> {
    fn put(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn put_u64(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        digits[..n].reverse();
        self.put(&digits[..n]);
    }
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_extends_itself_and_levels_added_in_front() {
        let own = b"v1:10:3:5:7";
        assert!(chain_extends(own, own));
        assert!(chain_extends(b"v1:20:4:5:9;v1:10:3:5:7", own));
        assert!(chain_extends(b"x;y;v1:10:3:5:7", own));
    }

    #[test]
    fn a_chain_that_drops_or_changes_a_level_does_not_extend() {
        let own = b"v1:20:4:5:9;v1:10:3:5:7";
        assert!(
            !chain_extends(b"v1:20:4:5:9", own),
            "dropped the outer level"
        );
        assert!(
            !chain_extends(b"v1:10:3:5:7", own),
            "dropped the inner level"
        );
        assert!(!chain_extends(b"", own));
        assert!(!chain_extends(b"v1:99:4:5:9;v1:10:3:5:7", own));
        assert!(
            !chain_extends(b"xv1:20:4:5:9;v1:10:3:5:7", own),
            "glued to a level"
        );
    }
}
