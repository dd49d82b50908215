//! What the channel says: a process's record and each attempt, formatted as the launcher's
//! JSON events into a stack buffer (no allocation, no hooked call), folded when repeated
//! (`fold`), and handed to `out`, the one way out.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::fold::{self, Fold, KeyHash};
use super::out::{check_in, send};
use crate::carray::c_strings;
use crate::chain;
use crate::fmt::Buf;
use crate::sock::Proto;
use crate::state::Loaded;
use crate::verdict::Verdict;

/// What kind of attempt an event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Send,
    Resolve,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Send => "send",
            Kind::Resolve => "resolve",
        }
    }
}

/// One egress attempt, as the report describes it.
pub struct Attempt<'a> {
    pub kind: Kind,
    /// The libc function the program called.
    pub call: &'static str,
    pub proto: Option<Proto>,
    pub dest: Option<(IpAddr, u16)>,
    pub host: Option<&'a [u8]>,
    pub verdict: Verdict,
}

fn pid_ppid(w: &mut Buf) {
    // SAFETY: getpid/getppid have no preconditions.
    let (pid, ppid) = unsafe { (libc::getpid(), libc::getppid()) };
    w.str("\"pid\":");
    w.int(i64::from(pid));
    w.str(",\"ppid\":");
    w.int(i64::from(ppid));
}

/// Reads a small /proc/self file into `buf`; returns the bytes read.
fn read_proc(path: &[u8], buf: &mut [u8]) -> usize {
    // SAFETY: path is NUL-terminated; open/read/close are not hooked.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 0;
        }
        let mut total = 0;
        while total < buf.len() {
            let n = libc::read(fd, buf[total..].as_mut_ptr().cast(), buf.len() - total);
            if n <= 0 {
                break;
            }
            total += n as usize;
        }
        libc::close(fd);
        total
    }
}

/// Tells the launcher that this process exists and whether it holds a policy.
pub fn process_started(loaded: &Loaded) {
    if loaded.locator.is_none() {
        return;
    }
    let argv = crate::state::startup_argv();
    if argv.is_null() {
        process_started_from_proc(loaded);
    } else {
        process_started_from_argv(loaded, argv);
    }
}

/// The image's start, on its main thread's stack (the constructor, or the first hook). Kept
/// out of `process_started`, so that its buffers are not in the frame of a forked child's
/// check-in.
#[inline(never)]
fn process_started_from_argv(loaded: &Loaded, argv: *const *const libc::c_char) {
    // A short record fits a small buffer, and a small stack frame spares the new process a
    // page fault or two (each costs microseconds here). Long command lines get the full size.
    let mut exe = [0u8; 1024];
    let mut small = [0u8; 2048];
    // SAFETY: the loader's argv, a NULL-terminated array of NUL-terminated strings, read at
    // the image's start before the program could change it.
    if !send_process_record(loaded, &mut small, &mut exe, unsafe { c_strings(argv) }) {
        let mut big = [0u8; 8192];
        // SAFETY: as above.
        send_process_record(loaded, &mut big, &mut exe, unsafe { c_strings(argv) });
    }
}

/// The buffers of a record built from /proc, kept off the stack: a forked child's check-in
/// runs on whatever stack called `fork` (a 16 KiB thread stack, an 8 KiB signal stack).
struct ProcScratch {
    cmdline: [u8; 4096],
    out: [u8; 8192],
    exe: [u8; 1024],
}

struct ScratchCell(std::cell::UnsafeCell<ProcScratch>);

// SAFETY: used only by the thread that set SCRATCH_BUSY from false to true, until it clears it.
unsafe impl Sync for ScratchCell {}

static SCRATCH: ScratchCell = ScratchCell(std::cell::UnsafeCell::new(ProcScratch {
    cmdline: [0; 4096],
    out: [0; 8192],
    exe: [0; 1024],
}));
static SCRATCH_BUSY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called first thing in a forked child, which has one thread: a scratch area the parent's
/// other threads held at fork time is free here.
pub fn forked() {
    SCRATCH_BUSY.store(false, Ordering::Relaxed);
}

/// Not the image's own start (a forked child, or a hook that ran before this library's
/// constructor): the kernel's copy of the arguments.
#[cold]
#[inline(never)]
fn process_started_from_proc(loaded: &Loaded) {
    if SCRATCH_BUSY.swap(true, Ordering::Acquire) {
        process_started_without_argv(loaded);
        return;
    }
    // SAFETY: SCRATCH_BUSY was false and is now ours (see ScratchCell).
    let scratch = unsafe { &mut *SCRATCH.0.get() };
    let cmd_len = read_proc(b"/proc/self/cmdline\0", &mut scratch.cmdline);
    let args = scratch.cmdline[..cmd_len]
        .strip_suffix(b"\0")
        .unwrap_or(&scratch.cmdline[..cmd_len]);
    send_process_record(
        loaded,
        &mut scratch.out,
        &mut scratch.exe,
        args.split(|&b| b == 0).filter(|_| cmd_len > 0),
    );
    SCRATCH_BUSY.store(false, Ordering::Release);
}

/// Another thread is building its record in the scratch area (two hooks racing before the
/// constructor): this one goes without its arguments, in a small frame of its own.
#[cold]
#[inline(never)]
fn process_started_without_argv(loaded: &Loaded) {
    let (mut out, mut exe) = ([0u8; 512], [0u8; 256]);
    send_process_record(loaded, &mut out, &mut exe, [&b"..."[..]].into_iter());
}

/// Formats this process's record into `out` and sends it. False, sending nothing, when the
/// arguments would have been cut short and `out` is smaller than the largest record.
fn send_process_record<'a>(
    loaded: &Loaded,
    out: &mut [u8],
    exe: &mut [u8],
    args: impl Iterator<Item = &'a [u8]>,
) -> bool {
    let full_size = out.len() >= 8192;
    let mut w = Buf::new(out);
    w.str("{\"type\":\"process\",");
    pid_ppid(&mut w);
    w.str(",\"exe\":");
    // SAFETY: exe is valid for writes of its length; readlink does not NUL-terminate.
    let exe_len = unsafe {
        libc::readlink(
            c"/proc/self/exe".as_ptr(),
            exe.as_mut_ptr().cast(),
            exe.len(),
        )
    }
    .max(0) as usize;
    w.json_str(&exe[..exe_len]);
    let complete = write_argv(&mut w, args, 300);
    if !complete && !full_size {
        return false;
    }
    if let Err(why) = loaded.policy {
        w.str(",\"policy_error\":");
        w.json_str(why.as_bytes());
    }
    w.str("}");
    if w.truncated() {
        return full_size;
    }
    check_in(loaded, w.as_bytes());
    true
}

/// Writes `,"argv":[...]`, ending the list with `"..."` where the next argument would leave
/// less than `reserve` bytes for what follows.
/// False when it had to cut the list.
fn write_argv<'a>(w: &mut Buf, args: impl Iterator<Item = &'a [u8]>, reserve: usize) -> bool {
    w.str(",\"argv\":[");
    for (i, arg) in args.enumerate() {
        if w.remaining() < arg.len() * 6 + reserve {
            w.str(if i > 0 { ",\"...\"" } else { "\"...\"" });
            w.str("]");
            return false;
        }
        if i > 0 {
            w.str(",");
        }
        w.json_str(arg);
    }
    w.str("]");
    true
}

/// Records one name lookup (`call` looked up `name`). Called before the lookup proceeds.
pub fn record_lookup(loaded: &Loaded, call: &'static str, name: &[u8], verdict: Verdict) {
    record(
        loaded,
        &Attempt {
            kind: Kind::Resolve,
            call,
            proto: None,
            dest: None,
            host: Some(name),
            verdict,
        },
    );
}

/// The identity of an attempt for folding: everything its report line is keyed on, as a few
/// whole words (this runs on every attempt).
fn key_of(loaded: &Loaded, a: &Attempt, outcome: &chain::Outcome) -> KeyHash {
    let mut k = KeyHash::new();
    if outcome.nested() {
        // Each level folds into its own counters; the other levels' decisions are part of
        // the line.
        k.word(loaded.level as u64);
        k.word(outcome.key());
    }
    let dest = a
        .dest
        .map(|(ip, port)| (egress_policy::canonical_ip(ip), port));
    let (family, port) = match dest {
        Some((IpAddr::V4(_), port)) => (4u64, u64::from(port)),
        Some((IpAddr::V6(_), port)) => (6, u64::from(port)),
        None => (0, 0),
    };
    let proto = a.proto.map_or(0, |p| p as u64 + 1);
    k.word(a.kind as u64 | proto << 8 | (loaded.mode() as u64) << 16 | family << 24 | port << 32);
    k.bytes(a.call.as_bytes());
    // A new test makes new lines (the launcher names their test); so does a new call site
    // (the line names its shared object).
    k.word(crate::scope::test_number());
    k.word(crate::caller::current() as u64);
    let py = crate::caller::with_py_caller(|py| {
        k.bytes(py);
    });
    k.word(u64::from(py.is_some()));
    match dest {
        Some((IpAddr::V4(v4), _)) => k.word(u64::from(u32::from(v4))),
        Some((IpAddr::V6(v6), _)) => {
            let bits = u128::from(v6);
            k.word(bits as u64);
            k.word((bits >> 64) as u64);
        }
        None => {}
    }
    match a.host {
        Some(h) => {
            k.word(1);
            k.bytes(h);
        }
        None => k.word(0),
    }
    match a.verdict {
        Verdict::Allow { rule } => k.word(1 << 62 | rule as u64),
        Verdict::Deny(reason) => k.word(2 << 62 | reason as u64),
        Verdict::PassThrough => k.word(3 << 62),
    }
    k
}

/// Records one attempt. Called before the attempt proceeds or is refused. A repeat of an
/// attempt already sent from this process is only counted, in shared memory. Returns the
/// shared counter that counts this attempt's repeats, when there is one.
pub fn record(loaded: &Loaded, a: &Attempt) -> Option<&'static AtomicU64> {
    if a.verdict == Verdict::PassThrough {
        return None;
    }
    let outcome = chain::now();
    if outcome.noted(loaded.level, a.verdict) {
        return None; // the dry pass of a nested check
    }
    crate::scope::note(loaded, a);
    loaded.locator?;
    let counters = loaded.counters();
    let folded = match counters {
        Some(counters) => fold::fold(counters, &key_of(loaded, a, &outcome)),
        None => Fold::Unfolded,
    };
    let slot = match folded {
        Fold::Counted(slot) => return counters?.counter(slot),
        Fold::New { entry, slot } => Some((entry, slot)),
        Fold::Unfolded => None,
    };
    send_attempt(loaded, a, slot, &outcome);
    counters?.counter(slot?.1)
}

/// The first attempt of its kind: format its line and send it. Kept out of `record` so that
/// the repeat path (a hash and an atomic add) does not pay for this function's buffer.
#[cold]
#[inline(never)]
fn send_attempt(
    loaded: &Loaded,
    a: &Attempt,
    slot: Option<(usize, u64)>,
    outcome: &chain::Outcome,
) {
    let mut out = [0u8; 2048];
    let mut w = Buf::new(&mut out);
    w.str("{\"type\":\"");
    w.str(a.kind.as_str());
    w.str("\",\"pid\":");
    // SAFETY: getpid has no preconditions.
    w.int(i64::from(unsafe { libc::getpid() }));
    w.str(",\"call\":\"");
    w.str(a.call);
    w.str("\"");
    if let Some(p) = a.proto {
        w.str(",\"proto\":\"");
        w.str(p.as_str());
        w.str("\"");
    }
    if let Some((ip, port)) = a.dest {
        w.str(",\"addr\":\"");
        w.ip(egress_policy::canonical_ip(ip));
        w.str("\",\"port\":");
        w.uint(u64::from(port));
    }
    w.str(",\"host\":");
    match a.host {
        Some(h) => w.json_str(&h[..h.len().min(255)]),
        None => w.str("null"),
    }
    match a.verdict {
        Verdict::Allow { rule } => {
            w.str(",\"decision\":\"allow\",\"rule\":");
            w.uint(rule as u64);
        }
        Verdict::Deny(reason) => {
            w.str(",\"decision\":\"deny\",\"rule\":null,\"reason\":\"");
            w.str(reason.as_str());
            w.str("\"");
        }
        Verdict::PassThrough => return,
    }
    w.str(match loaded.mode() {
        egress_policy::Mode::Block => ",\"enforced\":true",
        egress_policy::Mode::Audit => ",\"enforced\":false",
    });
    if outcome.nested() {
        write_chain(&mut w, outcome);
    }
    let mut name = [0u8; 128];
    if let Some(n) = crate::caller::name_of(crate::caller::current(), &mut name) {
        w.str(",\"caller\":");
        w.json_str(&name[..n]);
    }
    crate::caller::with_py_caller(|py| {
        w.str(",\"py_caller\":");
        w.json_str(py);
    });
    let test = crate::scope::test_number();
    if test != 0 {
        // Tells this test's lines from the same attempt's lines in an earlier test.
        w.str(",\"test_number\":");
        w.uint(test);
    }
    if let Some((_, slot)) = slot {
        w.str(",\"slot\":");
        w.uint(slot);
    }
    w.str("}");
    if !w.truncated() {
        send(loaded, w.as_bytes());
    }
    if let Some((entry, slot)) = slot {
        // Only now may other attempts count into the slot: its line exists at the launcher.
        fold::publish(entry, slot);
    }
}

/// Writes `,"denied_by":PID` (the launcher of the level that refused the call, if one did) and
/// `,"chain":[...]` (every level's decision, innermost first).
fn write_chain(w: &mut Buf, outcome: &chain::Outcome) {
    let levels = crate::state::levels();
    let run = |l: &Loaded| l.locator.map_or(0, |loc| u64::from(loc.launcher_pid));
    if let Some(l) = outcome.refused_by().and_then(|i| levels.get(i)) {
        w.str(",\"denied_by\":");
        w.uint(run(l));
    }
    w.str(",\"chain\":[");
    for (i, l) in levels.iter().enumerate() {
        w.str(if i > 0 { ",{\"run\":" } else { "{\"run\":" });
        w.uint(run(l));
        w.str(",\"decision\":");
        match outcome.decision(l.level) {
            Some(d) => {
                w.str("\"");
                w.str(d);
                w.str("\"");
            }
            None => w.str("null"),
        }
        w.str(if l.mode() == egress_policy::Mode::Block {
            ",\"enforced\":true}"
        } else {
            ",\"enforced\":false}"
        });
    }
    w.str("]");
}

/// Records a program the library cannot enter, before `exec` (or after `posix_spawn`, when its
/// pid is known; 0 when it was refused and never started).
///
/// # Safety
/// `argv` must be null or a NULL-terminated array of NUL-terminated strings.
pub unsafe fn unguarded(
    loaded: &Loaded,
    pid: i32,
    exe: &[u8],
    argv: *const *const libc::c_char,
    reason: &str,
    refused: bool,
) {
    let tail = if refused {
        ",\"guarded\":false,\"refused\":true}"
    } else {
        ",\"guarded\":false,\"refused\":false}"
    };
    // SAFETY: as the caller promises.
    unsafe { other_program(loaded, pid, exe, argv, reason, tail) }
}

/// Records a program the library cannot enter that this process execs under the kernel
/// layer (`reason`: why the library cannot enter it).
///
/// # Safety
/// As for `unguarded`.
pub unsafe fn kernel_layer(
    loaded: &Loaded,
    pid: i32,
    exe: &[u8],
    argv: *const *const libc::c_char,
    reason: &str,
) {
    // SAFETY: as the caller promises.
    unsafe {
        other_program(
            loaded,
            pid,
            exe,
            argv,
            reason,
            ",\"guarded\":true,\"layer\":\"kernel\"}",
        )
    }
}

/// A process line for a program the library will not be in; `tail` ends the object.
///
/// # Safety
/// As for `unguarded`.
unsafe fn other_program(
    loaded: &Loaded,
    pid: i32,
    exe: &[u8],
    argv: *const *const libc::c_char,
    reason: &str,
    tail: &str,
) {
    if loaded.locator.is_none() {
        return;
    }
    if chain::now().dry() {
        return; // decided again, and recorded, in the recording pass
    }
    // Off the stack (exec hooks run on small thread and signal stacks); without memory for
    // it, a short record in a small frame (its argv cut to "...").
    let mut scratch = crate::scratch::Scratch::<[u8; 8192]>::new();
    let mut small = [0u8; 768];
    let out: &mut [u8] = match scratch.as_mut() {
        Some(s) => &mut s[..],
        None => &mut small,
    };
    let mut w = Buf::new(out);
    w.str("{\"type\":\"process\",\"pid\":");
    // SAFETY: getpid/getppid have no preconditions.
    let (me, parent) = unsafe { (libc::getpid(), libc::getppid()) };
    // An exec keeps the pid: the program runs as this process. A spawned child's parent is us.
    let (pid, ppid) = if pid == me { (me, parent) } else { (pid, me) };
    w.int(i64::from(pid));
    w.str(",\"ppid\":");
    w.int(i64::from(ppid));
    w.str(",\"exe\":");
    w.json_str(exe);
    // SAFETY: the caller passes null or a NULL-terminated array of NUL-terminated strings.
    write_argv(&mut w, unsafe { c_strings(argv) }, 400);
    w.str(",\"reason\":");
    w.json_str(reason.as_bytes());
    w.str(tail);
    if !w.truncated() {
        send(loaded, w.as_bytes());
    }
}
