//! Programs the guard cannot enter (CONTRACT "Unguarded programs"), found before they run.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use egress_policy::elf::{
    check_program, Credentials, FileIds, Opened, ProgramArgs, ProgramFiles, Runtime,
};

/// Finds COMMAND the way execvp does: a name with a '/' is a path, others are looked up in PATH.
pub fn resolve(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    std::env::split_paths(&path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            }
        })
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Reads of a file served from its first 4 KiB, read once: the ELF checks make a dozen or
/// more small reads (header, program headers, interpreter), nearly always within it.
pub struct Head<'a> {
    file: &'a File,
    page: [u8; 4096],
    len: usize,
}

impl<'a> Head<'a> {
    pub fn new(file: &'a File) -> Self {
        let mut page = [0u8; 4096];
        let len = file.read_at(&mut page, 0).unwrap_or(0);
        Head { file, page, len }
    }

    /// As `pread`: fills `buf` from `off`; returns the bytes read.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> usize {
        match usize::try_from(off).ok().and_then(|at| {
            let end = at.checked_add(buf.len())?;
            self.page.get(at..end).filter(|_| end <= self.len)
        }) {
            Some(cached) => {
                buf.copy_from_slice(cached);
                buf.len()
            }
            None => self.file.read_at(buf, off).unwrap_or(0),
        }
    }
}

/// The launcher's side of the check: files opened with std, their first page cached.
struct LauncherFiles {
    file: Option<File>,
    page: Vec<u8>,
}

impl ProgramFiles for LauncherFiles {
    fn open(&mut self, path: &[u8]) -> Opened {
        self.file = None;
        self.page.clear();
        let bytes = path.strip_suffix(b"\0").unwrap_or(path);
        let path = Path::new(OsStr::from_bytes(bytes));
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::PermissionDenied && executable_file(path) => {
                return Opened::Unreadable;
            }
            Err(_) => return Opened::Other,
        };
        let Ok(meta) = file.metadata() else {
            return Opened::Other;
        };
        if !meta.is_file() {
            return Opened::Other;
        }
        let ids = FileIds {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            caps: has_file_caps(&file),
            nosuid: on_nosuid_mount(&file),
        };
        self.page.resize(4096, 0);
        let len = file.read_at(&mut self.page, 0).unwrap_or(0);
        self.page.truncate(len);
        self.file = Some(file);
        Opened::File(ids)
    }

    fn read_at(&mut self, off: u64, buf: &mut [u8]) -> usize {
        let cached = usize::try_from(off).ok().and_then(|at| {
            let end = at.checked_add(buf.len())?;
            self.page.get(at..end)
        });
        match (cached, &self.file) {
            (Some(cached), _) => {
                buf.copy_from_slice(cached);
                buf.len()
            }
            (None, Some(file)) => file.read_at(buf, off).unwrap_or(0),
            (None, None) => 0,
        }
    }
}

/// A regular file this process may execute (by its effective ids, as exec decides).
fn executable_file(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path; faccessat only reads it.
    let may_exec =
        unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::X_OK, libc::AT_EACCESS) } == 0;
    may_exec && path.metadata().is_ok_and(|m| m.is_file())
}

fn has_file_caps(file: &File) -> bool {
    // SAFETY: our own descriptor and a NUL-terminated name; a null buffer of size 0 only asks
    // for the size.
    unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        ) >= 0
    }
}

/// Whether the file lies on a mount whose set-id bits (and file capabilities) are ignored.
fn on_nosuid_mount(file: &File) -> bool {
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: our own descriptor and a writable statvfs.
    let ok = unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } == 0;
    ok && st.f_flag & libc::ST_NOSUID != 0
}

/// This process's credentials, as the kernel will compare them at COMMAND's exec.
pub fn credentials() -> Credentials {
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: writable u32s; these calls cannot fail with valid pointers.
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

/// COMMAND's arguments, NUL-terminated.
struct LauncherArgs(Vec<Vec<u8>>);

impl ProgramArgs for LauncherArgs {
    fn arg(&self, i: usize) -> Option<&[u8]> {
        self.0.get(i).map(Vec::as_slice)
    }
}

fn launcher_args(argv: &[OsString]) -> LauncherArgs {
    LauncherArgs(
        argv.iter()
            .map(|a| {
                let mut v = a.as_bytes().to_vec();
                v.push(0);
                v
            })
            .collect(),
    )
}

/// True when COMMAND is the dynamic loader run to list or verify (`ld.so --list PROGRAM`): it
/// runs no program code, so it never checks in, and that is not a failure of the guard.
pub fn runs_no_program(path: &Path, argv: &[OsString]) -> bool {
    let tracing = std::env::var_os("LD_TRACE_LOADED_OBJECTS").is_some();
    egress_policy::elf::loader_runs_no_program(
        path.as_os_str().as_bytes(),
        &launcher_args(argv),
        tracing,
    )
}

/// Why the guard cannot enter the program at `path` run with `argv` (following its `#!`
/// interpreters; for the loader run directly, the program it loads); and the sanitizer runtime
/// a guardable one needs first in `LD_PRELOAD`.
pub fn reason(path: &Path, argv: &[OsString]) -> (Option<&'static str>, Runtime) {
    let mut c = path.as_os_str().as_bytes().to_vec();
    c.push(0);
    let mut files = LauncherFiles {
        file: None,
        page: Vec::new(),
    };
    let mut runtime = Runtime::NONE;
    let why = check_program(
        &mut files,
        &c,
        &launcher_args(argv),
        &credentials(),
        &mut runtime,
    );
    (why, runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_reads_match_the_file_inside_and_beyond_the_first_page() {
        let path = std::env::temp_dir().join(format!("egress-run-head-{}", std::process::id()));
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let head = Head::new(&file);
        for (off, len) in [(0, 64), (4090, 6), (4090, 20), (9_990, 20), (20_000, 8)] {
            let mut buf = vec![0u8; len];
            let n = head.read_at(off, &mut buf);
            let want = data
                .get(off as usize..)
                .map_or(&[][..], |d| &d[..d.len().min(len)]);
            assert_eq!(&buf[..n], want, "read of {len} at {off}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}
