//! The one verdict type, and the one place that turns it into what C callers see.

pub use egress_policy::DenyAs;
use egress_policy::Mode;
use libc::c_int;

/// Why an attempt is denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    NoRule,
    /// The process could not obtain its policy and fails closed.
    NoPolicy,
    /// A source route (IPv4 source-route option, IPv6 routing header): no rule allows one.
    SourceRoute,
    /// A packet socket (`AF_PACKET`): no rule allows one.
    PacketSocket,
    /// The calling thread's scope does not allow it (docs/scopes.md).
    Scope,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoRule => "no rule allows it",
            DenyReason::NoPolicy => "the process has no valid policy (fail closed)",
            DenyReason::SourceRoute => "source routing is refused (no rule can allow it)",
            DenyReason::PacketSocket => "packet sockets are refused (no rule can allow them)",
            DenyReason::Scope => "the calling thread's scope does not allow it",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed by the rule at this index of the policy.
    Allow {
        rule: usize,
    },
    Deny(DenyReason),
    /// Not egress, or not a lookup (Unix sockets, numeric names): untouched, unrecorded.
    PassThrough,
}

impl Verdict {
    /// True when the call must be refused: a denial in block mode.
    pub fn refuses(self, mode: Mode) -> bool {
        matches!(self, Verdict::Deny(_)) && mode == Mode::Block
    }
}

// The codes a refusal shows the program, by `--deny-as` (see docs/design.md, "How a denial
// looks"). `eacces` is plainly a refusal that clients do not retry; `offline` is what glibc
// answers on a host with no network and no reachable resolver (measured: glibc 2.36, an empty
// network namespace), so that suites which skip their network tests offline skip them here.
// Hooks take every code from these functions and never name one themselves.

const NO_RECOVERY: c_int = 3;
const TRY_AGAIN: c_int = 2;
const HOST_NOT_FOUND: c_int = 1;

/// errno of a refused connect or send.
pub fn refused_errno(deny_as: DenyAs) -> c_int {
    deny_as.refused_errno()
}

/// getaddrinfo status of a refused lookup.
pub fn refused_eai(deny_as: DenyAs) -> c_int {
    match deny_as {
        DenyAs::Eacces => libc::EAI_FAIL,
        DenyAs::Offline => libc::EAI_AGAIN,
    }
}

/// h_errno of a refused forward lookup: the gethostbyname family and res_*.
pub fn refused_h_errno(deny_as: DenyAs) -> c_int {
    match deny_as {
        DenyAs::Eacces => NO_RECOVERY,
        DenyAs::Offline => TRY_AGAIN,
    }
}

/// Return value of a refused gethostbyname*_r (glibc returns EAGAIN with TRY_AGAIN).
pub fn refused_r_errno(deny_as: DenyAs) -> c_int {
    match deny_as {
        DenyAs::Eacces => libc::EACCES,
        DenyAs::Offline => libc::EAGAIN,
    }
}

/// h_errno of a refused reverse lookup (gethostbyaddr*): `eacces` answers as if no PTR record
/// existed.
pub fn refused_reverse_h_errno(deny_as: DenyAs) -> c_int {
    match deny_as {
        DenyAs::Eacces => HOST_NOT_FOUND,
        DenyAs::Offline => TRY_AGAIN,
    }
}

/// Return value of a refused gethostbyaddr_r (glibc, offline: 0, no result, TRY_AGAIN).
pub fn refused_reverse_r_errno(deny_as: DenyAs) -> c_int {
    match deny_as {
        DenyAs::Eacces => libc::ENOENT,
        DenyAs::Offline => 0,
    }
}

/// A refused getnameinfo: `None` answers with the numeric form and no query (`eacces`,
/// unless the caller requires a name); `Some(status)` fails. glibc offline fails with
/// EAI_AGAIN even when the numeric form would do.
pub fn refused_getnameinfo(deny_as: DenyAs, name_required: bool) -> Option<c_int> {
    match deny_as {
        DenyAs::Eacces => name_required.then_some(libc::EAI_NONAME),
        DenyAs::Offline => Some(libc::EAI_AGAIN),
    }
}

/// What a refused getaddrinfo_a batch returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchRefusal {
    pub ret: c_int,
    /// errno to set, when `ret` is EAI_SYSTEM.
    pub errno: Option<c_int>,
    /// The status to give every request of the batch (what gai_error then returns), if any.
    pub request_status: Option<c_int>,
}

/// A refused getaddrinfo_a batch (`wait`: GAI_WAIT). `eacces`: EAI_SYSTEM with errno EACCES.
/// `offline`: every request done with EAI_AGAIN, as glibc leaves them offline; GAI_WAIT
/// returns 0 as glibc does, GAI_NOWAIT returns EAI_AGAIN ("could not queue, see each
/// request"), because nothing was queued and no notification will follow.
pub fn refused_batch(deny_as: DenyAs, wait: bool) -> BatchRefusal {
    match deny_as {
        DenyAs::Eacces => BatchRefusal {
            ret: libc::EAI_SYSTEM,
            errno: Some(libc::EACCES),
            request_status: None,
        },
        DenyAs::Offline => BatchRefusal {
            ret: if wait { 0 } else { libc::EAI_AGAIN },
            errno: None,
            request_status: Some(libc::EAI_AGAIN),
        },
    }
}

/// errno of a refused exec of a program the guard cannot enter, whatever `--deny-as` says:
/// that refusal is not a network denial, and a network errno from `execve` would mislead.
pub const REFUSED_EXEC_ERRNO: c_int = libc::EACCES;

pub fn errno() -> libc::c_int {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(value: libc::c_int) {
    // SAFETY: as above; writing this thread's errno is always allowed.
    unsafe { *libc::__errno_location() = value }
}

extern "C" {
    fn __h_errno_location() -> *mut libc::c_int;
}

pub fn set_h_errno(value: libc::c_int) {
    // SAFETY: glibc's __h_errno_location returns this thread's h_errno slot.
    unsafe { *__h_errno_location() = value }
}

/// What a hook does after deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Proceed,
    Refuse,
}

/// The return value of a refused connect/send family call (sets errno).
/// -1 with EFAULT: the kernel's answer to memory it cannot read, given without reading it.
pub fn fault<T: From<i8>>() -> T {
    set_errno(libc::EFAULT);
    T::from(-1)
}

pub fn refused_call<T: From<i8>>(deny_as: DenyAs) -> T {
    set_errno(refused_errno(deny_as));
    T::from(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eacces_keeps_the_first_stage_codes() {
        let d = DenyAs::Eacces;
        assert_eq!(refused_errno(d), libc::EACCES);
        assert_eq!(refused_eai(d), libc::EAI_FAIL);
        assert_eq!(refused_h_errno(d), NO_RECOVERY);
        assert_eq!(refused_r_errno(d), libc::EACCES);
        assert_eq!(refused_reverse_h_errno(d), HOST_NOT_FOUND);
        assert_eq!(refused_reverse_r_errno(d), libc::ENOENT);
        assert_eq!(refused_getnameinfo(d, false), None);
        assert_eq!(refused_getnameinfo(d, true), Some(libc::EAI_NONAME));
        for wait in [false, true] {
            let b = refused_batch(d, wait);
            assert_eq!((b.ret, b.errno), (libc::EAI_SYSTEM, Some(libc::EACCES)));
            assert_eq!(b.request_status, None);
        }
    }

    #[test]
    fn offline_answers_like_glibc_without_a_network() {
        let d = DenyAs::Offline;
        assert_eq!(refused_errno(d), libc::ENETUNREACH);
        assert_eq!(refused_eai(d), libc::EAI_AGAIN);
        assert_eq!(refused_h_errno(d), TRY_AGAIN);
        assert_eq!(refused_r_errno(d), libc::EAGAIN);
        assert_eq!(refused_reverse_h_errno(d), TRY_AGAIN);
        assert_eq!(refused_reverse_r_errno(d), 0);
        assert_eq!(refused_getnameinfo(d, false), Some(libc::EAI_AGAIN));
        assert_eq!(refused_getnameinfo(d, true), Some(libc::EAI_AGAIN));
        assert_eq!(refused_batch(d, true).ret, 0);
        assert_eq!(refused_batch(d, false).ret, libc::EAI_AGAIN);
        assert_eq!(refused_batch(d, true).request_status, Some(libc::EAI_AGAIN));
    }

    #[test]
    fn refused_calls_set_errno_by_the_setting() {
        assert_eq!(refused_call::<i32>(DenyAs::Offline), -1);
        assert_eq!(errno(), libc::ENETUNREACH);
        assert_eq!(refused_call::<isize>(DenyAs::Eacces), -1);
        assert_eq!(errno(), libc::EACCES);
        // Exec refusals are not network denials.
        assert_eq!(REFUSED_EXEC_ERRNO, libc::EACCES);
    }
}
