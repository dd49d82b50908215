//! The one verdict type, and the one place that turns it into what C callers see.

use egress_policy::Mode;

/// Why an attempt is denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    NoRule,
    /// The process could not obtain its policy and fails closed.
    NoPolicy,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoRule => "no rule allows it",
            DenyReason::NoPolicy => "the process has no valid policy (fail closed)",
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

/// errno of a refused connect or send.
pub const REFUSED_ERRNO: libc::c_int = libc::EACCES;
/// getaddrinfo status of a refused lookup: not retried by clients, unlike EAI_AGAIN.
pub const REFUSED_EAI: libc::c_int = libc::EAI_FAIL;
/// h_errno of a refused gethostbyname* lookup.
pub const REFUSED_H_ERRNO: libc::c_int = 3; // NO_RECOVERY
/// Return value of a refused gethostbyname*_r.
pub const REFUSED_R_ERRNO: libc::c_int = libc::EACCES;

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
pub fn refused_call<T: From<i8>>() -> T {
    set_errno(REFUSED_ERRNO);
    T::from(-1)
}
