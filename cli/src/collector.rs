//! Receiving events from the guarded tree, folding identical attempts, and telling the user
//! about denials as they happen.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::rc::Rc;

use egress_policy::event::{self, CHECKIN_ALIGN};
use egress_policy::wire::EVENT_KEY_LEN;
use egress_policy::{suggest_rule, Locator, Mode};
use serde::Deserialize;

use crate::handover::SharedCounters;
use crate::report::{AttemptLine, ChainLevel, Journal, Line, ProcessLine};
use crate::spawn::{self, Signals};
use crate::Fatal;

/// One event as the library sends it.
#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Wire {
    Process {
        pid: i32,
        ppid: i32,
        exe: String,
        argv: Vec<String>,
        policy_error: Option<String>,
        #[serde(default = "yes")]
        guarded: bool,
        reason: Option<String>,
        #[serde(default)]
        refused: bool,
        /// `kernel`: a process the library cannot enter, put under the kernel layer.
        layer: Option<String>,
    },
    Connect(WireAttempt),
    Send(WireAttempt),
    Resolve(WireAttempt),
    /// A process set its current test (`egress_run_v1_set_test`); null: none.
    Test {
        pid: i32,
        test: Option<String>,
        /// The process's number for this test, which its attempts carry (`test_number`).
        number: Option<u64>,
    },
    End {
        nonce: u64,
    },
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Debug)]
struct WireAttempt {
    pid: i32,
    call: String,
    proto: Option<String>,
    addr: Option<String>,
    port: Option<u16>,
    host: Option<String>,
    decision: String,
    rule: Option<usize>,
    reason: Option<String>,
    enforced: bool,
    /// The shared counter slot that counts this attempt's repeats in that process.
    slot: Option<u64>,
    /// The shared object whose code made the call, when not the program.
    caller: Option<String>,
    /// The Python code that made the call (set by the Python package).
    py_caller: Option<String>,
    denied_by: Option<u32>,
    chain: Option<Vec<ChainLevel>>,
    /// The process's test when it made the attempt (its own number, see `Wire::Test`).
    test_number: Option<u64>,
    /// `kernel` from the kernel layer's supervisor; the library sends none.
    layer: Option<String>,
}

/// `kernel` for the kernel layer's lines, `library` for the rest.
fn layer_name(layer: Option<&str>) -> &'static str {
    match layer {
        Some("kernel") => "kernel",
        _ => "library",
    }
}

/// Identical attempts fold into one line.
#[derive(Clone, Hash, PartialEq, Eq)]
struct FoldKey {
    kind: &'static str,
    pid: i32,
    call: String,
    proto: Option<String>,
    addr: Option<String>,
    port: Option<u16>,
    host: Option<String>,
    decision: String,
    rule: Option<usize>,
    enforced: bool,
    denied_by: Option<u32>,
    chain: Option<Vec<ChainLevel>>,
    test: Option<String>,
    caller: Option<String>,
    py_caller: Option<String>,
    /// A scope's denial and a run's denial of one destination are two lines.
    reason: Option<String>,
    layer: &'static str,
}

/// One stderr line per process and destination: (pid, kind, addr, port, host).
type WarnKey = (
    i32,
    &'static str,
    Option<String>,
    Option<u16>,
    Option<String>,
);

pub struct Collector {
    mode: Mode,
    rules: Vec<String>,
    quiet: bool,
    /// Every line so far, with its count as known now (the summary is computed from them).
    pub lines: Vec<Line>,
    /// The report file: each line is appended as soon as it is known.
    journal: Journal,
    /// For each line, the count the report file already holds for it (0 for process lines).
    written: Vec<u64>,
    /// Datagrams dropped: not framed as events, or without this run's event key.
    pub rejected: u64,
    /// The shared counters and check-in area (none before `attach`).
    shared: Option<Rc<SharedCounters>>,
    /// Where the next check-in record to read is, and since when it is awaited.
    checkin_at: u64,
    stuck_since: Option<std::time::Instant>,
    /// Whether the shared counters were added into the lines (at the end).
    shared_added: bool,
    fold: HashMap<FoldKey, usize>,
    exes: HashMap<i32, String>,
    pub pids: HashSet<i32>,
    warned: HashSet<WarnKey>,
    pub malformed: u64,
    /// Identical attempts arrive as byte-identical datagrams: fold those before parsing.
    raw_fold: HashMap<Box<[u8]>, usize>,
    /// (line, shared counter slot): the slot's repeats belong to that line.
    pub slots: Vec<(usize, u64)>,
    /// Programs block mode refused to run because the guard cannot enter them.
    pub refused_unguarded: u64,
    /// Each process's current test: set by the process, or inherited from its parent when
    /// the process checked in (so a test's children, through shells or with a cleared
    /// environment, carry its id).
    tests: HashMap<i32, String>,
    /// Each process's tests by the number it gave them (`Wire::Test`).
    numbered_tests: HashMap<(i32, u64), String>,
    /// The processes that set tests themselves (their attempts say which one).
    names_tests: HashSet<i32>,
}

/// The launcher's end of the event socket.
pub struct EventSocket {
    socket: UnixDatagram,
    addr: SocketAddr,
    nonce: u64,
    /// The run's event key (in the sealed policy): every event must start with it.
    key: [u8; EVENT_KEY_LEN],
}

/// How often counts that grew (repeats folded in shared memory or in the launcher) are
/// appended to the report while the run goes on: what a `SIGKILL` of egress-run can lose of
/// the counts at most (the lines themselves are written at once). The first time after a
/// second; each time counts did grow, the wait doubles, up to half a minute, so that a long
/// run of repeats (a million datagrams) makes a few repeat lines, not one a second.
const COUNT_FIRST_MS: u64 = 1000;
const COUNT_MAX_MS: u64 = 30_000;

/// How often the loop looks at the shared check-in area when nothing else wakes it: the most a
/// `process` line of a process that attempts nothing is late.
const SCAN_MS: libc::c_int = 50;

/// A check-in record reserved but still unpublished after this long belongs to a writer that
/// died between reserving and publishing: the reader skips it.
const STUCK_MS: u128 = 1000;

/// Larger than any event the library sends (its buffers are 8 KiB); a longer datagram would be
/// cut short and counted as malformed.
const MAX_DATAGRAM: usize = 1 << 16;

/// After a round of events, the loop waits this long (for COMMAND's exit and signals only)
/// before reading again, so that a burst of check-ins costs one wake-up, not one each. It is
/// also the most a live denial message can be late.
const BATCH_MS: libc::c_int = 5;

/// The kernel queues at most `net.unix.max_dgram_qlen` + 1 datagrams (default 10) on a Unix
/// datagram socket, whatever SO_RCVBUF says; beyond that senders block. A round that found
/// this many means the queue was (nearly) full and senders may be waiting: read on at once.
const NEARLY_FULL: usize = 8;

/// At most this many datagrams per round, so that a busy tree cannot delay noticing
/// COMMAND's exit or a signal.
const ROUND_MAX: usize = 256;

impl EventSocket {
    pub fn bind(locator: &Locator, key: [u8; EVENT_KEY_LEN]) -> Result<Self, Fatal> {
        let mut name = [0u8; 64];
        let n = locator.socket_name(&mut name);
        let fail = |e: std::io::Error| {
            Fatal::new(
                format!("cannot open the event socket ({e})"),
                "egress-run needs Unix domain sockets with abstract addresses (Linux)",
            )
        };
        let addr = SocketAddr::from_abstract_name(&name[..n]).map_err(fail)?;
        let socket = UnixDatagram::bind_addr(&addr).map_err(fail)?;
        // Reads never block: the event loop waits in poll.
        socket.set_nonblocking(true).map_err(fail)?;
        // Each datagram carries its sender's pid (SCM_CREDENTIALS, filled in by the kernel):
        // what an event without a key (a process that has no policy) is checked by.
        let one: libc::c_int = 1;
        // SAFETY: SO_PASSCRED takes an int; the pointer and length describe `one`.
        let passcred = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if passcred != 0 {
            return Err(fail(std::io::Error::last_os_error()));
        }
        let mut nonce = [0u8; 8];
        // SAFETY: getrandom fills the 8-byte buffer; a failure leaves zeros, still fine.
        unsafe { libc::getrandom(nonce.as_mut_ptr().cast(), 8, 0) };
        Ok(EventSocket {
            socket,
            addr,
            nonce: u64::from_le_bytes(nonce),
            key,
        })
    }

    /// Handles events and signals until `child` ends, then reads everything the tree sent
    /// before that; returns COMMAND's wait status.
    pub fn run(
        &self,
        collector: &mut Collector,
        signals: &Signals,
        child: libc::pid_t,
    ) -> libc::c_int {
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        let mut batching = false;
        let mut last_count = std::time::Instant::now();
        let mut count_every = COUNT_FIRST_MS;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: signals.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.socket.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // While batching, only COMMAND's exit or a signal ends the wait early. Counts in
            // shared memory grow without a datagram: while some may, wake up to write them.
            let since = last_count.elapsed().as_millis() as u64;
            let count_due = count_every.saturating_sub(since) as libc::c_int;
            // Check-ins in the shared area do not wake us either: look every SCAN_MS.
            let (count, timeout) = match (batching, collector.counting()) {
                (true, _) => (1, BATCH_MS),
                (false, true) => (2, count_due.min(SCAN_MS)),
                (false, false) => (2, SCAN_MS),
            };
            // SAFETY: fds holds `count` valid pollfd entries.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), count, timeout) };
            // On a poll failure (EINTR, ENOMEM) look at everything: reads do not block.
            if (ready < 0 || fds[0].revents != 0) && signals.read(child) {
                if let Some(status) = spawn::reap(child) {
                    self.finish_with(collector, &mut buf);
                    return status;
                }
            }
            let (got, _) = self.drain(collector, &mut buf, ROUND_MAX);
            collector.scan_checkins(false);
            batching = got > 0 && got < NEARLY_FULL;
            if last_count.elapsed().as_millis() as u64 >= count_every {
                if collector.write_counts() {
                    count_every = (count_every * 2).min(COUNT_MAX_MS);
                }
                last_count = std::time::Instant::now();
            }
        }
    }

    /// Reads up to `max` queued datagrams without blocking; returns how many, and whether
    /// our end marker was among them (reading stops there).
    fn drain(&self, collector: &mut Collector, buf: &mut Vec<u8>, max: usize) -> (usize, bool) {
        let mut got = 0;
        while got < max {
            match self.recv(buf) {
                Ok(sender) => {
                    got += 1;
                    if self.handle(collector, buf, sender) {
                        return (got, true);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        (got, false)
    }

    /// One datagram into `buf` (its spare capacity: nothing is zeroed first); returns the
    /// sender's pid as the kernel gives it (0 when unknown: it is in no pid namespace of ours).
    fn recv(&self, buf: &mut Vec<u8>) -> std::io::Result<libc::pid_t> {
        buf.clear();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.capacity(),
        };
        // Room for one SCM_CREDENTIALS message (CMSG_SPACE of a ucred: 32 bytes), aligned.
        let mut control = [0u64; 8];
        // SAFETY: an all-zero msghdr is valid; it is filled in below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg describes buf's allocation (capacity bytes) and the control array.
        let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel initialised the first n bytes (n <= capacity).
        unsafe { buf.set_len(n as usize) };
        let mut pid = 0;
        // SAFETY: msg is as recvmsg left it; CMSG_* walk its control buffer within
        // msg_controllen, and a SCM_CREDENTIALS message's data is a ucred.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                    let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    pid = cred.pid;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok(pid)
    }

    /// Handles one datagram; true when it is our end marker. A datagram without this run's
    /// event key is dropped and counted, unless it has no key at all (a process of the tree
    /// that could not obtain its policy) and its sender is a descendant of this launcher.
    fn handle(&self, collector: &mut Collector, datagram: &[u8], sender: libc::pid_t) -> bool {
        let Some((key, raw)) = event::split(datagram) else {
            collector.rejected += 1;
            return false;
        };
        let keyless_member =
            |collector: &Collector| key == [0; EVENT_KEY_LEN] && collector.in_tree(sender);
        let member = event::same_key(key, &self.key)
            || keyless_member(collector)
            // A process forked by one of ours checked in through the shared area, which may
            // not have been read yet (an orphan's child is known only from there).
            || (key == [0; EVENT_KEY_LEN] && {
                collector.scan_checkins(false);
                keyless_member(collector)
            });
        if !member {
            collector.rejected += 1;
            return false;
        }
        // A process checks in (shared area) before it attempts anything: its line goes first;
        // a test id set there applies to the attempts sent after it.
        collector.scan_checkins(false);
        if collector.fold_raw(raw) {
            return false;
        }
        match serde_json::from_slice::<Wire>(raw) {
            Ok(Wire::End { nonce }) if nonce == self.nonce => return true,
            Ok(Wire::End { .. }) => collector.malformed += 1,
            Ok(event) => {
                let before = collector.lines.len();
                let attempt = matches!(event, Wire::Connect(_) | Wire::Send(_) | Wire::Resolve(_));
                collector.handle(event);
                if attempt && collector.lines.len() == before + 1 {
                    collector.raw_fold.insert(raw.into(), before);
                }
            }
            Err(_) => collector.malformed += 1,
        }
        false
    }

    /// Reads everything queued before now: an end marker is queued behind every event
    /// already sent (datagrams keep their order), then read up to it.
    pub fn finish(&self, collector: &mut Collector) {
        let mut buf = Vec::with_capacity(MAX_DATAGRAM);
        self.finish_with(collector, &mut buf);
    }

    fn finish_with(&self, collector: &mut Collector, buf: &mut Vec<u8>) {
        let mut msg = event::header(&self.key).to_vec();
        msg.extend_from_slice(format!("{{\"type\":\"end\",\"nonce\":{}}}", self.nonce).as_bytes());
        // Sent to ourselves: the queue limit does not apply to a socket's own datagrams, so
        // this never waits for room (the loop is the only reader).
        let marked = self.socket.send_to_addr(&msg, &self.addr).is_ok();
        // Without the marker, take what is queued now, bounded against a tree that keeps
        // sending.
        self.drain(collector, buf, if marked { usize::MAX } else { ROUND_MAX });
        collector.scan_checkins(true);
    }
}

fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A process's parent, from /proc/<pid>/stat (the field after the parenthesised name).
fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn program_name(exe: &str) -> &str {
    exe.rsplit('/').next().unwrap_or(exe)
}

impl Collector {
    pub fn new(mode: Mode, rules: Vec<String>, quiet: bool, journal: Journal) -> Self {
        Collector {
            mode,
            rules,
            quiet,
            lines: Vec::new(),
            journal,
            written: Vec::new(),
            rejected: 0,
            shared: None,
            checkin_at: CHECKIN_ALIGN,
            stuck_since: None,
            shared_added: false,
            fold: HashMap::new(),
            exes: HashMap::new(),
            pids: HashSet::new(),
            warned: HashSet::new(),
            malformed: 0,
            raw_fold: HashMap::new(),
            slots: Vec::new(),
            refused_unguarded: 0,
            tests: HashMap::new(),
            numbered_tests: HashMap::new(),
            names_tests: HashSet::new(),
        }
    }

    /// Appends a line to the report file and keeps it for the summary.
    fn push(&mut self, line: Line) {
        let count = match &line {
            Line::Process(p) => {
                self.journal.line(p);
                0
            }
            Line::Attempt(a) => {
                self.journal.line(a);
                a.count
            }
        };
        self.lines.push(line);
        self.written.push(count);
    }

    /// Appends any other line (the `run` line first, the `summary` last).
    pub fn write_line(&mut self, line: &impl serde::Serialize) {
        self.journal.line(line);
    }

    /// The report file, when the last line has been written.
    pub fn into_journal(self) -> Journal {
        self.journal
    }

    /// Whether counts may grow in shared memory, unseen by the event loop.
    fn counting(&self) -> bool {
        !self.slots.is_empty()
    }

    /// The run's shared counters and check-in area.
    pub fn attach(&mut self, shared: Rc<SharedCounters>) {
        self.shared = Some(shared);
    }

    fn shared_count(&self, slot: u64) -> u64 {
        self.shared.as_ref().map_or(0, |s| s.get(slot))
    }

    /// Appends, for each attempt line whose count grew since the file last said, a copy of the
    /// line whose `count` is the growth: the sum of `count` over identical lines is the total
    /// (docs/report.md). Repeats a process folded in shared memory count too, until
    /// `add_shared_counts` moved them into the lines.
    pub fn write_counts(&mut self) -> bool {
        let mut wrote = false;
        let mut extra = vec![0u64; self.lines.len()];
        if !self.shared_added {
            for &(i, slot) in &self.slots {
                if let Some(e) = extra.get_mut(i) {
                    *e += self.shared_count(slot);
                }
            }
        }
        for (i, line) in self.lines.iter().enumerate() {
            let Line::Attempt(a) = line else { continue };
            let total = a.count + extra[i];
            if total > self.written[i] {
                let more = AttemptLine {
                    count: total - self.written[i],
                    ..a.clone()
                };
                self.journal.line(&more);
                self.written[i] = total;
                wrote = true;
            }
        }
        wrote
    }

    /// Reads the `process` records processes wrote into the shared check-in area since the
    /// last look. `last`: the run is over, so a record still unpublished never will be.
    pub fn scan_checkins(&mut self, last: bool) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let next = shared.checkin_next();
        while self.checkin_at < next {
            match shared.checkin_record(self.checkin_at) {
                Some((body, span)) => {
                    let body = body.to_vec();
                    self.checkin_at += span;
                    self.stuck_since = None;
                    match serde_json::from_slice::<Wire>(&body) {
                        // A test id goes here too, ordered with the check-ins of the
                        // processes started under it (test ids pass on by parent).
                        Ok(event @ (Wire::Process { .. } | Wire::Test { .. })) => {
                            self.handle(event)
                        }
                        _ => self.malformed += 1,
                    }
                }
                None => {
                    // Reserved, not yet published: its writer is between two instructions,
                    // or died there. Skip it only when that is sure or has lasted.
                    let since = *self.stuck_since.get_or_insert_with(std::time::Instant::now);
                    if !last && since.elapsed().as_millis() < STUCK_MS {
                        return;
                    }
                    self.malformed += 1;
                    self.stuck_since = None;
                    self.checkin_at = self.resync(&shared, next);
                }
            }
        }
    }

    /// The next published record after an unpublished one at `checkin_at` (its length is
    /// unknown): the first aligned word that is a header, or `next`.
    fn resync(&self, shared: &SharedCounters, next: u64) -> u64 {
        let mut at = self.checkin_at + CHECKIN_ALIGN;
        while at < next {
            if shared.checkin_record(at).is_some() {
                return at;
            }
            at += CHECKIN_ALIGN;
        }
        next
    }

    /// Whether `pid` is a process of this run: one that checked in with the run's key, or a
    /// descendant of this launcher now (its parent chain, read from /proc, reaches us).
    fn in_tree(&self, pid: libc::pid_t) -> bool {
        if pid <= 0 {
            return false;
        }
        if self.pids.contains(&pid) {
            return true;
        }
        let me = std::process::id() as libc::pid_t;
        let mut at = pid;
        // A chain longer than this is not worth following (pid_max bounds it anyway).
        for _ in 0..256 {
            if at == me {
                return true;
            }
            match parent_of(at) {
                Some(p) if p > 0 => at = p,
                _ => return false,
            }
        }
        false
    }

    fn say(&self, msg: std::fmt::Arguments) {
        if !self.quiet {
            crate::to_stderr(&format!("egress-run: {msg}\n"));
        }
    }

    /// Counts a datagram identical to an attempt already recorded; false when it is new.
    fn fold_raw(&mut self, raw: &[u8]) -> bool {
        match self.raw_fold.get(raw) {
            Some(&i) => {
                if let Line::Attempt(line) = &mut self.lines[i] {
                    line.count += 1;
                }
                true
            }
            None => false,
        }
    }

    fn handle(&mut self, event: Wire) {
        match event {
            Wire::Process {
                pid,
                ppid,
                exe,
                argv,
                policy_error,
                guarded,
                reason,
                refused,
                layer,
            } => {
                if layer.as_deref() == Some("kernel") {
                    self.kernel_layer(pid, ppid, exe, argv, reason.unwrap_or_default());
                    return;
                }
                if !guarded {
                    self.unguarded(pid, ppid, exe, argv, reason.unwrap_or_default(), refused);
                    return;
                }
                if let Some(why) = &policy_error {
                    self.say(format_args!(
                        "{} [pid {pid}] could not obtain its policy ({why}); it denies all egress",
                        program_name(&exe)
                    ));
                }
                self.exes.insert(pid, exe.clone());
                self.pids.insert(pid);
                if let Some(t) = self.tests.get(&ppid).cloned() {
                    self.tests.insert(pid, t);
                }
                self.push(Line::Process(ProcessLine {
                    policy_error,
                    ..ProcessLine::new(pid, ppid, exe, argv)
                }));
            }
            Wire::Connect(a) => self.attempt("connect", a),
            Wire::Send(a) => self.attempt("send", a),
            Wire::Resolve(a) => self.attempt("resolve", a),
            Wire::Test { pid, test, number } => {
                // Identical bytes from now on may belong to another test's lines.
                self.raw_fold.clear();
                self.names_tests.insert(pid);
                if let (Some(n), Some(t)) = (number, &test) {
                    self.numbered_tests.insert((pid, n), t.clone());
                }
                match test {
                    Some(t) => self.tests.insert(pid, t),
                    None => self.tests.remove(&pid),
                };
            }
            Wire::End { .. } => {}
        }
    }

    fn attempt(&mut self, kind: &'static str, a: WireAttempt) {
        // By the number the attempt carries: the check-in area that brings test events is
        // read up to now, possibly past attempts still queued on the socket. Without a number
        // (0: none of its own), the test the process inherited from its parent.
        let test = match a.test_number {
            Some(n) => self.numbered_tests.get(&(a.pid, n)).cloned(),
            // A process that names its own tests is between two of them.
            None if self.names_tests.contains(&a.pid) => None,
            None => self.tests.get(&a.pid).cloned(),
        };
        let key = FoldKey {
            kind,
            pid: a.pid,
            call: a.call.clone(),
            proto: a.proto.clone(),
            addr: a.addr.clone(),
            port: a.port,
            host: a.host.clone(),
            decision: a.decision.clone(),
            rule: a.rule,
            enforced: a.enforced,
            denied_by: a.denied_by,
            chain: a.chain.clone(),
            test: test.clone(),
            caller: a.caller.clone(),
            py_caller: a.py_caller.clone(),
            reason: a.reason.clone(),
            layer: layer_name(a.layer.as_deref()),
        };
        if let Some(&i) = self.fold.get(&key) {
            if let Line::Attempt(line) = &mut self.lines[i] {
                line.count += 1;
            }
            if let Some(slot) = a.slot {
                self.slots.push((i, slot));
            }
            return;
        }
        if let Some(slot) = a.slot {
            self.slots.push((self.lines.len(), slot));
        }
        // A process that never checked in (a vfork child before exec): name it from /proc.
        let exe = self
            .exes
            .entry(a.pid)
            .or_insert_with(|| exe_of(a.pid))
            .clone();
        self.pids.insert(a.pid);
        if a.decision == "deny" {
            self.warn_denial(kind, &a, &exe);
        }
        let rule = a.rule.and_then(|i| self.rules.get(i).cloned());
        self.fold.insert(key, self.lines.len());
        self.push(Line::Attempt(AttemptLine {
            kind,
            pid: a.pid,
            exe,
            call: a.call,
            proto: a.proto,
            addr: a.addr,
            port: a.port,
            host: a.host,
            decision: a.decision,
            enforced: a.enforced,
            rule,
            reason: a.reason,
            denied_by: a.denied_by,
            chain: a.chain,
            test,
            caller: a.caller,
            py_caller: a.py_caller,
            layer: layer_name(a.layer.as_deref()),
            count: 1,
        }));
    }

    /// The first denial of each destination in a process gets one line on stderr.
    fn warn_denial(&mut self, kind: &'static str, a: &WireAttempt, exe: &str) {
        let key = (a.pid, kind, a.addr.clone(), a.port, a.host.clone());
        if self.quiet || !self.warned.insert(key) {
            return;
        }
        let verb = if a.enforced {
            "denied"
        } else {
            "audit: would deny"
        };
        let ip = a.addr.as_deref().and_then(|s| s.parse().ok());
        let what = match kind {
            "resolve" => format!("lookup of {}", a.host.as_deref().unwrap_or("?")),
            _ => {
                let addr = a.addr.as_deref().unwrap_or("?");
                let shown = if addr.contains(':') {
                    format!("[{addr}]")
                } else {
                    addr.to_string()
                };
                let via = a
                    .host
                    .as_deref()
                    .map(|h| format!(", {h}"))
                    .unwrap_or_default();
                format!(
                    "{kind} to {shown}:{} ({}{via})",
                    a.port.unwrap_or(0),
                    a.proto.as_deref().unwrap_or("?")
                )
            }
        };
        let hint = match a.reason.as_deref() {
            Some(r) if r.contains("no valid policy") => r.to_string(),
            // Refused whatever the rules say (a source route, a packet socket).
            Some(r) if r.contains("no rule can allow") => r.to_string(),
            // A thread's scope (docs/scopes.md): granted in the scope, not on the command line.
            Some(r) if r.contains("scope") => format!(
                "{r}; grant it in the scope: egress_guard([\"{rule}\"]), \
                 @pytest.mark.egress(allow=[\"{rule}\"])",
                rule = suggest_rule(a.host.as_deref(), ip, a.port.filter(|_| kind != "resolve"))
            ),
            _ => format!(
                "to allow it: --allow {}",
                suggest_rule(a.host.as_deref(), ip, a.port.filter(|_| kind != "resolve"))
            ),
        };
        self.say(format_args!(
            "{verb} {what} by {} [pid {}]; {hint}",
            program_name(exe),
            a.pid
        ));
    }

    /// Records a program the library cannot enter: refused (block mode) or run unguarded.
    pub fn unguarded(
        &mut self,
        pid: i32,
        ppid: i32,
        exe: String,
        argv: Vec<String>,
        reason: String,
        refused: bool,
    ) {
        if refused {
            self.refused_unguarded += 1;
            // Not silenced by --quiet: it explains a failure (exit 126 or EACCES from exec).
            crate::to_stderr(&format!(
                "egress-run: refused to run {exe}: {reason}; to run it unguarded: --allow-unguarded\n"
            ));
        } else {
            self.say(format_args!("{exe} [pid {pid}] runs UNGUARDED: {reason}"));
        }
        if pid > 0 {
            self.pids.insert(pid);
            self.exes.insert(pid, exe.clone());
        }
        self.push(Line::Process(ProcessLine {
            guarded: false,
            reason: Some(reason),
            refused: Some(refused),
            ..ProcessLine::new(pid, ppid, exe, argv)
        }));
    }

    /// Records a program the library cannot enter that runs under the kernel layer (`reason`:
    /// why the library cannot enter it). The report is written as the run goes, so a process
    /// that checked in too (a dynamic Go program loads the library) gets a second line, marked
    /// `kernel`, rather than a change to the line already written.
    pub fn kernel_layer(
        &mut self,
        pid: i32,
        ppid: i32,
        exe: String,
        argv: Vec<String>,
        reason: String,
    ) {
        self.pids.insert(pid);
        // An exec keeps the pid: from now on its attempts are this program's.
        self.exes.insert(pid, exe.clone());
        self.push(Line::Process(ProcessLine {
            reason: Some(reason),
            layer: Some("kernel"),
            ..ProcessLine::new(pid, ppid, exe, argv)
        }));
    }

    /// Adds the repeats counted in shared memory to their lines (after the last event).
    pub fn add_shared_counts(&mut self) {
        if self.shared_added {
            return;
        }
        self.shared_added = true;
        for &(i, slot) in &self.slots {
            let n = self.shared_count(slot);
            if let Some(Line::Attempt(line)) = self.lines.get_mut(i) {
                line.count += n;
            }
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_report(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("egress-run-{}-{name}.jsonl", std::process::id()))
    }

    fn lines_of(path: &std::path::Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    const SEND: &str = r#"{"type":"send","pid":7,"call":"sendto","proto":"udp","addr":"127.0.0.1","port":9,"host":null,"decision":"deny","rule":null,"reason":"no rule allows it","enforced":true}"#;

    #[test]
    fn lines_are_written_as_they_come_and_growth_follows_as_repeat_lines() {
        let path = temp_report("journal");
        let journal = Journal::create(&path).unwrap();
        let mut c = Collector::new(Mode::Block, vec![], true, journal);
        let process = r#"{"type":"process","pid":7,"ppid":1,"exe":"/bin/x","argv":["x"]}"#;
        c.handle(serde_json::from_str(process).unwrap());
        c.handle(serde_json::from_str(SEND).unwrap());
        // Both lines are in the file at once.
        let now = lines_of(&path);
        assert_eq!(now.len(), 2);
        assert_eq!(now[1]["count"], 1);
        // Two identical datagrams more: nothing new until the counts are written.
        c.handle(serde_json::from_str(SEND).unwrap());
        c.handle(serde_json::from_str(SEND).unwrap());
        assert_eq!(lines_of(&path).len(), 2);
        assert!(c.write_counts());
        assert!(!c.write_counts()); // nothing grew since: no line
        let after = lines_of(&path);
        assert_eq!(after.len(), 3);
        assert_eq!(after[2]["count"], 2);
        assert_eq!(after[2]["port"], 9);
        let total: u64 = after
            .iter()
            .filter(|l| l["type"] == "send")
            .map(|l| l["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 3);
        c.into_journal().finish().unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn parent_of_reads_proc() {
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        assert_eq!(parent_of(std::process::id() as i32), Some(ppid));
        assert_eq!(parent_of(-5), None);
    }
}
