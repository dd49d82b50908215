//! Starting COMMAND and following it from the launcher's single thread.
//!
//! COMMAND is started with `posix_spawnp`, which glibc implements with `CLONE_VM|CLONE_VFORK`:
//! unlike `fork`, it copies no page tables and leaves no copy-on-write faults behind in the
//! launcher or the child (std's `Command` must fork as soon as a `pre_exec` hook is set).
//! The signals to forward and COMMAND's exit (`SIGCHLD`) arrive on one `signalfd`, so the
//! event loop waits for events, signals and the exit with a single `poll`, and no thread is
//! started.

use std::ffi::{CString, OsStr, OsString};
use std::io::{Error, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::Fatal;

/// Forwarded to COMMAND when sent to egress-run with `kill`.
const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid, writable sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
    }
    set
}

/// The forwarded signals and `SIGCHLD`, blocked and read from a `signalfd`.
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Blocks the forwarded signals and `SIGCHLD` (the launcher has a single thread, so this
    /// covers the process) and opens a descriptor that reports them. COMMAND gets an empty
    /// mask again (`spawn`).
    pub fn block() -> Result<Self, Fatal> {
        // Inherited SIG_IGN for SIGCHLD would have the kernel reap COMMAND silently and send
        // no SIGCHLD at all: its exit would go unnoticed.
        // SAFETY: setting a signal's disposition to SIG_DFL has no memory-safety preconditions.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
        let [int, term, hup] = FORWARDED;
        let set = sigset(&[int, term, hup, libc::SIGCHLD]);
        // SAFETY: set is a valid sigset_t; this changes only the calling thread's mask.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        // SAFETY: a new signalfd for a valid set.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if raw < 0 {
            return Err(Fatal::new(
                format!(
                    "cannot watch signals (signalfd: {})",
                    Error::last_os_error()
                ),
                "egress-run needs Linux with signalfd",
            ));
        }
        // SAFETY: a fresh descriptor we own.
        Ok(Signals {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads the pending signals, forwards SIGINT/SIGTERM/SIGHUP to `child`, and tells
    /// whether a `SIGCHLD` came.
    pub fn read(&self, child: libc::pid_t) -> bool {
        let mut child_changed = false;
        loop {
            // SAFETY: signalfd_siginfo is plain data filled in by read.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: info is writable for `size` bytes.
            let n = unsafe {
                libc::read(
                    self.fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if n != size as isize {
                if n < 0 && Error::last_os_error().kind() == ErrorKind::Interrupted {
                    continue;
                }
                return child_changed;
            }
            let sig = info.ssi_signo as libc::c_int;
            if sig == libc::SIGCHLD {
                child_changed = true;
            } else if FORWARDED.contains(&sig) && info.ssi_code != libc::SI_KERNEL {
                // A signal from the terminal (Ctrl-C, hang-up, si_code SI_KERNEL) reached
                // COMMAND too, which shares our foreground process group: sending it again
                // would deliver it twice.
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(child, sig) };
            }
        }
    }
}

/// COMMAND's wait status if it has ended (reaped now), or None while it runs.
pub fn reap(child: libc::pid_t) -> Option<libc::c_int> {
    loop {
        let mut status = 0;
        // SAFETY: status is writable; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        match r {
            0 => return None,
            r if r == child => return Some(status),
            _ if Error::last_os_error().kind() == ErrorKind::Interrupted => continue,
            // Not our child any more (cannot happen): report egress-run's own failure.
            _ => return Some(crate::EXIT_OWN_FAILURE << 8),
        }
    }
}

/// The exit status egress-run reports for a wait status: the code, or 128+N for signal N.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

fn cstring(bytes: Vec<u8>) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| Error::new(ErrorKind::InvalidInput, "nul byte in argument"))
}

/// The launcher's environment with `set` applied (a None value removes the variable), as
/// `NAME=value` strings for `envp`.
pub fn environment(set: &[(&str, Option<&OsStr>)]) -> std::io::Result<Vec<CString>> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        if set.iter().any(|(n, _)| OsStr::new(n) == name) {
            continue;
        }
        let mut entry = name.into_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        env.push(cstring(entry)?);
    }
    for (name, value) in set {
        if let Some(value) = value {
            let mut entry = name.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            env.push(cstring(entry)?);
        }
    }
    Ok(env)
}

fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// `posix_spawnattr_t` set up for COMMAND: an empty signal mask, and SIGPIPE back to its
/// default (std's runtime ignores it in the launcher).
struct Attr(libc::posix_spawnattr_t);

impl Attr {
    fn new() -> std::io::Result<Box<Self>> {
        // SAFETY: posix_spawnattr_t is plain data, initialised by posix_spawnattr_init. Boxed:
        // POSIX does not promise that an initialised one may be moved.
        let mut attr = Box::new(Attr(unsafe { std::mem::zeroed() }));
        // SAFETY: attr.0 is writable.
        let rc = unsafe { libc::posix_spawnattr_init(&mut attr.0) };
        if rc != 0 {
            return Err(Error::from_raw_os_error(rc));
        }
        let empty = sigset(&[]);
        let default = sigset(&[libc::SIGPIPE]);
        let flags = (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
        // SAFETY: attr.0 was initialised above; the sets are valid.
        let rc = unsafe {
            let a = libc::posix_spawnattr_setsigmask(&mut attr.0, &empty);
            let b = libc::posix_spawnattr_setsigdefault(&mut attr.0, &default);
            let c = libc::posix_spawnattr_setflags(&mut attr.0, flags);
            if a != 0 {
                a
            } else if b != 0 {
                b
            } else {
                c
            }
        };
        if rc != 0 {
            return Err(Error::from_raw_os_error(rc));
        }
        Ok(attr)
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in new, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// Starts `command` (looked up in PATH as execvp does) with environment `env`. `found` is
/// where the lookup lands: a file the kernel cannot execute (`ENOEXEC`, a script without
/// `#!`) runs with `/bin/sh`, as execvp does and posix_spawnp does not.
pub fn spawn(
    command: &[OsString],
    env: &[CString],
    found: Option<&Path>,
) -> std::io::Result<libc::pid_t> {
    let argv = command
        .iter()
        .map(|a| cstring(a.as_bytes().to_vec()))
        .collect::<std::io::Result<Vec<_>>>()?;
    let attr = Attr::new()?;
    let envp = pointers(env);
    let mut pid = 0;
    let run = |pid: &mut libc::pid_t, file: &CString, argv: &[CString], search: bool| {
        let argv = pointers(argv);
        // The same arguments either way: posix_spawnp searches PATH for `file`.
        let spawn = if search {
            libc::posix_spawnp
        } else {
            libc::posix_spawn
        };
        // SAFETY: file, argv and envp are NUL-terminated strings in NULL-terminated arrays
        // that outlive the call; attr is initialised; no file actions.
        unsafe {
            spawn(
                pid,
                file.as_ptr(),
                std::ptr::null(),
                &attr.0,
                argv.as_ptr(),
                envp.as_ptr(),
            )
        }
    };
    let mut rc = run(&mut pid, &argv[0], &argv, true);
    if rc == libc::ENOEXEC {
        if let Some(path) = found {
            let sh = c"/bin/sh".to_owned();
            let mut sh_argv = vec![sh.clone(), cstring(path.as_os_str().as_bytes().to_vec())?];
            sh_argv.extend(argv[1..].iter().cloned());
            rc = run(&mut pid, &sh, &sh_argv, false);
        }
    }
    if rc != 0 {
        return Err(Error::from_raw_os_error(rc));
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_sets_replaces_and_removes() {
        let env = environment(&[
            ("PATH", Some(OsStr::new("/x"))),
            ("EGRESS_RUN_TEST_UNSET", None),
        ])
        .unwrap();
        let paths: Vec<_> = env
            .iter()
            .filter(|e| e.as_bytes().starts_with(b"PATH="))
            .collect();
        assert_eq!(paths, [&CString::new("PATH=/x").unwrap()]);
        assert!(!env
            .iter()
            .any(|e| e.as_bytes().starts_with(b"EGRESS_RUN_TEST_UNSET=")));
    }

    #[test]
    fn wait_status_to_exit_code() {
        assert_eq!(exit_code(7 << 8), 7);
        assert_eq!(exit_code(libc::SIGKILL), 128 + libc::SIGKILL);
    }
}
