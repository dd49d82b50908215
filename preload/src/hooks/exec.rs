//! The exec family: a program that starts a child with a scrubbed environment (`env -i`,
//! Python's `subprocess.run(..., env={})`, `os.execve(path, args, {})`) would drop
//! `LD_PRELOAD` and the policy locator, and its child would run unguarded. These hooks put both
//! back into the new environment.
//!
//! This runs in `vfork` children, where the heap and locks belong to the parent: the new
//! environment is built in an anonymous `mmap` (a plain system call), never on the heap.
//! glibc's own `execl*`, `system` and `popen` call its internal exec and never reach these hooks
//! (they pass the current `environ`, which still carries both variables).

use std::ffi::CStr;

use libc::{c_char, c_int, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t};

use egress_policy::elf::{
    check_program, kernel_layer_applies, preload_is_fatal, Credentials, FileIds, Opened,
    ProgramArgs, ProgramFiles, Runtime, NO_WORKING_DIRECTORY,
};
use egress_policy::{chain_extends, Mode};

use crate::carray::entries;
use crate::channel;
use crate::guard;
use crate::kernel::Failure;
use crate::real;
use crate::scratch::Scratch;
use crate::state::{self, Loaded};
use crate::verdict::{set_errno, REFUSED_EXEC_ERRNO};

const PRELOAD_KEY: &[u8] = b"LD_PRELOAD=";
const POLICY_KEY: &[u8] = b"EGRESS_RUN_POLICY=";
/// The sanitizer runtime a guard put first in `LD_PRELOAD` (the launcher's `SANITIZER_ENV`).
const SANITIZER_KEY: &[u8] = b"EGRESS_RUN_SANITIZER=";

extern "C" {
    static environ: *const *const c_char;
}

/// Appends strings into the string area of a `GuardedEnv` mapping (sized beforehand).
struct Arena<'a> {
    text: &'a mut [u8],
    at: usize,
}

impl Arena<'_> {
    fn push(&mut self, bytes: &[u8]) {
        self.text[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    /// Ends the string begun at `start` with a NUL and returns a pointer to it.
    fn finish(&mut self, start: usize) -> *const c_char {
        self.text[self.at] = 0;
        self.at += 1;
        self.text[start..].as_ptr().cast()
    }
}

/// An environment with the guard restored, in an anonymous mapping of its own.
struct GuardedEnv {
    map: *mut libc::c_void,
    len: usize,
}

impl GuardedEnv {
    fn envp(&self) -> *const *const c_char {
        self.map.cast()
    }
}

impl Drop for GuardedEnv {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes, no longer referenced (the exec failed or the
        // spawn returned).
        unsafe { libc::munmap(self.map, self.len) };
    }
}

fn has_token(list: &[u8], item: &[u8]) -> bool {
    list.split(|b| *b == b':' || *b == b' ').any(|t| t == item)
}

/// The library's side of the check: files opened with plain system calls relative to the
/// directory the exec will run in, the first page of each read once into a buffer here (the
/// ELF header, program headers, interpreter path and notes nearly always lie in it: one read
/// instead of a dozen), and read beyond it only when asked.
struct HookFiles<'a> {
    /// The directory relative paths are resolved in (`AT_FDCWD`, or a descriptor), or None
    /// when it cannot be determined.
    dir: Option<c_int>,
    fd: c_int,
    /// The first page of the open file (in the call's scratch mapping).
    first: &'a mut [u8; 4096],
    first_len: usize,
}

impl<'a> HookFiles<'a> {
    fn new(dir: Option<c_int>, first: &'a mut [u8; 4096]) -> Self {
        HookFiles {
            dir,
            fd: -1,
            first,
            first_len: 0,
        }
    }

    fn close(&mut self) {
        if self.fd >= 0 {
            // SAFETY: our own descriptor.
            unsafe { libc::close(self.fd) };
            self.fd = -1;
        }
        self.first_len = 0;
    }
}

impl Drop for HookFiles<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

impl ProgramFiles for HookFiles<'_> {
    fn open(&mut self, path: &[u8]) -> Opened {
        self.close();
        let dir = match self.dir {
            _ if path.first() == Some(&b'/') => libc::AT_FDCWD,
            Some(dir) => dir,
            None => return Opened::Undetermined,
        };
        if path.last() != Some(&0) {
            return Opened::Other;
        }
        let name: *const c_char = path.as_ptr().cast();
        // SAFETY: an all-zero stat is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: name is NUL-terminated (checked above); openat is not hooked.
        let fd = unsafe { libc::openat(dir, name, libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            // SAFETY: errno is thread-local; name as above; st is writable.
            let unreadable = unsafe {
                *libc::__errno_location() == libc::EACCES
                    && libc::faccessat(dir, name, libc::X_OK, libc::AT_EACCESS) == 0
                    && libc::fstatat(dir, name, &mut st, 0) == 0
                    && st.st_mode & libc::S_IFMT == libc::S_IFREG
            };
            return if unreadable {
                Opened::Unreadable
            } else {
                Opened::Other // the kernel will answer the exec itself
            };
        }
        self.fd = fd;
        // SAFETY: an all-zero statvfs is a valid value to be overwritten.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: st and vfs are writable; fgetxattr with a null buffer of size 0 only asks for
        // the size; fstatvfs is fstatfs plus field copies (glibc reads /proc/mounts only on
        // kernels older than 2.6.36, which lack ST_VALID).
        let (stat_ok, caps, nosuid) = unsafe {
            (
                libc::fstat(fd, &mut st) == 0,
                libc::fgetxattr(fd, c"security.capability".as_ptr(), std::ptr::null_mut(), 0) >= 0,
                libc::fstatvfs(fd, &mut vfs) == 0 && vfs.f_flag & libc::ST_NOSUID != 0,
            )
        };
        if !stat_ok || st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Opened::Other;
        }
        // SAFETY: first is writable for its length; pread on our own descriptor.
        let n = unsafe { libc::pread(fd, self.first.as_mut_ptr().cast(), self.first.len(), 0) };
        self.first_len = n.max(0) as usize;
        Opened::File(FileIds {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            caps,
            nosuid,
        })
    }

    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> usize {
        let first_len = self.first_len;
        let end = off.saturating_add(buf.len() as u64);
        if end <= first_len as u64 {
            let off = off as usize;
            buf.copy_from_slice(&self.first[off..off + buf.len()]);
            return buf.len();
        }
        if first_len < self.first.len() && off < first_len as u64 {
            // A short file: what it has.
            let avail = &self.first[off as usize..first_len];
            buf[..avail.len()].copy_from_slice(avail);
            return avail.len();
        }
        if self.fd < 0 {
            return 0;
        }
        // SAFETY: buf is writable for its length; pread on our own descriptor.
        let n = unsafe {
            libc::pread(
                self.fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                off as libc::off_t,
            )
        };
        n.max(0) as usize
    }
}

/// The arguments of an exec: a NULL-terminated array of C strings (or null).
struct HookArgs(*const *const c_char);

impl ProgramArgs for HookArgs {
    fn arg(&self, i: usize) -> Option<&[u8]> {
        if self.0.is_null() {
            return None;
        }
        for at in 0..=i {
            // SAFETY: argv is NULL-terminated (the caller's promise to `gate`): entries up to
            // the first null are readable.
            let entry = unsafe { *self.0.add(at) };
            if entry.is_null() {
                return None;
            }
            if at == i {
                // SAFETY: a NUL-terminated string of the array, alive for the exec call.
                return Some(unsafe { CStr::from_ptr(entry) }.to_bytes_with_nul());
            }
        }
        None
    }
}

/// This process's credentials (plain system calls: no lock, no allocation).
fn credentials() -> Credentials {
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: writable ids; getresuid/getresgid/prctl are plain system calls.
    let nnp = unsafe {
        libc::getresuid(&mut ruid, &mut euid, &mut suid);
        libc::getresgid(&mut rgid, &mut egid, &mut sgid);
        libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1
    };
    Credentials {
        ruid,
        euid,
        rgid,
        egid,
        no_new_privs: nnp,
    }
}

/// Why the guard cannot enter the program at `path` (NUL-terminated, resolved in `dir`) run
/// with `argv` by this process, following its `#!` interpreters; for a guardable program, the
/// sanitizer runtime it needs first goes to `runtime`.
///
/// # Safety
/// `argv` must be null or a NULL-terminated array of NUL-terminated strings.
unsafe fn unguardable(
    path: &[u8],
    dir: Option<c_int>,
    argv: *const *const c_char,
    runtime: &mut Runtime,
    first: &mut [u8; 4096],
) -> Option<&'static str> {
    let mut files = HookFiles::new(dir, first);
    check_program(&mut files, path, &HookArgs(argv), &credentials(), runtime)
}

/// Writes the concatenation of `parts` and a NUL into `out`; returns the length with the NUL.
fn join_into(out: &mut [u8; 4096], parts: &[&[u8]]) -> Option<usize> {
    let mut at = 0;
    for p in parts {
        out.get_mut(at..at + p.len())?.copy_from_slice(p);
        at += p.len();
    }
    *out.get_mut(at)? = 0;
    Some(at + 1)
}

/// The file execvp would run for `file`: itself when it has a '/', else the first executable
/// regular file named so in PATH (relative entries resolved in `dir`). Written NUL-terminated
/// into `out`; returns its length + 1. Err when a relative entry comes first and `dir` is
/// unknown.
fn locate(file: &[u8], dir: Option<c_int>, out: &mut [u8; 4096]) -> Result<Option<usize>, ()> {
    if file.contains(&b'/') {
        return Ok(join_into(out, &[file]));
    }
    // SAFETY: a NUL-terminated name; getenv neither allocates nor locks.
    let path = unsafe { libc::getenv(c"PATH".as_ptr()) };
    let path: &[u8] = if path.is_null() {
        b"/bin:/usr/bin"
    } else {
        // SAFETY: getenv returned a NUL-terminated string.
        unsafe { CStr::from_ptr(path) }.to_bytes()
    };
    for entry in path.split(|&b| b == b':') {
        let entry: &[u8] = if entry.is_empty() { b"." } else { entry };
        let at = match dir {
            _ if entry.first() == Some(&b'/') => libc::AT_FDCWD,
            Some(dir) => dir,
            None => return Err(()),
        };
        let Some(len) = join_into(out, &[entry, b"/", file]) else {
            continue;
        };
        // SAFETY: out holds a NUL-terminated path; an all-zero stat is valid to overwrite.
        let runnable = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::faccessat(at, out.as_ptr().cast(), libc::X_OK, 0) == 0
                && libc::fstatat(at, out.as_ptr().cast(), &mut st, 0) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFREG
        };
        if runnable {
            return Ok(Some(len));
        }
    }
    Ok(None)
}

/// What an exec or spawn of a program may do.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gate {
    Proceed,
    /// Guardable, and it links a sanitizer runtime that must lead its `LD_PRELOAD`.
    RuntimeFirst(Runtime),
    /// The guard cannot enter it, and block mode refuses it.
    Refuse,
    /// The guard cannot enter it, but it may run (audit mode, `--allow-unguarded`). An exec is
    /// recorded already; a spawn is recorded by the caller once its pid is known.
    RunUnguarded(&'static str),
    /// The library cannot enter it; this thread is under the kernel layer now, and so will
    /// the program be (recorded already).
    KernelLayer(&'static str),
    /// A spawn of a program only the kernel layer can guard: spawn the launcher as a guarded
    /// trampoline that execs it (its exec hook enters the layer); the trampoline buffer holds
    /// the program's path and the launcher's.
    Trampoline(&'static str),
}

/// The spawn trampoline's paths: the program to exec (NUL-terminated) in the first half, the
/// launcher's executable in the second.
type TrampolinePaths = [u8; 8192];

/// Decides whether `file` (searched in PATH when `search`) may be executed, and records a
/// program the guard cannot enter. `spawn` defers the record of an allowed one to the caller,
/// and for a spawn the kernel layer can take, fills `tramp` for [`Gate::Trampoline`].
///
/// # Safety
/// `file` must be null or NUL-terminated; `argv` null or a NULL-terminated string array.
unsafe fn gate(
    file: *const c_char,
    search: bool,
    argv: *const *const c_char,
    spawn: bool,
    dir: Option<c_int>,
    tramp: Option<&mut TrampolinePaths>,
) -> Gate {
    if file.is_null() || guard::active() {
        return Gate::Proceed;
    }
    // SAFETY: a NUL-terminated string from the caller.
    let file = unsafe { CStr::from_ptr(file) }.to_bytes();
    guard::with_guard(
        || Gate::Proceed,
        || {
            state::ensure_init();
            let levels = state::levels();
            // The path found and the first page of each file read, off the stack.
            let Some(mut scratch) = Scratch::<[u8; 8192]>::new() else {
                // No memory to check it with: only a run that lets unguarded programs run
                // lets it go unchecked.
                let open = levels.iter().all(|l| match l.policy {
                    Ok(view) => view.mode() == Mode::Audit || view.allow_unguarded(),
                    Err(_) => false,
                });
                return if open { Gate::Proceed } else { Gate::Refuse };
            };
            let (found, first) = scratch.split_at_mut(4096);
            let found: &mut [u8; 4096] = found.try_into().unwrap_or_else(|_| unreachable!());
            let first: &mut [u8; 4096] = first.try_into().unwrap_or_else(|_| unreachable!());
            let mut runtime = Runtime::NONE;
            let located = if search {
                locate(file, dir, found)
            } else {
                Ok(join_into(found, &[file]))
            };
            let (len, why) = match located {
                // SAFETY: argv as the caller promises.
                Ok(Some(len)) => (len, unsafe {
                    unguardable(&found[..len], dir, argv, &mut runtime, first)
                }),
                Ok(None) => return Gate::Proceed,
                // A PATH search in a directory the gate cannot follow.
                Err(()) => match join_into(found, &[file]) {
                    Some(len) => (len, Some(NO_WORKING_DIRECTORY)),
                    None => return Gate::Proceed,
                },
            };
            let Some(why) = why else {
                return if runtime.len > 0 {
                    Gate::RuntimeFirst(runtime)
                } else {
                    Gate::Proceed
                };
            };
            // Every level of a nested run must let it run.
            let allowed = levels.iter().all(|loaded| match loaded.policy {
                Ok(view) => view.mode() == Mode::Audit || view.allow_unguarded(),
                Err(_) => false,
            });
            let exe = &found[..len - 1];
            // A static or Go program execs under the kernel layer, which the nearest run's
            // launcher supervises (an outer run's library checks what that launcher sends).
            // A spawn's child execs inside libc, out of the hooks' reach: it spawns a guarded
            // trampoline instead, whose exec hook enters the layer.
            let mut failure = None;
            if spawn && cfg!(target_arch = "x86_64") && kernel_layer_applies(why) {
                failure = Some(match (tramp, levels.first()) {
                    (
                        Some(paths),
                        Some(Loaded {
                            locator: Some(loc),
                            policy: Ok(_),
                            ..
                        }),
                    ) => match crate::kernel::may_enter(loc) {
                        Err(f) => f,
                        Ok(()) if trampoline_paths(paths, &found[..len], loc.launcher_pid) => {
                            return Gate::Trampoline(why);
                        }
                        Ok(()) => Failure::NotEntered(
                            "the kernel layer is unavailable for a spawn (the launcher's executable cannot be found)",
                        ),
                    },
                    (None, _) => Failure::NotEntered(
                        "the kernel layer is unavailable for a spawn (no memory for the trampoline)",
                    ),
                    _ => Failure::NotEntered(
                        "the kernel layer is unavailable (this process has no valid policy)",
                    ),
                });
            }
            if !spawn && cfg!(target_arch = "x86_64") && kernel_layer_applies(why) {
                let entered = match levels.first() {
                    Some(Loaded {
                        locator: Some(loc),
                        policy: Ok(_),
                        ..
                    }) => crate::kernel::enter(loc),
                    _ => Err(Failure::NotEntered(
                        "the kernel layer is unavailable (this process has no valid policy)",
                    )),
                };
                match entered {
                    Ok(()) => {
                        for loaded in levels {
                            // SAFETY: getpid has no preconditions; argv as the caller promises.
                            unsafe {
                                channel::kernel_layer(loaded, libc::getpid(), exe, argv, why)
                            };
                        }
                        return Gate::KernelLayer(why);
                    }
                    Err(f) => failure = Some(f),
                }
            }
            let mut joined = [0u8; 512];
            let reason = match failure {
                Some(f) => join_reason(&mut joined, why, f.as_str()),
                None => why,
            };
            if !allowed || !spawn {
                for loaded in levels {
                    // SAFETY: getpid has no preconditions; argv as the caller promises.
                    unsafe {
                        let pid = if spawn { 0 } else { libc::getpid() };
                        channel::unguarded(loaded, pid, exe, argv, reason, !allowed);
                    }
                }
            }
            if allowed {
                Gate::RunUnguarded(why)
            } else {
                Gate::Refuse
            }
        },
    )
}

/// Fills `paths` for the trampoline: `target` (NUL included) and the executable of launcher
/// `pid`, read from /proc. False when that cannot be read or run.
fn trampoline_paths(paths: &mut TrampolinePaths, target: &[u8], pid: u32) -> bool {
    let (to, exe) = paths.split_at_mut(4096);
    let Some(to) = to.get_mut(..target.len()) else {
        return false;
    };
    to.copy_from_slice(target);
    let mut link = [0u8; 32];
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut rest = pid;
    loop {
        digits[n] = b'0' + (rest % 10) as u8;
        n += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    digits[..n].reverse();
    let mut at = 0;
    for part in [&b"/proc/"[..], &digits[..n], b"/exe\0"] {
        link[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    // SAFETY: a NUL-terminated path; readlink writes at most exe.len() - 1 bytes into exe.
    let got =
        unsafe { libc::readlink(link.as_ptr().cast(), exe.as_mut_ptr().cast(), exe.len() - 1) };
    let Ok(got) = usize::try_from(got) else {
        return false;
    };
    if got == 0 || got >= exe.len() - 1 {
        return false;
    }
    exe[got] = 0;
    // SAFETY: exe is NUL-terminated now.
    unsafe { libc::access(exe.as_ptr().cast(), libc::X_OK) == 0 }
}

/// posix_spawn of the trampoline for a program only the kernel layer can guard: the
/// launcher's executable with argv `EXE __exec-under-layer PATH ARGV...`, the caller's file
/// actions and attributes (applied to the trampoline; they survive its exec) and `envp`.
///
/// # Safety
/// posix_spawn's C contract for `pid`, `actions`, `attr`, `argv` and `envp`.
unsafe fn spawn_trampoline(
    pid: *mut pid_t,
    paths: &TrampolinePaths,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *const c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: the caller's NULL-terminated argv.
    let count = unsafe { entries(argv) }.count();
    let slots = count + 4;
    let bytes = slots * std::mem::size_of::<*const c_char>();
    // SAFETY: a fresh private anonymous mapping; the result is checked.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return libc::ENOMEM;
    }
    // SAFETY: the mapping holds `slots` pointers, zero (null) filled and suitably aligned.
    let list = unsafe { std::slice::from_raw_parts_mut(map.cast::<*const c_char>(), slots) };
    let exe = paths[4096..].as_ptr().cast::<c_char>();
    list[0] = exe;
    list[1] = egress_policy::EXEC_UNDER_LAYER.as_ptr();
    list[2] = paths.as_ptr().cast();
    // SAFETY: the caller's argv, as above.
    for (slot, arg) in list[3..].iter_mut().zip(unsafe { entries(argv) }) {
        *slot = arg;
    }
    // SAFETY: posix_spawn's C signature: a NUL-terminated path, a NULL-terminated argv (the
    // last slot stays null) and the caller's other arguments.
    let rc = match unsafe { real::func::<real::PosixSpawnFn>(&real::POSIX_SPAWN) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(pid, exe, actions, attr, map.cast(), envp) },
        None => libc::ENOSYS,
    };
    // SAFETY: our own mapping of `bytes` bytes, no longer used (the spawn returned).
    unsafe { libc::munmap(map, bytes) };
    rc
}

/// `why; more` in `buf` (cut to fit), as a str borrowed from it.
fn join_reason<'a>(buf: &'a mut [u8; 512], why: &'a str, more: &str) -> &'a str {
    let mut at = 0;
    for part in [why, "; ", more] {
        let n = part.len().min(buf.len() - at);
        buf[at..at + n].copy_from_slice(&part.as_bytes()[..n]);
        at += n;
    }
    // Only whole ASCII parts are cut, and the reasons are ASCII.
    std::str::from_utf8(&buf[..at]).unwrap_or(why)
}

/// Records a spawned program the guard cannot enter, now that its pid is known.
///
/// # Safety
/// As for `gate`.
unsafe fn record_spawned(
    pid: pid_t,
    file: *const c_char,
    argv: *const *const c_char,
    why: &'static str,
) {
    if guard::active() || file.is_null() {
        return;
    }
    guard::with_guard(
        || (),
        || {
            for loaded in state::levels() {
                // SAFETY: file and argv as the caller promises.
                unsafe {
                    let file = CStr::from_ptr(file).to_bytes();
                    channel::unguarded(loaded, pid, file, argv, why, false)
                };
            }
        },
    )
}

/// `envp` with this library in `LD_PRELOAD` and our policy locator, or None when it already
/// has both (or the guard has nothing to restore).
///
/// # Safety
/// `envp` must be null or a NULL-terminated array of NUL-terminated strings.
unsafe fn restore(envp: *const *const c_char, runtime: Option<&[u8]>) -> Option<GuardedEnv> {
    // SAFETY: as the caller promises.
    unsafe { rebuild(envp, false, runtime) }
}

/// `envp` without this library in `LD_PRELOAD`, for a program whose loader fails on it (musl),
/// or None when it is not there.
///
/// # Safety
/// As for `restore`.
unsafe fn strip(envp: *const *const c_char) -> Option<GuardedEnv> {
    // SAFETY: as the caller promises.
    unsafe { rebuild(envp, true, None) }
}

/// # Safety
/// As for `restore`.
unsafe fn rebuild(
    envp: *const *const c_char,
    strip: bool,
    runtime: Option<&[u8]>,
) -> Option<GuardedEnv> {
    if guard::active() {
        return None;
    }
    guard::with_guard(
        || None,
        || {
            state::ensure_init();
            let saved = state::exec_env()?;
            let lib = saved.library();
            let policy = saved.policy();
            if lib.is_empty() {
                return None;
            }
            let (mut count, mut preload, mut policy_ok) = (0usize, None, policy.is_empty());
            let mut added: Option<&[u8]> = None;
            // SAFETY: envp as the caller promises.
            for entry in unsafe { entries(envp) } {
                count += 1;
                // SAFETY: a NUL-terminated string from the array.
                let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
                if let Some(v) = bytes.strip_prefix(PRELOAD_KEY) {
                    preload = Some(v);
                } else if let Some(v) = bytes.strip_prefix(POLICY_KEY) {
                    // A nested egress-run may add levels in front of ours, never drop one.
                    policy_ok = policy_ok || chain_extends(v, policy);
                } else if let Some(v) = bytes.strip_prefix(SANITIZER_KEY) {
                    added = Some(v).filter(|v| !v.is_empty());
                }
            }
            let has_lib = preload.is_some_and(|v| has_token(v, lib));
            // The sanitizer runtime: first for a program that links it (a user's own entry
            // of it may lead already), and the one a guard added taken out for others.
            let first = preload.and_then(|v| {
                v.split(|b| *b == b':' || *b == b' ')
                    .find(|t| !t.is_empty())
            });
            let leads =
                |rt: &[u8]| first.is_some_and(|t| t.rsplit(|&b| b == b'/').next() == Some(rt));
            let runtime_ok = match runtime {
                Some(rt) => leads(rt),
                None => {
                    added.is_none() || !preload.is_some_and(|v| has_token(v, added.unwrap_or(b"")))
                }
            };
            let preload_ok = if strip {
                !has_lib
            } else {
                has_lib && runtime_ok
            };
            let policy_ok = policy_ok || strip;
            if preload_ok && policy_ok {
                return None;
            }
            let add = runtime.filter(|rt| !leads(rt) || Some(*rt) == added);
            let kept = preload.filter(|v| !v.is_empty()).unwrap_or(b"");
            let rt_len = add.map_or(0, |rt| rt.len() + 1);
            let preload_len = PRELOAD_KEY.len() + rt_len + kept.len() + 1 + lib.len() + 1;
            let policy_len = POLICY_KEY.len() + policy.len() + 1;
            let marker_len = SANITIZER_KEY.len() + rt_len;
            let ptrs = (count + 4) * std::mem::size_of::<*const c_char>();
            let len = ptrs + preload_len + policy_len + marker_len;
            // SAFETY: a fresh private anonymous mapping; checked for failure below.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if map == libc::MAP_FAILED {
                return None;
            }
            let env = GuardedEnv { map, len };
            // SAFETY: the mapping is `len` writable bytes: the pointer array, then the strings.
            let (table, text) = unsafe {
                (
                    std::slice::from_raw_parts_mut(map.cast::<*const c_char>(), count + 4),
                    std::slice::from_raw_parts_mut(map.cast::<u8>().add(ptrs), len - ptrs),
                )
            };
            let mut n = 0;
            // SAFETY: envp as the caller promises.
            for entry in unsafe { entries(envp) } {
                // SAFETY: a NUL-terminated string from the array.
                let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
                let replaced = (!preload_ok
                    && (bytes.starts_with(PRELOAD_KEY) || bytes.starts_with(SANITIZER_KEY)))
                    || (!policy_ok && bytes.starts_with(POLICY_KEY));
                if !replaced {
                    table[n] = entry;
                    n += 1;
                }
            }
            let mut arena = Arena { text, at: 0 };
            if !preload_ok && !strip {
                // [runtime:] the entries but ours and the runtime a guard added, then ours.
                let start = arena.at;
                arena.push(PRELOAD_KEY);
                if let Some(rt) = add {
                    arena.push(rt);
                    arena.push(b":");
                }
                for t in kept.split(|b| *b == b':' || *b == b' ') {
                    if !t.is_empty() && t != lib && Some(t) != added {
                        arena.push(t);
                        arena.push(b":");
                    }
                }
                arena.push(lib);
                table[n] = arena.finish(start);
                n += 1;
                if let Some(rt) = add {
                    let start = arena.at;
                    arena.push(SANITIZER_KEY);
                    arena.push(rt);
                    table[n] = arena.finish(start);
                    n += 1;
                }
            }
            if !preload_ok && strip {
                // Every entry but ours (and a sanitizer runtime a guard added), ':'-separated; no
                // entry at all when none is left.
                let others = || {
                    kept.split(|b| *b == b':' || *b == b' ')
                        .filter(|t| !t.is_empty() && *t != lib && Some(*t) != added)
                };
                if others().next().is_some() {
                    let start = arena.at;
                    arena.push(PRELOAD_KEY);
                    for (i, t) in others().enumerate() {
                        if i > 0 {
                            arena.push(b":");
                        }
                        arena.push(t);
                    }
                    table[n] = arena.finish(start);
                    n += 1;
                }
            }
            if !policy_ok {
                let start = arena.at;
                arena.push(POLICY_KEY);
                arena.push(policy);
                table[n] = arena.finish(start);
                n += 1;
            }
            table[n] = std::ptr::null();
            Some(env)
        },
    )
}

/// The environment a program gets: the guard restored, or removed for a program whose loader
/// fails on it (it runs unguarded either way, and was recorded so).
///
/// # Safety
/// As for `restore`.
unsafe fn env_for(gate: Gate, envp: *const *const c_char) -> Option<GuardedEnv> {
    match gate {
        // SAFETY: as the caller promises.
        Gate::RunUnguarded(why) | Gate::KernelLayer(why) if preload_is_fatal(why) => unsafe {
            strip(envp)
        },
        // SAFETY: as the caller promises.
        Gate::RuntimeFirst(rt) => unsafe { restore(envp, rt.get()) },
        // SAFETY: as the caller promises.
        _ => unsafe { restore(envp, None) },
    }
}

/// # Safety
/// Called by C with execve(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: the caller's path and argv.
    let gate = unsafe { gate(path, false, argv, false, CWD, None) };
    if gate == Gate::Refuse {
        set_errno(REFUSED_EXEC_ERRNO);
        return -1;
    }
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { env_for(gate, envp) };
    let envp = fixed.as_ref().map_or(envp, GuardedEnv::envp);
    // SAFETY: execve's C signature, with the caller's arguments and a valid environment.
    match unsafe { real::func::<real::ExecveFn>(&real::EXECVE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(path, argv, envp) },
        None => -1,
    }
}

/// # Safety
/// Called by C with execvpe(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: the caller's file and argv.
    let gate = unsafe { gate(file, true, argv, false, CWD, None) };
    if gate == Gate::Refuse {
        set_errno(REFUSED_EXEC_ERRNO);
        return -1;
    }
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { env_for(gate, envp) };
    let envp = fixed.as_ref().map_or(envp, GuardedEnv::envp);
    // SAFETY: execvpe's C signature, with the caller's arguments and a valid environment.
    match unsafe { real::func::<real::ExecveFn>(&real::EXECVPE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(file, argv, envp) },
        None => -1,
    }
}

/// # Safety
/// Called by C with execv(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the caller's path and argv.
    let gate = unsafe { gate(path, false, argv, false, CWD, None) };
    if gate == Gate::Refuse {
        set_errno(REFUSED_EXEC_ERRNO);
        return -1;
    }
    // SAFETY: environ is the process's environment array.
    let fixed = unsafe { env_for(gate, environ) };
    // SAFETY: execve's C signature; environ or our restored copy of it.
    let envp = fixed.as_ref().map_or(unsafe { environ }, GuardedEnv::envp);
    // SAFETY: as above.
    match unsafe { real::func::<real::ExecveFn>(&real::EXECVE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(path, argv, envp) },
        None => -1,
    }
}

/// # Safety
/// Called by C with execvp(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the caller's file and argv.
    let gate = unsafe { gate(file, true, argv, false, CWD, None) };
    if gate == Gate::Refuse {
        set_errno(REFUSED_EXEC_ERRNO);
        return -1;
    }
    // SAFETY: environ is the process's environment array.
    let fixed = unsafe { env_for(gate, environ) };
    // SAFETY: environ or our restored copy of it.
    let envp = fixed.as_ref().map_or(unsafe { environ }, GuardedEnv::envp);
    // SAFETY: execvpe's C signature, searching PATH like execvp.
    match unsafe { real::func::<real::ExecveFn>(&real::EXECVPE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(file, argv, envp) },
        None => -1,
    }
}

/// # Safety
/// Called by C with fexecve(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let Some(mut path) = Scratch::<[u8; 4096]>::new() else {
        return -1; // mmap set errno (ENOMEM), as the exec would fail
    };
    // The file behind the descriptor, by its /proc name, for the unguarded-program check.
    let gate = match descriptor_path(fd, b"", &mut path) {
        // SAFETY: path is NUL-terminated; argv is the caller's.
        Some(()) => unsafe { gate(path.as_ptr().cast(), false, argv, false, CWD, None) },
        None => Gate::Proceed,
    };
    if gate == Gate::Refuse {
        set_errno(REFUSED_EXEC_ERRNO);
        return -1;
    }
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { env_for(gate, envp) };
    let envp = fixed.as_ref().map_or(envp, GuardedEnv::envp);
    // SAFETY: fexecve's C signature, with the caller's arguments and a valid environment.
    match unsafe { real::func::<real::FexecveFn>(&real::FEXECVE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(fd, argv, envp) },
        None => -1,
    }
}

/// Writes `/proc/self/fd/<fd>[/<rest>]` NUL-terminated into `out`: the path of a file named
/// relative to a directory descriptor, or of the descriptor itself when `rest` is empty.
fn descriptor_path(fd: c_int, rest: &[u8], out: &mut [u8; 4096]) -> Option<()> {
    let mut w = crate::fmt::Buf::new(&mut out[..]);
    w.str("/proc/self/fd/");
    w.uint(u64::try_from(fd).ok()?);
    if !rest.is_empty() {
        w.str("/");
        w.bytes(rest);
    }
    w.bytes(b"\0");
    (!w.truncated()).then_some(())
}

/// # Safety
/// Called by C with execveat(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn execveat(
    dirfd: c_int,
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
) -> c_int {
    let Some(mut buf) = Scratch::<[u8; 4096]>::new() else {
        return -1; // mmap set errno (ENOMEM), as the exec would fail
    };
    let name: &[u8] = if path.is_null() {
        b""
    } else {
        // SAFETY: a NUL-terminated path from the caller.
        unsafe { CStr::from_ptr(path) }.to_bytes()
    };
    // The file that will run: absolute, relative to the working directory, relative to dirfd,
    // or dirfd itself (AT_EMPTY_PATH).
    let target: *const c_char =
        if name.starts_with(b"/") || (dirfd == libc::AT_FDCWD && !name.is_empty()) {
            path
        } else if (name.is_empty() && flags & libc::AT_EMPTY_PATH != 0) || !name.is_empty() {
            match descriptor_path(dirfd, name, &mut buf) {
                Some(()) => buf.as_ptr().cast(),
                None => std::ptr::null(),
            }
        } else {
            std::ptr::null()
        };
    // SAFETY: target is null or NUL-terminated; argv is the caller's.
    let gate = unsafe { gate(target, false, argv, false, CWD, None) };
    if gate == Gate::Refuse {
        set_errno(REFUSED_EXEC_ERRNO);
        return -1;
    }
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { env_for(gate, envp) };
    let envp = fixed.as_ref().map_or(envp, GuardedEnv::envp);
    // SAFETY: execveat's C signature, with the caller's arguments and a valid environment.
    match unsafe { real::func::<real::ExecveatFn>(&real::EXECVEAT) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(dirfd, path, argv, envp, flags) },
        None => -1,
    }
}

/// Relative paths resolved in the working directory of this process.
const CWD: Option<c_int> = Some(libc::AT_FDCWD);

/// glibc's `posix_spawn_file_actions_t` (2.29 and later), whose fields libc keeps private.
#[repr(C)]
struct FileActions {
    allocated: c_int,
    used: c_int,
    actions: *const SpawnAction,
    pad: [c_int; 16],
}

/// glibc's `struct __spawn_action` (spawn_int.h): a tag, then a union of the arguments.
#[repr(C)]
struct SpawnAction {
    tag: c_int,
    args: ActionArgs,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Fds {
    fd: c_int,
    newfd: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct OpenArgs {
    fd: c_int,
    path: *const c_char,
    oflag: c_int,
    mode: libc::mode_t,
}

#[repr(C)]
union ActionArgs {
    fds: Fds,
    open: OpenArgs,
    path: *const c_char,
}

const _: () = assert!(std::mem::size_of::<SpawnAction>() == 32);
const _: () = assert!(
    std::mem::size_of::<FileActions>() == std::mem::size_of::<posix_spawn_file_actions_t>()
);

const SPAWN_DO_CLOSE: c_int = 0;
const SPAWN_DO_DUP2: c_int = 1;
const SPAWN_DO_OPEN: c_int = 2;
const SPAWN_DO_CHDIR: c_int = 3;
const SPAWN_DO_FCHDIR: c_int = 4;
const SPAWN_DO_CLOSEFROM: c_int = 5;
const SPAWN_DO_TCSETPGRP: c_int = 6;

/// The working directory a spawned child will exec in, after its file actions' last
/// `chdir`/`fchdir`: this process's own, a directory opened here to stand for it, or unknown
/// (the gate then fails closed on relative paths).
struct ChildDir {
    at: Option<c_int>,
    owned: bool,
}

impl ChildDir {
    fn at(&self) -> Option<c_int> {
        self.at
    }

    fn set(&mut self, at: Option<c_int>, owned: bool) {
        self.release();
        self.at = at;
        self.owned = owned;
    }

    fn release(&mut self) {
        if let (Some(fd), true) = (self.at, self.owned) {
            // SAFETY: a descriptor this struct opened.
            unsafe { libc::close(fd) };
        }
        self.owned = false;
    }

    /// Follows the chdir and fchdir actions of `actions` without changing this process's
    /// directory: each is opened (`O_PATH`) relative to the one before.
    ///
    /// # Safety
    /// `actions` must be null or initialised by `posix_spawn_file_actions_init`.
    unsafe fn of(actions: *const posix_spawn_file_actions_t) -> ChildDir {
        let mut dir = ChildDir {
            at: CWD,
            owned: false,
        };
        if actions.is_null() || guard::active() {
            return dir;
        }
        // SAFETY: glibc's layout of an initialised posix_spawn_file_actions_t.
        let fa = unsafe { &*actions.cast::<FileActions>() };
        if fa.used <= 0 {
            return dir;
        }
        if fa.actions.is_null() || fa.used > fa.allocated {
            dir.set(None, false);
            return dir;
        }
        // SAFETY: glibc keeps `used` initialised actions at `actions`.
        let list = unsafe { std::slice::from_raw_parts(fa.actions, fa.used as usize) };
        for (i, action) in list.iter().enumerate() {
            match action.tag {
                SPAWN_DO_CHDIR => {
                    // SAFETY: a chdir action holds a NUL-terminated path (glibc's copy).
                    let path = unsafe { action.args.path };
                    if path.is_null() {
                        dir.set(None, false);
                        continue;
                    }
                    // SAFETY: a non-null path is a NUL-terminated string: its first byte.
                    let absolute = unsafe { *path } == b'/' as c_char;
                    let Some(base) = (if absolute { CWD } else { dir.at() }) else {
                        continue; // relative to a directory already unknown
                    };
                    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
                    // SAFETY: a NUL-terminated path; openat is not hooked.
                    let fd = unsafe { libc::openat(base, path, flags) };
                    if fd < 0 {
                        dir.set(None, false);
                    } else {
                        dir.set(Some(fd), true);
                    }
                }
                SPAWN_DO_FCHDIR => {
                    // SAFETY: an fchdir action holds its descriptor first.
                    let fd = unsafe { action.args.fds.fd };
                    // A descriptor an earlier action replaced or closed is not ours to open.
                    let changed = list[..i].iter().any(|a| {
                        // SAFETY: each tag says which member of the union is set.
                        unsafe {
                            match a.tag {
                                SPAWN_DO_CLOSE => a.args.fds.fd == fd,
                                SPAWN_DO_DUP2 => a.args.fds.newfd == fd && a.args.fds.fd != fd,
                                SPAWN_DO_OPEN => a.args.open.fd == fd,
                                SPAWN_DO_CLOSEFROM => a.args.fds.fd <= fd,
                                _ => false,
                            }
                        }
                    });
                    let usable = !changed
                        // SAFETY: F_GETFD only asks about the descriptor.
                        && unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
                    dir.set(usable.then_some(fd), false);
                }
                SPAWN_DO_CLOSE | SPAWN_DO_DUP2 | SPAWN_DO_OPEN | SPAWN_DO_CLOSEFROM
                | SPAWN_DO_TCSETPGRP => {}
                _ => dir.set(None, false), // an action this code does not know
            }
        }
        dir
    }
}

impl Drop for ChildDir {
    fn drop(&mut self) {
        self.release();
    }
}

/// # Safety
/// Called by C with posix_spawn(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: the caller's file actions (null or initialised by posix_spawn_file_actions_init).
    let dir = unsafe { ChildDir::of(actions) };
    let mut tramp = Scratch::<TrampolinePaths>::new();
    // SAFETY: the caller's path and argv.
    let gate = unsafe {
        gate(
            path,
            false,
            argv.cast(),
            true,
            dir.at(),
            tramp.as_deref_mut(),
        )
    };
    drop(dir);
    if gate == Gate::Refuse {
        return REFUSED_EXEC_ERRNO;
    }
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { env_for(gate, envp.cast()) };
    let envp = fixed.as_ref().map_or(envp, |e| e.envp().cast());
    if let (Gate::Trampoline(_), Some(paths)) = (gate, tramp.as_deref()) {
        // SAFETY: the caller's arguments, with a valid environment.
        return unsafe { spawn_trampoline(pid, paths, actions, attr, argv.cast(), envp) };
    }
    // SAFETY: posix_spawn's C signature, with the caller's arguments and a valid environment.
    let rc = match unsafe { real::func::<real::PosixSpawnFn>(&real::POSIX_SPAWN) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(pid, path, actions, attr, argv, envp) },
        None => libc::ENOSYS,
    };
    if let (Gate::RunUnguarded(why), 0, false) = (gate, rc, pid.is_null()) {
        // SAFETY: on success libc stored the child's pid; file and argv are the caller's.
        unsafe { record_spawned(*pid, path, argv.cast(), why) };
    }
    rc
}

/// # Safety
/// Called by C with posix_spawnp(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: the caller's file actions (null or initialised by posix_spawn_file_actions_init).
    let dir = unsafe { ChildDir::of(actions) };
    let mut tramp = Scratch::<TrampolinePaths>::new();
    // SAFETY: the caller's file and argv.
    let gate = unsafe {
        gate(
            file,
            true,
            argv.cast(),
            true,
            dir.at(),
            tramp.as_deref_mut(),
        )
    };
    drop(dir);
    if gate == Gate::Refuse {
        return REFUSED_EXEC_ERRNO;
    }
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { env_for(gate, envp.cast()) };
    let envp = fixed.as_ref().map_or(envp, |e| e.envp().cast());
    if let (Gate::Trampoline(_), Some(paths)) = (gate, tramp.as_deref()) {
        // SAFETY: the caller's arguments, with a valid environment.
        return unsafe { spawn_trampoline(pid, paths, actions, attr, argv.cast(), envp) };
    }
    // SAFETY: posix_spawnp's C signature, with the caller's arguments and a valid environment.
    let rc = match unsafe { real::func::<real::PosixSpawnFn>(&real::POSIX_SPAWNP) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(pid, file, actions, attr, argv, envp) },
        None => libc::ENOSYS,
    };
    if let (Gate::RunUnguarded(why), 0, false) = (gate, rc, pid.is_null()) {
        // SAFETY: on success libc stored the child's pid; file and argv are the caller's.
        unsafe { record_spawned(*pid, file, argv.cast(), why) };
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::{has_token, trampoline_paths, TrampolinePaths};

    #[test]
    fn trampoline_paths_hold_the_target_and_a_launchers_executable() {
        let mut paths: TrampolinePaths = [0xff; 8192];
        assert!(trampoline_paths(
            &mut paths,
            b"/bin/x\0",
            std::process::id()
        ));
        assert_eq!(&paths[..7], b"/bin/x\0");
        let exe = std::env::current_exe().unwrap();
        let end = paths[4096..].iter().position(|b| *b == 0).unwrap();
        assert_eq!(&paths[4096..4096 + end], exe.as_os_str().as_encoded_bytes());
        // No such process: no executable to spawn.
        assert!(!trampoline_paths(&mut paths, b"/bin/x\0", u32::MAX));
    }

    #[test]
    fn preload_lists_split_on_colons_and_spaces() {
        assert!(has_token(b"/a.so:/lib/x.so", b"/lib/x.so"));
        assert!(has_token(b"/a.so /lib/x.so", b"/lib/x.so"));
        assert!(!has_token(b"/lib/x.so.1", b"/lib/x.so"));
    }
}
