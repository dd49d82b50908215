//! Starting COMMAND and following it from the launcher's single thread.
//!
//! COMMAND is started by a `clone(CLONE_VM|CLONE_VFORK)` child, as glibc's `posix_spawnp`
//! does it: unlike `fork`, it copies no page tables and leaves no copy-on-write faults behind
//! in the launcher or the child (std's `Command` must fork as soon as a `pre_exec` hook is
//! set). Unlike `posix_spawnp` it lets the child set `PR_SET_PDEATHSIG` before `execvpe`, so
//! COMMAND does not run on unsupervised when egress-run is killed with SIGKILL, and it gives
//! COMMAND back exactly the signal mask and ignored signals egress-run's caller gave.
//! The signals to forward and COMMAND's exit (`SIGCHLD`) arrive on one `signalfd`, so the
//! event loop waits for events, signals and the exit with a single `poll`, and no thread is
//! started.

use std::ffi::{CString, OsStr, OsString};
use std::io::{Error, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::Fatal;

/// Forwarded to COMMAND when sent to egress-run with `kill` (design.md, Decisions: Signals).
/// Not SIGPIPE: the kernel sends it to egress-run itself for a closed stderr. The stop
/// signals are blocked like the others, so egress-run stops when COMMAND does (`reap`).
const FORWARDED: [libc::c_int; 12] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// The signal COMMAND gets when the launcher dies first (only SIGKILL can do that: every
/// other deadly signal sent to it is forwarded or ends it after COMMAND). SIGKILL, because
/// the caller chose the one signal nothing may outlive.
const PARENT_DEATH_SIGNAL: libc::c_int = libc::SIGKILL;

/// Signals whose disposition the launcher changes for itself; COMMAND gets the caller's back:
/// the forwarded ones, SIGPIPE and SIGCHLD.
const TOUCHED: [libc::c_int; FORWARDED.len() + 2] = {
    let mut all = [libc::SIGPIPE; FORWARDED.len() + 2];
    let mut i = 0;
    while i < FORWARDED.len() {
        all[i] = FORWARDED[i];
        i += 1;
    }
    all[FORWARDED.len() + 1] = libc::SIGCHLD;
    all
};

/// What egress-run's caller gave it: the signal mask, and which of `TOUCHED` were ignored.
struct Inherited {
    mask: libc::sigset_t,
    ignored: [bool; TOUCHED.len()],
}

static INHERITED: std::sync::OnceLock<Inherited> = std::sync::OnceLock::new();

/// Records the caller's signal mask and ignored signals; call first thing, before the
/// launcher changes any of them.
pub fn save_inherited() {
    // SAFETY: sigset_t is plain data; a NULL new set only queries the mask.
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: mask is writable.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask) };
    let mut ignored = [false; TOUCHED.len()];
    for (i, &sig) in TOUCHED.iter().enumerate() {
        // SAFETY: sigaction is plain data; a NULL new action only queries.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: old is writable.
        unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
        ignored[i] = old.sa_sigaction == libc::SIG_IGN;
    }
    let _ = INHERITED.set(Inherited { mask, ignored });
}

/// Sets `sig`'s disposition to `handler` (SIG_DFL or SIG_IGN).
fn set_disposition(sig: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: sigaction is plain data (empty mask, no flags); SIG_DFL/SIG_IGN run no code.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

/// Ends egress-run with the signal that ended COMMAND, as sudo does, so that its caller sees
/// what it would have seen without egress-run (a shell loop stops at Ctrl-C). Returns only
/// when `sig` cannot end a process by default (the caller then exits with 128+N).
pub fn die_of(sig: libc::c_int) {
    // Only the kernel can end a process with these; raised, they would stop it or do nothing.
    let harmless = [
        libc::SIGCHLD,
        libc::SIGCONT,
        libc::SIGURG,
        libc::SIGWINCH,
        libc::SIGSTOP,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
    ];
    if harmless.contains(&sig) {
        return;
    }
    // No core of egress-run: COMMAND's crash is not ours. A limit of 0 is not enough when
    // core_pattern is a pipe (systemd-coredump, apport); a non-dumpable process never dumps.
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads a valid rlimit; prctl(PR_SET_DUMPABLE) takes plain integers.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &none);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    set_disposition(sig, libc::SIG_DFL);
    let set = sigset(&[sig]);
    // SAFETY: set is a valid sigset_t; raise has no memory-safety preconditions. An unblocked
    // signal sent to the calling (only) thread is delivered before kill returns.
    unsafe {
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
}

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
    /// covers the process) and opens a descriptor that reports them. COMMAND gets the
    /// caller's mask and dispositions again (`spawn`).
    pub fn block() -> Result<Self, Fatal> {
        // Inherited SIG_IGN for SIGCHLD would have the kernel reap COMMAND silently and send
        // no SIGCHLD at all: its exit would go unnoticed. An ignored signal is discarded when
        // sent, never queued on the signalfd: one ignored by the caller (nohup, a background
        // job's SIGINT) could not be forwarded to a COMMAND that handles it.
        set_disposition(libc::SIGCHLD, libc::SIG_DFL);
        for sig in FORWARDED {
            set_disposition(sig, libc::SIG_DFL);
        }
        let mut signals = FORWARDED.to_vec();
        signals.push(libc::SIGCHLD);
        let set = sigset(&signals);
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

    /// Reads the pending signals, forwards those in `FORWARDED` to `child`, and tells
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

/// COMMAND's wait status if it has ended (reaped now), or None while it runs. When COMMAND
/// was stopped by job control (Ctrl-Z, or a SIGTSTP forwarded from `kill`), egress-run stops
/// too, as sudo does, so that the shell sees a stopped job; the shell's SIGCONT (`fg`, `bg`)
/// continues both, and one sent to egress-run alone is forwarded.
pub fn reap(child: libc::pid_t) -> Option<libc::c_int> {
    reap_orphans(child);
    loop {
        let mut status = 0;
        // SAFETY: status is writable; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG | libc::WUNTRACED) };
        match r {
            0 => return None,
            r if r == child && libc::WIFSTOPPED(status) => {
                // Not for SIGSTOP (a debugger, `kill -STOP`): whoever continues COMMAND then
                // would not know to continue egress-run, and nobody would read its events.
                let sig = libc::WSTOPSIG(status);
                if [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig) {
                    // SAFETY: kill has no memory-safety preconditions. SIGSTOP, not `sig`:
                    // it is blocked here, and always stops.
                    unsafe { libc::kill(libc::getpid(), libc::SIGSTOP) };
                }
                continue;
            }
            r if r == child => return Some(status),
            _ if Error::last_os_error().kind() == ErrorKind::Interrupted => continue,
            // Not our child any more (cannot happen): report egress-run's own failure.
            _ => return Some(crate::EXIT_OWN_FAILURE << 8),
        }
    }
}

/// Makes the launcher the reaper of COMMAND's orphans (a daemon that outlives its parent is
/// re-parented here, not to init), so that the kernel layer's supervisor, an ancestor, keeps
/// the right to read a daemonised program's memory and descriptors (Yama's ptrace scope 1
/// allows ancestors only).
pub fn become_subreaper() {
    // SAFETY: prctl with plain arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Reaps the orphans re-parented to the launcher that have ended, leaving COMMAND (and
/// anything after it in the kernel's order) for `reap`.
fn reap_orphans(child: libc::pid_t) {
    loop {
        // SAFETY: siginfo_t is plain data filled in by waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is writable; WNOWAIT leaves the child waitable.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid for a child-state siginfo (0 when none was waitable).
        let pid = unsafe { info.si_pid() };
        if r < 0 || pid <= 0 || pid == child {
            return;
        }
        let mut status = 0;
        // SAFETY: status is writable; that child has ended.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
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

/// What the `clone` child needs; it shares the launcher's memory until it execs.
struct Child {
    file: *const libc::c_char,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
    parent: libc::pid_t,
    mask: libc::sigset_t,
    dispositions: [(libc::c_int, libc::sighandler_t); TOUCHED.len()],
    /// Written by the child when exec failed; read by the launcher once the child is gone.
    error: libc::c_int,
    /// The kernel layer's filter to install before exec, or null.
    filter: *const libc::sock_fprog,
    /// With a filter: the program's path, found by the launcher as execvp would.
    path: *const libc::c_char,
    /// Written by the child: the listener's number in the descriptor table it shares with
    /// the launcher (`CLONE_FILES`), or -errno when the filter could not be installed.
    listener: libc::c_int,
}

/// Runs in the `clone(CLONE_VM|CLONE_VFORK)` child, on its own stack, while the launcher
/// waits: only async-signal-safe calls, no allocation, no unwinding.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg points at the launcher's Child, alive and untouched until this child execs
    // or exits (CLONE_VFORK suspends the launcher until then).
    let child = unsafe { &mut *arg.cast::<Child>() };
    // SAFETY: plain system calls and libc functions on valid data. Without CLONE_SIGHAND the
    // child has its own copy of the dispositions: the launcher's are not changed.
    unsafe {
        for &(sig, handler) in &child.dispositions {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL, 0, 0, 0);
        // The launcher died before the line above: the signal will never come.
        if libc::getppid() != child.parent {
            libc::_exit(128 + PARENT_DEATH_SIGNAL);
        }
        if !child.filter.is_null() {
            // The table is shared until exec, which unshares it and closes the listener on
            // COMMAND's side (close-on-exec): only the launcher keeps it.
            let listener = crate::supervisor::install(&*child.filter);
            std::ptr::write_volatile(&mut child.listener, listener);
            if listener < 0 {
                libc::_exit(126);
            }
        }
        libc::sigprocmask(libc::SIG_SETMASK, &child.mask, std::ptr::null_mut());
        if !child.filter.is_null() {
            // Under the filter nothing may be trapped before exec: the launcher, which holds
            // the listener, waits for this child (CLONE_VFORK). libc's execvpe may be an outer
            // egress-run's hook that reports to its launcher through a connect: the system
            // call itself, on the path the launcher found.
            let e = raw_execve(child.path, argv_const(child.argv), argv_const(child.envp));
            std::ptr::write_volatile(&mut child.error, e);
            libc::_exit(127);
        }
        // execvpe searches PATH as execvp does, and runs a file the kernel cannot execute
        // (ENOEXEC: a script without `#!`) with /bin/sh, as posix_spawnp does not.
        libc::execvpe(child.file, argv_const(child.argv), argv_const(child.envp));
        std::ptr::write_volatile(&mut child.error, *libc::__errno_location());
        libc::_exit(127)
    }
}

/// `execve(2)` itself, not libc's (possibly interposed) function; returns the errno.
///
/// # Safety
/// `path` NUL-terminated; `argv` and `envp` NULL-terminated arrays of C strings.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_execve(
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> libc::c_int {
    let r: i64;
    // SAFETY: the execve system call with the caller's pointers; the kernel clobbers rcx, r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_execve => r,
            in("rdi") path,
            in("rsi") argv,
            in("rdx") envp,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    (-r) as libc::c_int
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw_execve(
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> libc::c_int {
    // SAFETY: as the caller promises (no kernel layer on other architectures).
    unsafe { libc::execve(path, argv, envp) };
    // SAFETY: errno of this thread.
    unsafe { *libc::__errno_location() }
}

fn argv_const(p: *const *mut libc::c_char) -> *const *const libc::c_char {
    p.cast()
}

/// How COMMAND was started.
pub struct Spawned {
    pub pid: libc::pid_t,
    /// The kernel layer's listener, when COMMAND runs under the filter.
    pub listener: Option<OwnedFd>,
}

/// Why COMMAND could not be started.
pub enum SpawnError {
    Exec(Error),
    /// The kernel layer's filter could not be installed (errno); COMMAND did not run.
    Layer(libc::c_int),
}

/// Starts `command` (looked up in PATH as execvp does) with environment `env`, under the
/// kernel layer's `filter` if one is given (then `path` is the program the launcher found).
pub fn spawn(
    command: &[OsString],
    env: &[CString],
    filter: Option<(&libc::sock_fprog, &std::path::Path)>,
) -> Result<Spawned, SpawnError> {
    spawn_inner(command, env, filter).unwrap_or_else(|e| Err(SpawnError::Exec(e)))
}

fn spawn_inner(
    command: &[OsString],
    env: &[CString],
    filter: Option<(&libc::sock_fprog, &std::path::Path)>,
) -> std::io::Result<Result<Spawned, SpawnError>> {
    let path = match filter {
        Some((_, path)) => Some(cstring(path.as_os_str().as_bytes().to_vec())?),
        None => None,
    };
    let filter = filter.map(|(f, _)| f);
    let argv = command
        .iter()
        .map(|a| cstring(a.as_bytes().to_vec()))
        .collect::<std::io::Result<Vec<_>>>()?;
    let inherited = INHERITED.get();
    let argv_ptrs = pointers(&argv);
    let envp = pointers(env);
    let mut dispositions = [(0, libc::SIG_DFL); TOUCHED.len()];
    for (i, &sig) in TOUCHED.iter().enumerate() {
        let ignored = inherited.is_some_and(|inh| inh.ignored[i]);
        dispositions[i] = (
            sig,
            if ignored {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            },
        );
    }
    let mut child = Child {
        file: argv[0].as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp.as_ptr(),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        mask: inherited.map_or_else(|| sigset(&[]), |inh| inh.mask),
        dispositions,
        error: 0,
        filter: filter.map_or(std::ptr::null(), |f| f as *const libc::sock_fprog),
        path: path.as_ref().map_or(std::ptr::null(), |p| p.as_ptr()),
        listener: -1,
    };
    let share_files = if filter.is_some() {
        libc::CLONE_FILES
    } else {
        0
    };
    // execvpe keeps the PATH candidate and, for a script without `#!`, a copy of argv on the
    // stack: room for both beyond a generous base.
    let path_len = std::env::var_os("PATH").map_or(0, |p| p.len());
    let page = 4096;
    let size = (64 * 1024 + (argv.len() + 2) * 8 + path_len + argv[0].as_bytes().len() + page)
        .next_multiple_of(page);
    // SAFETY: a fresh private anonymous mapping; checked below.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(Error::last_os_error());
    }
    // SAFETY: the stack grows down from the end of the mapping; child_main only uses `child`,
    // which outlives the call: CLONE_VFORK returns once the child has exec'd or exited.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.cast::<u8>().add(size).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | share_files | libc::SIGCHLD,
            (&mut child as *mut Child).cast(),
        )
    };
    let clone_error = Error::last_os_error();
    // SAFETY: the mapping made above; the child no longer runs on it.
    unsafe { libc::munmap(stack, size) };
    if pid < 0 {
        return Err(clone_error);
    }
    // SAFETY: the child has exec'd or exited; the volatile reads see what it wrote.
    let (error, listener) = unsafe {
        (
            std::ptr::read_volatile(&child.error),
            std::ptr::read_volatile(&child.listener),
        )
    };
    // SAFETY: a listener the child made in the table we share, ours alone now.
    let listener = (listener >= 0).then(|| unsafe { OwnedFd::from_raw_fd(listener) });
    let reap = || {
        let mut status = 0;
        // SAFETY: status is writable; the child has exited (reaps the zombie).
        unsafe { libc::waitpid(pid, &mut status, 0) };
    };
    if filter.is_some() && listener.is_none() {
        reap();
        // SAFETY: as above.
        let e = unsafe { std::ptr::read_volatile(&child.listener) };
        return Ok(Err(SpawnError::Layer(-e)));
    }
    if error != 0 {
        reap();
        return Err(Error::from_raw_os_error(error));
    }
    Ok(Ok(Spawned { pid, listener }))
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
