//! Obtaining the policy, once per process image, without allocation or locks.
//!
//! The sealed memfd is mapped read-only and never unmapped, so the `PolicyView` built over it is
//! valid for the life of the process (and of forked children, which inherit the mapping).
//!
//! Inside a nested run the locator names one policy per level (`<inner>;<outer>`): each is a
//! `Loaded` of its own, with its own event socket and counters, and an attempt passes only if
//! every level allows it (`hooks::check_with`).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use egress_policy::{DenyAs, Locator, Mode, PolicyView, CHAIN_SEP, MAX_LEVELS, POLICY_ENV};

use crate::policy_request::Failure;
use crate::{channel, real};

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

/// This process's mapping of the launcher's shared attempt counters.
#[derive(Clone, Copy)]
pub struct CounterMap {
    base: usize,
    slots: u64,
    /// The check-in area after the slots (`egress_policy::event::CHECKIN_LEN` bytes), or 0
    /// when the launcher made none.
    checkin: usize,
}

impl CounterMap {
    fn slot(&self, i: u64) -> &'static AtomicU64 {
        // SAFETY: i < slots (callers check); the mapping is slots*8 bytes, 8-aligned, shared,
        // never unmapped; AtomicU64 has u64's layout and every writer uses atomics.
        unsafe { &*(self.base as *const AtomicU64).add(i as usize) }
    }

    /// A fresh slot (slot 0 holds the next free index), or None when all are taken.
    pub fn allocate(&self) -> Option<u64> {
        let slot = self.slot(0).fetch_add(1, Ordering::AcqRel) + 1;
        (slot < self.slots).then_some(slot)
    }

    /// The shared counter of `slot`, for a caller that will count into it directly.
    pub fn counter(&self, slot: u64) -> Option<&'static AtomicU64> {
        (slot > 0 && slot < self.slots).then(|| self.slot(slot))
    }

    pub fn add(&self, slot: u64) {
        if slot > 0 && slot < self.slots {
            self.slot(slot).fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the launcher said its run ended normally (the check-in area's second word).
    pub fn run_ended(&self) -> bool {
        if self.checkin == 0 {
            return false;
        }
        // SAFETY: the area's second word (8-aligned), shared, never unmapped; the launcher
        // stores it atomically.
        unsafe { (*((self.checkin + 8) as *const AtomicU64)).load(Ordering::Acquire) != 0 }
    }

    /// Writes `body` (a `process` record) into the check-in area; false when there is no
    /// area or no room left in it (then it is sent as a datagram).
    pub fn check_in(&self, body: &[u8]) -> bool {
        use egress_policy::event::{checkin_span, CHECKIN_LEN, CHECKIN_MAGIC};
        if self.checkin == 0 || body.len() > u32::MAX as usize {
            return false;
        }
        // SAFETY: the area starts 64-aligned (a page boundary) and is CHECKIN_LEN bytes,
        // shared and never unmapped; its first word is the launcher's `next` offset, updated
        // only atomically.
        let next = unsafe { &*(self.checkin as *const AtomicU64) };
        let span = checkin_span(body.len());
        let at = next.fetch_add(span, Ordering::AcqRel);
        if at < egress_policy::event::CHECKIN_ALIGN || at.saturating_add(span) > CHECKIN_LEN {
            return false; // full (or never set up by the launcher)
        }
        let record = self.checkin + at as usize;
        // SAFETY: [record, record + span) lies in the area (checked above) and was reserved
        // for us alone by the atomic add; the body goes after the 8-byte header, which is
        // 8-aligned (records are 64-aligned) and published last, with release ordering.
        unsafe {
            std::ptr::copy_nonoverlapping(body.as_ptr(), (record + 8) as *mut u8, body.len());
            (*(record as *const AtomicU64))
                .store(CHECKIN_MAGIC | (body.len() as u64) << 32, Ordering::Release);
        }
        true
    }
}

/// What this process knows about the policy of one level of its run.
#[derive(Clone, Copy)]
pub struct Loaded {
    pub locator: Option<Locator>,
    /// The policy, or why there is none (then every attempt is denied: fail closed).
    pub policy: Result<PolicyView<'static>, &'static str>,
    /// 0 for the run nearest to this process; outer runs of a nested run follow.
    pub level: usize,
}

impl Loaded {
    pub fn mode(&self) -> Mode {
        match &self.policy {
            Ok(view) => view.mode(),
            Err(_) => Mode::Block,
        }
    }

    /// Whether this level refuses an attempt with `verdict`: a denial in block mode, and in
    /// block mode anything at all once the launcher was killed before its run ended (nobody
    /// would record it; docs/threat-model.md, *The event channel*).
    pub fn refuses(&self, verdict: crate::verdict::Verdict) -> bool {
        verdict.refuses(self.mode())
            || (self.mode() == Mode::Block
                && matches!(verdict, crate::verdict::Verdict::Allow { .. })
                && crate::channel::lost(self.level))
    }

    /// How refusals look. Without a policy (fail closed) the default: nothing says otherwise.
    pub fn deny_as(&self) -> DenyAs {
        match &self.policy {
            Ok(view) => view.deny_as(),
            Err(_) => DenyAs::default(),
        }
    }

    /// The launcher's shared counters, mapped on first use: most processes (a shell's
    /// utilities) never attempt anything, and the mapping cost every exec two system calls
    /// and an unmapping at exit. None (mapping failed, or another thread is mapping them right
    /// now): the attempt is sent as its own event, which the launcher counts as 1.
    pub fn counters(&self) -> Option<CounterMap> {
        let (state, base, slots) = (
            &COUNTERS_STATE[self.level],
            &COUNTERS_BASE[self.level],
            &COUNTERS_SLOTS[self.level],
        );
        match state.load(Ordering::Acquire) {
            MAPPED => {
                return Some(CounterMap {
                    base: base.load(Ordering::Relaxed),
                    slots: slots.load(Ordering::Relaxed),
                    checkin: COUNTERS_CHECKIN[self.level].load(Ordering::Relaxed),
                })
            }
            UNTRIED => {}
            _ => return None,
        }
        if state
            .compare_exchange(UNTRIED, MAPPING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        let mapped = match (self.locator, self.policy) {
            (Some(loc), Ok(view)) => map_counters(&loc, view, self.level),
            _ => None,
        };
        let Some(map) = mapped else {
            state.store(FAILED, Ordering::Release);
            return None;
        };
        base.store(map.base, Ordering::Relaxed);
        slots.store(map.slots, Ordering::Relaxed);
        COUNTERS_CHECKIN[self.level].store(map.checkin, Ordering::Relaxed);
        state.store(MAPPED, Ordering::Release);
        Some(map)
    }
}

const UNTRIED: u8 = 0;
const MAPPING: u8 = 1;
const MAPPED: u8 = 2;
const FAILED: u8 = 3;

/// Each level's counters mapping, published by COUNTERS_STATE (Release after the two stores).
/// A forked child inherits both the mapping (shared) and these values.
static COUNTERS_STATE: [AtomicU8; MAX_LEVELS] = [const { AtomicU8::new(UNTRIED) }; MAX_LEVELS];
static COUNTERS_BASE: [AtomicUsize; MAX_LEVELS] = [const { AtomicUsize::new(0) }; MAX_LEVELS];
static COUNTERS_SLOTS: [AtomicU64; MAX_LEVELS] = [const { AtomicU64::new(0) }; MAX_LEVELS];
static COUNTERS_CHECKIN: [AtomicUsize; MAX_LEVELS] = [const { AtomicUsize::new(0) }; MAX_LEVELS];

/// Every level's state, innermost first, and how many there are.
struct Levels {
    loaded: [Loaded; MAX_LEVELS],
    count: usize,
}

struct Slot(UnsafeCell<Levels>);

// SAFETY: the slot is written only by the one thread that moved STATE from UNINIT to BUSY, and
// read only after STATE is READY (release/acquire), after which it never changes.
unsafe impl Sync for Slot {}

/// What exec hooks put back into a scrubbed environment: this library's path and the policy
/// locator, saved at initialisation.
pub struct ExecEnv {
    lib: [u8; 1024],
    lib_len: usize,
    policy: [u8; 1024],
    policy_len: usize,
}

impl ExecEnv {
    pub fn library(&self) -> &[u8] {
        &self.lib[..self.lib_len]
    }

    /// The `EGRESS_RUN_POLICY` value (every level), empty when this process had none.
    pub fn policy(&self) -> &[u8] {
        &self.policy[..self.policy_len]
    }
}

struct EnvSlot(UnsafeCell<ExecEnv>);

// SAFETY: as for `Slot`: written once by the initialising thread before READY is published.
unsafe impl Sync for EnvSlot {}

static EXEC_ENV: EnvSlot = EnvSlot(UnsafeCell::new(ExecEnv {
    lib: [0; 1024],
    lib_len: 0,
    policy: [0; 1024],
    policy_len: 0,
}));

/// The environment exec hooks restore, once initialisation has finished.
pub fn exec_env() -> Option<&'static ExecEnv> {
    // SAFETY: READY observed with Acquire; the slot is written and immutable.
    (STATE.load(Ordering::Acquire) == READY).then(|| unsafe { &*EXEC_ENV.0.get() })
}

/// Fills EXEC_ENV. Called only by the initialising thread, before READY.
fn save_exec_env() {
    // SAFETY: the initialising thread owns EXEC_ENV until READY (see EnvSlot).
    let env = unsafe { &mut *EXEC_ENV.0.get() };
    // SAFETY: dladdr on the address of one of our own functions fills `info` with this
    // library's file name (a NUL-terminated string owned by the loader).
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(save_exec_env as *const libc::c_void, &mut info) != 0
            && !info.dli_fname.is_null()
        {
            let name = std::ffi::CStr::from_ptr(info.dli_fname).to_bytes();
            if name.starts_with(b"/") && name.len() <= env.lib.len() {
                env.lib[..name.len()].copy_from_slice(name);
                env.lib_len = name.len();
            }
        }
    }
    if let Some(value) = getenv_bytes() {
        if value.len() <= env.policy.len() {
            env.policy[..value.len()].copy_from_slice(value);
            env.policy_len = value.len();
        }
    }
}

fn getenv_bytes() -> Option<&'static [u8]> {
    // SAFETY: POLICY_ENV has no NUL; getenv neither allocates nor locks in glibc and returns
    // a pointer into the environment.
    let value = unsafe {
        let mut name = [0u8; 32];
        name[..POLICY_ENV.len()].copy_from_slice(POLICY_ENV.as_bytes());
        libc::getenv(name.as_ptr().cast())
    };
    if value.is_null() {
        // Before libc's own initialisation (a hook called from .preinit_array) getenv sees no
        // environment yet: read the process's initial environment from the kernel instead.
        return initial_environment_value();
    }
    // SAFETY: getenv returned a NUL-terminated string that lives in the environment.
    Some(unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes())
}

/// Scratch space for reading /proc/self/environ, used only by the initialising thread.
struct Scratch(UnsafeCell<[u8; 1 << 18]>);

// SAFETY: only the thread that moved STATE from UNINIT to BUSY touches it (see `Slot`), and
// what it returns is copied before READY is published... except that the returned slice is
// read again by `load` in the same initialisation, still before READY.
unsafe impl Sync for Scratch {}

static SCRATCH: Scratch = Scratch(UnsafeCell::new([0; 1 << 18]));

/// `EGRESS_RUN_POLICY`'s value in /proc/self/environ (the environment the process started
/// with), if it fits the scratch buffer.
fn initial_environment_value() -> Option<&'static [u8]> {
    // SAFETY: the initialising thread owns SCRATCH (see `Scratch`).
    let buf = unsafe { &mut *SCRATCH.0.get() };
    // SAFETY: a NUL-terminated path; open/read/close are not hooked.
    let fd = unsafe {
        libc::open(
            c"/proc/self/environ".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reading into the unused tail of buf.
        let n = unsafe { libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    let key_len = POLICY_ENV.len();
    buf[..len]
        .split(|&b| b == 0)
        .find(|e| e.len() > key_len && e.starts_with(POLICY_ENV.as_bytes()) && e[key_len] == b'=')
        .map(|e| &e[key_len + 1..])
}

/// The argument vector the loader gave this library's constructor, and the process it belongs
/// to: the check-in reads it instead of /proc/self/cmdline (four system calls fewer per exec).
static STARTUP_ARGV: AtomicPtr<*const libc::c_char> = AtomicPtr::new(std::ptr::null_mut());
static STARTUP_PID: AtomicI32 = AtomicI32::new(0);

/// Called by the constructor with the arguments glibc passes to `.init_array` functions.
pub fn note_startup_argv(argv: *const *const libc::c_char) {
    STARTUP_PID.store(pid(), Ordering::Relaxed);
    STARTUP_ARGV.store(argv.cast_mut(), Ordering::Release);
}

/// The loader's argv if this process is the one whose constructor saw it, else null (a forked
/// child, whose arguments may have been rewritten, reads the kernel's copy instead).
pub fn startup_argv() -> *const *const libc::c_char {
    let argv = STARTUP_ARGV.load(Ordering::Acquire);
    if argv.is_null() || STARTUP_PID.load(Ordering::Relaxed) != pid() {
        return std::ptr::null();
    }
    argv
}

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static INIT_PID: AtomicI32 = AtomicI32::new(0);
static SLOT: Slot = Slot(UnsafeCell::new(Levels {
    loaded: [NO_STATE; MAX_LEVELS],
    count: 0,
}));

fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The policy state of the nearest run, initialising every level on first use. A reference:
/// hooks read a few fields of it on every call, and copying the whole state showed up in the
/// per-call profile.
pub fn ensure_init() -> &'static Loaded {
    loop {
        match STATE.compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                INIT_PID.store(pid(), Ordering::Relaxed);
                real::resolve_all();
                save_exec_env();
                // SAFETY: we own the slot until READY is published (see `Slot`).
                load(unsafe { &mut *SLOT.0.get() });
                STATE.store(READY, Ordering::Release);
                // --seccomp: the stub the filter lets the library's decided calls through.
                if let Some(loc) = levels().iter().find_map(|l| match (l.locator, l.policy) {
                    (Some(loc), Ok(view)) if view.seccomp() => Some(loc),
                    _ => None,
                }) {
                    crate::kernel::map_stub(&loc);
                }
                for loaded in levels() {
                    channel::process_started(loaded);
                }
                register_fork_handler();
                return &levels()[0];
            }
            Err(READY) => return &levels()[0],
            Err(_) => {
                // Another thread is initialising. If it was our parent's thread at fork time,
                // it does not exist here: take the initialisation over.
                if INIT_PID.load(Ordering::Relaxed) != pid() {
                    let _ =
                        STATE.compare_exchange(BUSY, UNINIT, Ordering::AcqRel, Ordering::Relaxed);
                }
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }
}

fn register_fork_handler() {
    extern "C" fn child_after_fork() {
        // The parent's folded attempts are the parent's: this process starts its own lines.
        channel::forked();
        crate::scope::forked_child();
        crate::guard::with_guard(
            || (),
            || {
                if current().is_some() {
                    for loaded in levels() {
                        channel::process_started(loaded);
                    }
                }
            },
        );
    }
    // SAFETY: registering a plain function as the child handler; it only sends one datagram
    // from a stack buffer, which is async-signal-safe as fork's child handlers must be.
    unsafe { libc::pthread_atfork(None, None, Some(child_after_fork)) };
}

/// The nearest run's policy state if initialisation has finished.
pub fn current() -> Option<&'static Loaded> {
    (STATE.load(Ordering::Acquire) == READY).then(|| &levels()[0])
}

/// Every level's state, innermost first (at least one); empty before initialisation finished.
pub fn levels() -> &'static [Loaded] {
    if STATE.load(Ordering::Acquire) != READY {
        return &[];
    }
    // SAFETY: READY observed with Acquire; the slot is written and immutable.
    let levels = unsafe { &*SLOT.0.get() };
    &levels.loaded[..levels.count.clamp(1, MAX_LEVELS)]
}

/// How this process's refusals look; the default until the policy is loaded (a call refused
/// while this thread initialises) or when there is none.
pub fn deny_as() -> DenyAs {
    current().map_or(DenyAs::default(), Loaded::deny_as)
}

/// What a level holds before `load` fills it.
const NO_STATE: Loaded = Loaded {
    locator: None,
    policy: Err("policy state missing"),
    level: 0,
};

/// Fills `levels` from the locator chain, innermost first. A chain longer than MAX_LEVELS keeps
/// its outer levels and puts in front of them one level that denies everything.
fn load(levels: &mut Levels) {
    let Some(bytes) = getenv_bytes() else {
        levels.loaded[0] = Loaded {
            policy: Err("EGRESS_RUN_POLICY is not set (environment scrubbed?)"),
            ..NO_STATE
        };
        levels.count = 1;
        return;
    };
    let total = bytes.split(|&b| b == CHAIN_SEP).count();
    let mut parts = bytes.split(|&b| b == CHAIN_SEP);
    let mut next = 0;
    if total > MAX_LEVELS {
        levels.loaded[0] = Loaded {
            policy: Err("too many nested egress-run levels"),
            ..NO_STATE
        };
        next = 1;
        for _ in 0..total - (MAX_LEVELS - 1) {
            parts.next();
        }
    }
    for part in parts {
        let (loaded, held) = load_level(part);
        levels.loaded[next] = Loaded {
            level: next,
            ..loaded
        };
        HELD[next].store(held, Ordering::Relaxed);
        next += 1;
    }
    levels.count = next;
}

/// One level's state from its locator. The policy is obtained, in this order, from the
/// inherited descriptor, from `/proc/<launcher>/fd/N`, or from the launcher's policy service;
/// a copy obtained the second or third way is kept at the locator's number for this process's
/// children (`keep`). Whatever the source, it is used only if it is that sealed policy.
/// Also returns the descriptor that holds the policy at the locator's number afterwards (-1:
/// none), which `close_range` leaves open.
fn load_level(bytes: &[u8]) -> (Loaded, i32) {
    let Some(locator) = Locator::parse(bytes) else {
        let loaded = Loaded {
            locator: None,
            policy: Err("EGRESS_RUN_POLICY is malformed"),
            level: 0,
        };
        return (loaded, -1);
    };
    let (policy, held) = match identify(locator.fd, &locator) {
        Ok(len) => {
            let policy = map_fd(locator.fd, len);
            let held = if policy.is_ok() { locator.fd } else { -1 };
            (policy, held)
        }
        // The inherited number was closed or reused: the launcher's copy.
        Err(_) => recover(&locator),
    };
    let loaded = Loaded {
        locator: Some(locator),
        policy,
        level: 0,
    };
    (loaded, held)
}

/// Each level's policy descriptor at its locator's number, once verified (inherited, or a
/// kept copy); -1 for none. Written by the initialising thread before READY.
static HELD: [AtomicI32; MAX_LEVELS] = [const { AtomicI32::new(-1) }; MAX_LEVELS];

/// Each level's counters descriptor at its own number, once mapped from it; -1 for none.
static HELD_COUNTERS: [AtomicI32; MAX_LEVELS] = [const { AtomicI32::new(-1) }; MAX_LEVELS];

/// How many descriptors `held_policy_fds` may return: a policy and a counters file per level.
pub const MAX_HELD: usize = 2 * MAX_LEVELS;

/// The descriptors in `first..=last` that still hold a level's policy at its locator's number,
/// ascending, into `out`; returns how many. `close_range` leaves them open so that the
/// children of a program that closes every inherited descriptor (Python's `close_fds=True`,
/// in the child before exec) still find their policy where the locator says, with no /proc
/// and no launcher needed: the guard's descriptor, not the program's. Checked now (inode),
/// because the program may have closed it and reused the number since.
pub fn held_policy_fds(first: u32, last: u32, out: &mut [libc::c_int; MAX_HELD]) -> usize {
    let mut n = 0;
    for (i, loaded) in levels().iter().enumerate() {
        let Some(loc) = loaded.locator else { continue };
        let counters = loaded.policy.ok().and_then(|view| view.counters());
        let counters_loc = counters.map(|c| Locator {
            fd: c.fd,
            ino: c.ino,
            ..loc
        });
        let candidates = [
            (HELD[i].load(Ordering::Relaxed), Some(loc)),
            (HELD_COUNTERS[i].load(Ordering::Relaxed), counters_loc),
        ];
        for (fd, want) in candidates {
            let Some(want) = want else { continue };
            let within = u32::try_from(fd).is_ok_and(|f| f >= first && f <= last);
            if within && n < MAX_HELD && !out[..n].contains(&fd) && identify(fd, &want).is_ok() {
                out[n] = fd;
                n += 1;
            }
        }
    }
    out[..n].sort_unstable();
    n
}

/// The policy from the launcher's own descriptor, through /proc, else from its policy
/// service; the copy is kept for children when it is the policy.
fn recover(loc: &Locator) -> (Result<PolicyView<'static>, &'static str>, i32) {
    let proc_failure = match open_launcher_copy(loc, libc::O_RDONLY) {
        Some(fd) => match verify_and_keep(fd, loc) {
            Ok((view, held)) => return (Ok(view), held),
            Err(e) => Some(e),
        },
        None => None,
    };
    let failure = match crate::policy_request::request(loc) {
        Ok(fd) => match verify_and_keep(fd, loc) {
            Ok((view, held)) => return (Ok(view), held),
            Err(e) => e,
        },
        // /proc gave a file that is not the policy: say what was wrong with it.
        Err(_) if proc_failure.is_some() => proc_failure.unwrap_or(NOT_RECOVERED),
        Err(Failure::Unreachable) => NOT_RECOVERED,
        Err(Failure::Refused) => {
            "policy descriptor is missing or reused, /proc/<launcher>/fd cannot be opened here, \
             and the launcher refused it as outside its process tree: reparented away from it?"
        }
        Err(Failure::NoAnswer) => {
            "policy descriptor is missing or reused, /proc/<launcher>/fd cannot be opened here, \
             and the launcher's policy service sent no policy"
        }
    };
    (Err(failure), -1)
}

/// Why a process whose descriptor was closed found no copy, when the launcher does not answer.
const NOT_RECOVERED: &str = "policy descriptor is missing or reused, /proc/<launcher>/fd cannot \
     be opened here, and the launcher does not answer: has egress-run exited?";

/// Maps `fd` (ours, obtained from the launcher) if it is the policy, and keeps it (returning
/// the policy and the number it is held at, -1 for none); else closes it.
fn verify_and_keep(fd: i32, loc: &Locator) -> Result<(PolicyView<'static>, i32), &'static str> {
    match identify(fd, loc).and_then(|len| map_fd(fd, len)) {
        Ok(view) => Ok((view, keep(fd, loc))),
        Err(e) => {
            crate::highfd::close(fd);
            Err(e)
        }
    }
}

/// Hands a verified copy on: moved to the locator's own number, inheritable, so that this
/// process's children find it where an inherited descriptor would be, with no /proc and no
/// launcher needed (after a uid change, in another PID namespace, after the launcher exited).
/// Where the program holds that number, the copy is closed: children then obtain the policy
/// as this process did. Returns the number it is held at, or -1.
fn keep(fd: i32, loc: &Locator) -> i32 {
    if fd == loc.fd {
        // SAFETY: F_SETFD with an int on our descriptor: inheritable from now on.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        return fd;
    }
    let mut held = -1;
    if loc.fd >= 0 {
        // SAFETY: F_DUPFD (no FD_CLOEXEC) with an int on our descriptor: the lowest free
        // number at or above the locator's.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD, loc.fd) };
        if copy == loc.fd {
            held = copy;
        } else if copy >= 0 {
            crate::highfd::close(copy);
        }
    }
    crate::highfd::close(fd);
    held
}

/// Maps the launcher's shared counters if `fd` (or the launcher's own copy) is that memfd.
fn map_counters(loc: &Locator, view: PolicyView<'static>, level: usize) -> Option<CounterMap> {
    let c = view.counters()?;
    let copy = Locator {
        fd: c.fd,
        ino: c.ino,
        ..*loc
    };
    let try_map = |fd: i32| -> Option<CounterMap> {
        // SAFETY: an all-zero stat is valid to overwrite; fstat writes it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if fd < 0 {
            return None;
        }
        // SAFETY: st is writable.
        let stat_ok = unsafe { libc::fstat(fd, &mut st) } == 0;
        if !stat_ok || st.st_ino != c.ino || st.st_dev != loc.dev {
            return None;
        }
        let slots_len = usize::try_from(c.slots.checked_mul(8)?).ok()?;
        if (st.st_size as u64) < slots_len as u64 {
            return None;
        }
        // The check-in area follows the slots when the launcher made the file that long.
        let with_area = slots_len as u64 + egress_policy::event::CHECKIN_LEN;
        let has_area = st.st_size as u64 >= with_area;
        let len = if has_area {
            usize::try_from(with_area).ok()?
        } else {
            slots_len
        };
        // SAFETY: mapping the verified counters memfd, shared and read-write, checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        (p != libc::MAP_FAILED).then_some(CounterMap {
            base: p as usize,
            slots: c.slots,
            checkin: if has_area { p as usize + slots_len } else { 0 },
        })
    };
    let hold = |fd: i32| {
        if let Some(slot) = HELD_COUNTERS.get(level) {
            slot.store(fd, Ordering::Relaxed);
        }
    };
    if let Some(map) = try_map(c.fd) {
        hold(c.fd);
        return Some(map);
    }
    let fd = open_launcher_copy(&copy, libc::O_RDWR)?;
    let mapped = try_map(fd);
    // Kept at its own number like the policy (keep): a child started once the launcher is
    // gone still learns from the shared area whether the run ended normally.
    let held = if mapped.is_some() {
        keep(fd, &copy)
    } else {
        -1
    };
    if held >= 0 {
        hold(held);
    } else if mapped.is_none() {
        crate::highfd::close(fd);
    }
    mapped
}

/// Opens the launcher's own descriptor `loc.fd` through /proc, with `access` (O_RDONLY...).
fn open_launcher_copy(loc: &Locator, access: libc::c_int) -> Option<i32> {
    let mut path = [0u8; 64];
    let mut w = crate::fmt::Buf::new(&mut path[..]);
    w.str("/proc/");
    w.uint(u64::from(loc.launcher_pid));
    w.str("/fd/");
    w.uint(loc.fd.max(0) as u64);
    w.bytes(b"\0");
    if w.truncated() {
        return None;
    }
    // SAFETY: path is NUL-terminated; open is not hooked.
    let fd = unsafe { libc::open(path.as_ptr().cast(), access | libc::O_CLOEXEC) };
    (fd >= 0).then_some(fd)
}

const REQUIRED_SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// The size of `fd` if it is the locator's file (same device and inode), else why not.
fn identify(fd: i32, loc: &Locator) -> Result<usize, &'static str> {
    if fd < 0 {
        return Err("policy descriptor is missing");
    }
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is valid for writes.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err("policy descriptor is missing (closed)");
    }
    if st.st_dev != loc.dev || st.st_ino != loc.ino {
        return Err("policy descriptor was closed and its number reused for another file");
    }
    Ok(st.st_size as usize)
}

/// Maps `fd`, the locator's file of `len` bytes, if, and only if, it is the launcher's sealed
/// policy.
fn map_fd(fd: i32, len: usize) -> Result<PolicyView<'static>, &'static str> {
    // SAFETY: F_GET_SEALS takes no argument.
    let seals = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if seals < 0 || seals & REQUIRED_SEALS != REQUIRED_SEALS {
        return Err("policy descriptor is not sealed");
    }
    if len == 0 || len > egress_policy::wire::MAX_POLICY_LEN {
        return Err("policy is empty or too large");
    }
    // MAP_POPULATE: parsing reads every page of the policy, and filling the page table in one
    // call costs far less than a fault per page (a 10,000-rule policy is ~170 pages).
    // SAFETY: mapping a sealed, read-only file of `len` bytes; the result is checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_POPULATE,
            fd,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err("policy could not be mapped");
    }
    // SAFETY: the mapping is len bytes, readable, never unmapped, and cannot change (the file
    // is sealed against writes, shrinking and growing).
    let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    PolicyView::parse(bytes).map_err(|e| e.as_str())
}
