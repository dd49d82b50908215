//! `egress-run doctor`: what this machine allows the guard to do, as checks with a verdict
//! each; and `--version`, which names the library's version too.
//!
//! Doctor only looks: it reads the library file (never loads it), runs one guarded probe
//! whose connect goes to doctor's own loopback listener and must be refused, and tries the
//! kernel's features in forked children that exit at once. It changes no setting and widens
//! nothing.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::handover;
use crate::Fatal;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const MARK: &[u8] = b"EGRESS_RUN_LIBRARY_VERSION=";

/// The version written in the library file, if it has the mark.
pub fn library_version(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let at = bytes.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let rest = &bytes[at..];
    let end = rest.iter().position(|&b| b == 0)?.min(64);
    String::from_utf8(rest[..end].to_vec()).ok()
}

pub fn version_text() -> String {
    let library = match handover::find_library() {
        Ok(path) => match library_version(&path) {
            Some(v) => format!("library {v} ({})", path.display()),
            None => format!("library of unknown version ({})", path.display()),
        },
        Err(_) => "library not found".to_string(),
    };
    format!("egress-run {VERSION}\n{library}\n")
}

/// Colour on stderr: only on a terminal, and never with `NO_COLOR` set (https://no-color.org).
pub fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    !matches!(std::env::var_os("NO_COLOR"), Some(v) if !v.is_empty())
        && std::io::stderr().is_terminal()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    /// Works, with less: the guard still works here.
    Warn,
    /// egress-run cannot guard here until this is fixed.
    Fail,
}

struct Check {
    name: &'static str,
    verdict: Verdict,
    what: String,
    todo: Option<String>,
}

pub fn run() -> Result<i32, Fatal> {
    let mut checks = Vec::new();
    let library = check_library(&mut checks);
    match &library {
        Some(path) => checks.push(check_preload(path)),
        None => checks.push(Check {
            name: "preload",
            verdict: Verdict::Fail,
            what: "not checked: it needs a library of egress-run's version".into(),
            todo: None,
        }),
    }
    checks.push(check_kernel());
    checks.push(check_userns());
    let mut out = format!("egress-run doctor {VERSION}\n");
    for c in &checks {
        let tag = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!("{tag}  {:<8} {}\n", c.name, c.what));
        if let Some(todo) = &c.todo {
            out.push_str(&format!("      {:<8} -> {todo}\n", ""));
        }
    }
    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    out.push_str(if failed {
        "verdict: egress-run cannot guard programs here; see the FAIL lines\n"
    } else {
        "verdict: egress-run can guard programs here\n"
    });
    crate::to_stdout(&out);
    Ok(if failed { 1 } else { 0 })
}

fn check_library(checks: &mut Vec<Check>) -> Option<PathBuf> {
    let path = match handover::find_library() {
        Ok(path) => path,
        Err(f) => {
            checks.push(Check {
                name: "library",
                verdict: Verdict::Fail,
                what: f.what,
                todo: Some(f.todo),
            });
            return None;
        }
    };
    let check = match library_version(&path) {
        Some(v) if v == VERSION => Check {
            name: "library",
            verdict: Verdict::Ok,
            what: format!("{}, version {v}, the same as egress-run", path.display()),
            todo: None,
        },
        found => Check {
            name: "library",
            verdict: Verdict::Fail,
            what: format!(
                "{} is version {}, egress-run is {VERSION}",
                path.display(),
                found.as_deref().unwrap_or("unknown")
            ),
            todo: Some("install the launcher and the library of one build (make install)".into()),
        },
    };
    let ok = check.verdict == Verdict::Ok;
    checks.push(check);
    ok.then_some(path)
}

/// Runs `egress-run -- egress-run __doctor-probe PORT` in block mode: the probe must check in
/// (the loader honoured LD_PRELOAD) and its connect to our listener must be refused.
fn check_preload(_library: &Path) -> Check {
    let fail = |what: String, todo: &str| Check {
        name: "preload",
        verdict: Verdict::Fail,
        what,
        todo: Some(todo.to_string()),
    };
    let listener = match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)) {
        Ok(l) => l,
        Err(e) => {
            return fail(
                format!("cannot listen on 127.0.0.1 for the probe ({e})"),
                "check that the loopback interface is up",
            )
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            return fail(
                format!("cannot find egress-run's own executable ({e})"),
                "run egress-run from a normal file system",
            )
        }
    };
    let report =
        std::env::temp_dir().join(format!("egress-run-doctor-{}.jsonl", std::process::id()));
    let status = Command::new(&exe)
        .arg("--quiet")
        .arg("--report")
        .arg(&report)
        .arg("--")
        .arg(&exe)
        .arg("__doctor-probe")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    drop(listener);
    let output = match status {
        Ok(o) => o,
        Err(e) => {
            return fail(
                format!("cannot run the probe ({e})"),
                "check that egress-run is executable",
            )
        }
    };
    let said = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let checked_in = text.lines().any(|l| {
        l.contains("\"type\":\"process\"")
            && l.contains("\"guarded\":true")
            && l.contains("__doctor-probe")
    });
    let denied = text
        .lines()
        .any(|l| l.contains("\"type\":\"connect\"") && l.contains("\"decision\":\"deny\""));
    match (checked_in, denied, said.as_str()) {
        (true, true, "refused 13") => Check {
            name: "preload",
            verdict: Verdict::Ok,
            what: format!(
                "LD_PRELOAD honoured: a guarded probe checked in, and its connect to 127.0.0.1:{port} was refused (EACCES)"
            ),
            todo: None,
        },
        (false, _, _) => fail(
            format!(
                "the guarded probe never checked in (exit {:?}, said '{said}'): the loader ignored LD_PRELOAD or the library failed to load; {}",
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            "use a glibc system whose loader honours LD_PRELOAD (not a setuid egress-run, not musl)",
        ),
        _ => fail(
            format!("the guarded probe's connect was not refused (it said '{said}')"),
            "reinstall egress-run (make install) and run doctor again",
        ),
    }
}

/// The hidden `__doctor-probe PORT`: one TCP connect to 127.0.0.1:PORT (doctor's own
/// listener). Prints `refused ERRNO`, or `connected` when nothing stopped it.
pub fn probe(port: u16) -> i32 {
    match TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
        Ok(mut s) => {
            let _ = s.read(&mut [0u8; 1]);
            crate::to_stdout("connected\n");
            1
        }
        Err(e) => {
            crate::to_stdout(&format!("refused {}\n", e.raw_os_error().unwrap_or(0)));
            0
        }
    }
}

/// Runs `f` in a forked child and returns its exit status (`None` when it did not exit).
/// The child only makes system calls and `_exit`s: safe after fork in any process.
fn in_child(f: fn() -> i32) -> Option<i32> {
    // SAFETY: fork has no memory-safety preconditions; doctor is single-threaded here.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return None;
    }
    if pid == 0 {
        let code = f();
        // SAFETY: _exit ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; status is a valid pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// An allow-everything filter installed with `flags`; returns the listener descriptor or -1.
fn install_filter(flags: libc::c_ulong) -> libc::c_long {
    let mut insn = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: insn.as_mut_ptr(),
    };
    // SAFETY: in a forked child only; prctl and seccomp read the valid program above.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return -1;
        }
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn probe_user_notif() -> i32 {
    i32::from(install_filter(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER) < 0)
}

fn probe_wait_killable() -> i32 {
    let flags =
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    i32::from(install_filter(flags) < 0)
}

fn probe_addfd() -> i32 {
    let fd = install_filter(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER);
    if fd < 0 {
        return 1;
    }
    // struct seccomp_notif_addfd { u64 id; u32 flags, srcfd, newfd, newfd_flags; }
    let addfd: [u32; 6] = [0, 0, 0, fd as u32, 0, 0];
    // _IOW('!', 3, struct seccomp_notif_addfd): a kernel with ADDFD looks the (absent)
    // notification up and says ENOENT; an older one does not know the request.
    const SECCOMP_IOCTL_NOTIF_ADDFD: libc::c_ulong = 0x4018_2103;
    // SAFETY: the request reads 24 bytes from addfd.
    let r = unsafe {
        libc::ioctl(
            fd as libc::c_int,
            SECCOMP_IOCTL_NOTIF_ADDFD as _,
            addfd.as_ptr(),
        )
    };
    i32::from(!(r < 0 && errno() == libc::ENOENT))
}

fn probe_pidfd_getfd() -> i32 {
    // SAFETY: an invalid pidfd: the call fails without side effects (EBADF where it exists).
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, -1, 0, 0) };
    i32::from(!(r < 0 && errno() == libc::EBADF))
}

fn check_kernel() -> Check {
    let yes = |f: fn() -> i32| in_child(f) == Some(0);
    let notif = yes(probe_user_notif);
    if !notif {
        return Check {
            name: "kernel",
            verdict: Verdict::Warn,
            what: "seccomp user notification is not available (Linux 5.0 and seccomp needed): no kernel layer; static programs (most Go programs) are refused in block mode".into(),
            todo: Some("run on Linux 5.9 or later without a seccomp policy that forbids filters, or use --allow-unguarded for such programs".into()),
        };
    }
    let features = [
        ("WAIT_KILLABLE_RECV", yes(probe_wait_killable)),
        ("pidfd_getfd", yes(probe_pidfd_getfd)),
        ("ADDFD", yes(probe_addfd)),
    ];
    let list: Vec<String> = features
        .iter()
        .map(|(name, ok)| format!("{name} {}", if *ok { "yes" } else { "no" }))
        .collect();
    let all = features.iter().all(|(_, ok)| *ok);
    Check {
        name: "kernel",
        verdict: if all { Verdict::Ok } else { Verdict::Warn },
        what: format!("seccomp user notification available; {}", list.join(", ")),
        todo: (!all).then(|| {
            "a newer kernel (5.19 or later) gives the kernel layer every feature".to_string()
        }),
    }
}

fn probe_userns() -> i32 {
    // SAFETY: in a forked child only; unshare changes only this child's namespaces.
    let root = unsafe { libc::geteuid() } == 0;
    let flags = libc::CLONE_NEWNET | if root { 0 } else { libc::CLONE_NEWUSER };
    // SAFETY: as above.
    i32::from(unsafe { libc::unshare(flags) } != 0)
}

fn check_userns() -> Check {
    if in_child(probe_userns) == Some(0) {
        Check {
            name: "userns",
            verdict: Verdict::Ok,
            what: "a private network namespace can be made (the test sandbox, scripts/sandbox.sh, works)".into(),
            todo: None,
        }
    } else {
        Check {
            name: "userns",
            verdict: Verdict::Warn,
            what: "no private network namespace for this user: the end-to-end test sandbox cannot run here (the guard itself does not need one)".into(),
            todo: Some("for the tests: run as root, or allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or the AppArmor userns restriction off)".into()),
        }
    }
}
