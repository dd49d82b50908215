//! Handing the policy to the guarded tree: a sealed memfd, the library's path, and the
//! environment variables that locate both.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use egress_policy::wire::{
    encode_with_grantable, Counters, Settings, EVENT_KEY_LEN, FLAG_ALLOW_UNGUARDED, FLAG_SECCOMP,
};
use egress_policy::{DenyAs, Locator, Mode, Rule, GUARD_FD_BASE, GUARD_FD_BELOW_LIMIT};

use std::sync::atomic::{AtomicU64, Ordering};

use egress_policy::event::{checkin_body_len, checkin_span, CHECKIN_ALIGN, CHECKIN_LEN};

use crate::Fatal;

pub const LIBRARY_NAME: &str = "libegress_preload.so";

/// The sealed policy. Its descriptor stays open (and inheritable) for the launcher's whole
/// life, so that guarded processes that lost their copy can reopen it through /proc.
pub struct SealedPolicy {
    _fd: OwnedFd,
    pub locator: Locator,
    pub counters: std::rc::Rc<SharedCounters>,
    /// The run's event key: only holders of this policy can write events (docs/threat-model.md).
    pub event_key: [u8; EVENT_KEY_LEN],
    /// The policy's bytes, for the kernel layer's supervisor (which decides as the library).
    pub bytes: Vec<u8>,
}

/// 8-byte slots of the shared counters: sparse, so only the pages processes touch use memory.
const COUNTER_SLOTS: u64 = 1 << 20;

/// The launcher's mapping of the shared attempt counters (slot 0: next free slot).
pub struct SharedCounters {
    _fd: OwnedFd,
    map: *const AtomicU64,
    slots: u64,
    fd: i32,
    ino: u64,
}

impl SharedCounters {
    fn create() -> std::io::Result<Self> {
        // SAFETY: a NUL-terminated name; no FD_CLOEXEC, so children inherit it.
        let raw = unsafe { libc::memfd_create(c"egress-run-counters".as_ptr(), 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = park(unsafe { OwnedFd::from_raw_fd(raw) });
        // The slots, then the check-in area (egress_policy::event). Sparse: only pages that
        // processes touch use memory.
        let len = COUNTER_SLOTS * 8 + CHECKIN_LEN;
        // SAFETY: ftruncate on our memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: mapping our own memfd of `len` bytes, shared, read-write.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ino = File::from(fd.try_clone()?).metadata()?.ino();
        let area = (map as usize + (COUNTER_SLOTS * 8) as usize) as *const AtomicU64;
        // SAFETY: the area's first word, in our fresh mapping; no process exists yet to race.
        unsafe { (*area).store(CHECKIN_ALIGN, Ordering::Release) };
        Ok(SharedCounters {
            map: map.cast(),
            slots: COUNTER_SLOTS,
            fd: fd.as_raw_fd(),
            ino,
            _fd: fd,
        })
    }

    /// Tells the tree that the run ended normally (the check-in area's second word): a
    /// process that outlives it and finds the event socket gone goes on under its policy,
    /// where one that finds it gone without this fails closed (the launcher was killed).
    pub fn end_run(&self) {
        // SAFETY: the area's second word, in our mapping.
        unsafe { (*self.checkin_word(8)).store(1, Ordering::Release) };
    }

    /// Where the next check-in record will go (the area's `next` word), within the area.
    pub fn checkin_next(&self) -> u64 {
        // SAFETY: the area's first word; the mapping lives as long as self.
        let next = unsafe { (*self.checkin_word(0)).load(Ordering::Acquire) };
        next.min(CHECKIN_LEN)
    }

    /// The header word of the check-in record at byte offset `at` (8-aligned, in the area).
    fn checkin_word(&self, at: u64) -> *const AtomicU64 {
        (self.map as usize + (self.slots * 8 + at) as usize) as *const AtomicU64
    }

    /// The body of the record at `at` if it is published: (body, span).
    pub fn checkin_record(&self, at: u64) -> Option<(&[u8], u64)> {
        if !at.is_multiple_of(CHECKIN_ALIGN) || at < CHECKIN_ALIGN || at + 8 > CHECKIN_LEN {
            return None;
        }
        // SAFETY: an 8-aligned word inside the area; processes store it atomically.
        let header = unsafe { (*self.checkin_word(at)).load(Ordering::Acquire) };
        let len = checkin_body_len(header)?;
        let span = checkin_span(len);
        if at + span > CHECKIN_LEN {
            return None;
        }
        let start = self.map as usize + (self.slots * 8 + at + 8) as usize;
        // SAFETY: the body lies inside the area (checked), and was written before its header
        // was published (release/acquire above); nobody writes it again.
        Some((
            unsafe { std::slice::from_raw_parts(start as *const u8, len) },
            span,
        ))
    }

    /// Attempts counted in `slot` beyond the event that allocated it.
    pub fn get(&self, slot: u64) -> u64 {
        if slot == 0 || slot >= self.slots {
            return 0;
        }
        // SAFETY: slot is within the mapping, which lives as long as self; AtomicU64 has the
        // layout of u64 and the guarded processes update it atomically.
        unsafe { (*self.map.add(slot as usize)).load(Ordering::Acquire) }
    }
}

pub fn seal_policy(
    mode: Mode,
    deny_as: DenyAs,
    rules: &[Rule],
    grantable: &[Rule],
    allow_unguarded: bool,
    seccomp: bool,
) -> Result<SealedPolicy, Fatal> {
    let fail = |what: &str, e: std::io::Error| {
        Fatal::new(
            format!("cannot create the policy memfd ({what}: {e})"),
            "egress-run needs Linux 3.17+ with memfd_create and sealing",
        )
    };
    let flags = if allow_unguarded {
        FLAG_ALLOW_UNGUARDED
    } else {
        0
    } | if seccomp { FLAG_SECCOMP } else { 0 };
    let counters = SharedCounters::create().map_err(|e| fail("counters", e))?;
    let event_key = new_event_key()?;
    let settings = Settings {
        mode,
        deny_as,
        flags,
        counters: Some(Counters {
            fd: counters.fd,
            ino: counters.ino,
            slots: counters.slots,
        }),
        event_key,
    };
    let bytes = encode_with_grantable(settings, std::process::id(), rules, grantable);
    // SAFETY: a NUL-terminated name; no FD_CLOEXEC, so children inherit the descriptor.
    let raw = unsafe { libc::memfd_create(c"egress-run-policy".as_ptr(), libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(fail("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: raw is a fresh descriptor we own.
    let fd = park(unsafe { OwnedFd::from_raw_fd(raw) });
    let mut file = File::from(fd.try_clone().map_err(|e| fail("dup", e))?);
    file.write_all(&bytes).map_err(|e| fail("write", e))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS with an int argument on our memfd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(fail("seal", std::io::Error::last_os_error()));
    }
    let meta = file.metadata().map_err(|e| fail("fstat", e))?;
    Ok(SealedPolicy {
        locator: Locator {
            launcher_pid: std::process::id(),
            fd: fd.as_raw_fd(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
        _fd: fd,
        counters: std::rc::Rc::new(counters),
        event_key,
        bytes,
    })
}

/// 16 random bytes from the kernel, never all zero (zero means "no key").
fn new_event_key() -> Result<[u8; EVENT_KEY_LEN], Fatal> {
    let mut key = [0u8; EVENT_KEY_LEN];
    let mut filled = 0;
    while filled < key.len() || key == [0; EVENT_KEY_LEN] {
        if filled == key.len() {
            filled = 0;
        }
        // SAFETY: getrandom writes at most the remaining length into key.
        let n =
            unsafe { libc::getrandom(key[filled..].as_mut_ptr().cast(), key.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Fatal::new(
                format!("cannot draw the run's event key ({e})"),
                "egress-run needs getrandom(2) (Linux 3.17+)",
            ));
        }
        filled += n as usize;
    }
    Ok(key)
}

/// Moves an inheritable descriptor to the guard's high numbers (`GUARD_FD_BASE`, or just below
/// a lower soft `RLIMIT_NOFILE`), so that COMMAND's own descriptors get the numbers they get
/// natively. Where the limit leaves no room, the descriptor stays where it is.
fn park(fd: OwnedFd) -> OwnedFd {
    let dup_at = |base: i32| {
        // SAFETY: F_DUPFD (inheritable, as the memfds must be) with an int argument on our fd.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD, base) };
        // SAFETY: a fresh descriptor we own.
        (r >= 0).then(|| unsafe { OwnedFd::from_raw_fd(r) })
    };
    let below_limit = || {
        // SAFETY: an all-zero rlimit is valid to overwrite; getrlimit writes it.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: lim is writable.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        let base = lim.rlim_cur.checked_sub(GUARD_FD_BELOW_LIMIT)?;
        (base >= GUARD_FD_BELOW_LIMIT)
            .then(|| i32::try_from(base).ok())
            .flatten()
    };
    match dup_at(GUARD_FD_BASE).or_else(|| below_limit().and_then(dup_at)) {
        // The low one is closed as `fd` drops.
        Some(high) if high.as_raw_fd() > fd.as_raw_fd() => high,
        _ => fd,
    }
}

/// Finds the preload library: beside the executable (a build tree), or in
/// `../lib/egress-run/` (an installed tree).
pub fn find_library() -> Result<PathBuf, Fatal> {
    let exe = std::env::current_exe().map_err(|e| {
        Fatal::new(
            format!("cannot find egress-run's own executable ({e})"),
            "run egress-run from a normal file system",
        )
    })?;
    // The kernel's /proc/self/exe is already free of symlinks and dots.
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join(LIBRARY_NAME),
        dir.join("../lib/egress-run").join(LIBRARY_NAME),
    ];
    for (i, path) in candidates.iter().enumerate() {
        // The first candidate is canonical unless it is a symlink: skip realpath's readlinks.
        let plain = i == 0
            && path
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_file());
        if plain || path.is_file() {
            let path = if plain {
                path.clone()
            } else {
                path.canonicalize().unwrap_or_else(|_| path.clone())
            };
            check_library(&path)?;
            return Ok(path);
        }
    }
    Err(Fatal::new(
        format!(
            "the guard library {LIBRARY_NAME} is missing (looked in {} and {})",
            candidates[0].display(),
            candidates[1].display()
        ),
        "reinstall egress-run (make install) or build it (make)",
    ))
}

fn check_library(path: &Path) -> Result<(), Fatal> {
    let bad = |why: String| {
        Fatal::new(
            format!("the guard library {} {why}", path.display()),
            "reinstall egress-run (make install) or rebuild it (make)",
        )
    };
    let bytes = path.as_os_str().as_bytes();
    if bytes
        .iter()
        .any(|b| matches!(b, b' ' | b':' | b'\t' | b'\n'))
    {
        return Err(bad(
            "has a space or ':' in its path, which LD_PRELOAD cannot hold".into(),
        ));
    }
    let file = File::open(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let head = crate::unguarded::Head::new(&file);
    let mut read_at = |off: u64, buf: &mut [u8]| head.read_at(off, buf);
    if let Some(why) = egress_policy::elf::library_problem(&mut read_at, size) {
        return Err(bad(format!("{why}, so the loader could not preload it")));
    }
    Ok(())
}

/// The guarded tree's LD_PRELOAD: the user's own entries first (libasan must lead), then ours.
pub fn ld_preload(existing: Option<&OsStr>, library: &Path) -> OsString {
    let mut out = OsString::new();
    if let Some(existing) = existing {
        for entry in existing
            .as_bytes()
            .split(|b| *b == b':' || *b == b' ')
            .filter(|e| !e.is_empty() && *e != library.as_os_str().as_bytes())
        {
            out.push(OsStr::from_bytes(entry));
            out.push(":");
        }
    }
    out.push(library.as_os_str());
    out
}

/// Names the sanitizer runtime the guard put first in `LD_PRELOAD` for a program that links it
/// (so that it is taken out again for programs that do not).
pub const SANITIZER_ENV: &str = "EGRESS_RUN_SANITIZER";

/// `preload` with the sanitizer runtime `runtime` first (when the program links one and the
/// list does not start with it already), and without an entry `added` that a guard put there
/// earlier for another program; and the value of `SANITIZER_ENV` (the entry added, if any).
pub fn runtime_first(
    preload: Option<OsString>,
    added: Option<&OsStr>,
    runtime: Option<&[u8]>,
) -> (Option<OsString>, Option<OsString>) {
    let Some(preload) = preload else {
        return (None, None);
    };
    let added = added.map(OsStr::as_bytes).filter(|a| !a.is_empty());
    let mut rest: Vec<&[u8]> = preload
        .as_bytes()
        .split(|b| *b == b':' || *b == b' ')
        .filter(|e| !e.is_empty())
        .collect();
    if let Some(i) = added.and_then(|a| rest.iter().position(|e| *e == a)) {
        rest.remove(i);
    }
    let leads = |rt: &[u8]| {
        rest.first().is_some_and(|e| {
            let base = e.rsplit(|&b| b == b'/').next().unwrap_or(e);
            base == rt
        })
    };
    let add = runtime.filter(|rt| !leads(rt));
    let mut out = Vec::new();
    for e in add.into_iter().chain(rest.iter().copied()) {
        if !out.is_empty() {
            out.push(b':');
        }
        out.extend_from_slice(e);
    }
    let marker = add.map(|rt| OsStr::from_bytes(rt).to_os_string());
    (Some(OsString::from_vec(out)), marker)
}

/// Whether LD_PRELOAD already holds a guard library (this one or an outer run's copy).
pub fn has_guard(existing: Option<&OsStr>) -> bool {
    existing.is_some_and(|v| {
        v.as_bytes()
            .split(|b| *b == b':' || *b == b' ')
            .any(|e| Path::new(OsStr::from_bytes(e)).file_name() == Some(OsStr::new(LIBRARY_NAME)))
    })
}

/// The launcher pids of an outer locator chain (`<locator>;<locator>...`, innermost first).
pub fn chain_launchers(chain: Option<&OsStr>) -> Vec<u32> {
    chain
        .map(|c| {
            c.as_bytes()
                .split(|b| *b == egress_policy::CHAIN_SEP)
                .filter_map(|l| Locator::parse(l).map(|l| l.launcher_pid))
                .collect()
        })
        .unwrap_or_default()
}

/// The user's own LD_PRELOAD entries without ours, for a program whose loader cannot take it.
pub fn ld_preload_without(existing: Option<&OsStr>, library: &Path) -> Option<OsString> {
    let full = ld_preload(existing, library);
    let kept = full
        .as_bytes()
        .strip_suffix(library.as_os_str().as_bytes())?;
    let kept = kept.strip_suffix(b":").unwrap_or(kept);
    (!kept.is_empty()).then(|| OsStr::from_bytes(kept).to_os_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_already_preloaded_is_found_by_file_name() {
        assert!(has_guard(Some(OsStr::new(
            "/x/y.so:/outer/lib/libegress_preload.so"
        ))));
        assert!(has_guard(Some(OsStr::new(
            "libasan.so.8 /o/libegress_preload.so"
        ))));
        assert!(!has_guard(Some(OsStr::new(
            "/x/libegress_preload.so.bak:/y.so"
        ))));
        assert!(!has_guard(None));
    }

    #[test]
    fn the_launchers_of_an_outer_chain_innermost_first() {
        let chain = OsStr::new("v1:20:4:5:9;v1:10:3:5:7");
        assert_eq!(chain_launchers(Some(chain)), vec![20, 10]);
        assert_eq!(
            chain_launchers(Some(OsStr::new("garbage;v1:10:3:5:7"))),
            vec![10]
        );
        assert!(chain_launchers(None).is_empty());
    }

    #[test]
    fn a_sanitizer_runtime_leads_and_is_taken_out_again() {
        let pre = |s: &str| Some(OsString::from(s));
        assert_eq!(
            runtime_first(pre("/u.so:/g.so"), None, Some(b"libasan.so.8")),
            (pre("libasan.so.8:/u.so:/g.so"), pre("libasan.so.8"))
        );
        assert_eq!(
            runtime_first(
                pre("/usr/lib/libasan.so.8:/g.so"),
                None,
                Some(b"libasan.so.8")
            ),
            (pre("/usr/lib/libasan.so.8:/g.so"), None)
        );
        assert_eq!(
            runtime_first(
                pre("libasan.so.8:/g.so"),
                Some(OsStr::new("libasan.so.8")),
                None
            ),
            (pre("/g.so"), None)
        );
        assert_eq!(
            runtime_first(pre("/g.so"), None, None),
            (pre("/g.so"), None)
        );
    }

    #[test]
    fn user_preloads_stay_first_and_ours_is_not_duplicated() {
        let lib = Path::new("/opt/e/libegress_preload.so");
        assert_eq!(
            ld_preload(None, lib),
            OsString::from("/opt/e/libegress_preload.so")
        );
        assert_eq!(
            ld_preload(
                Some(OsStr::new(
                    "libasan.so.8 /x/y.so:/opt/e/libegress_preload.so"
                )),
                lib
            ),
            OsString::from("libasan.so.8:/x/y.so:/opt/e/libegress_preload.so")
        );
    }
}
