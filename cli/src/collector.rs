//! Receiving events from the guarded tree, folding identical attempts, and telling the user
//! about denials as they happen.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use egress_policy::{suggest_rule, Locator, Mode};
use serde::Deserialize;

use crate::report::{AttemptLine, ChainLevel, Line, ProcessLine};
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
    denied_by: Option<u32>,
    chain: Option<Vec<ChainLevel>>,
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
    pub lines: Vec<Line>,
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
}

/// The launcher's end of the event socket.
pub struct EventSocket {
    socket: UnixDatagram,
    addr: SocketAddr,
    nonce: u64,
}

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
    pub fn bind(locator: &Locator) -> Result<Self, Fatal> {
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
        let mut nonce = [0u8; 8];
        // SAFETY: getrandom fills the 8-byte buffer; a failure leaves zeros, still fine.
        unsafe { libc::getrandom(nonce.as_mut_ptr().cast(), 8, 0) };
        Ok(EventSocket {
            socket,
            addr,
            nonce: u64::from_le_bytes(nonce),
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
            // While batching, only COMMAND's exit or a signal ends the wait early.
            let (count, timeout) = if batching { (1, BATCH_MS) } else { (2, -1) };
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
            batching = got > 0 && got < NEARLY_FULL;
        }
    }

    /// Reads up to `max` queued datagrams without blocking; returns how many, and whether
    /// our end marker was among them (reading stops there).
    fn drain(&self, collector: &mut Collector, buf: &mut Vec<u8>, max: usize) -> (usize, bool) {
        let mut got = 0;
        while got < max {
            match self.recv(buf) {
                Ok(()) => {
                    got += 1;
                    if self.handle(collector, buf) {
                        return (got, true);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        (got, false)
    }

    /// One datagram into `buf` (its spare capacity: nothing is zeroed first).
    fn recv(&self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        buf.clear();
        // SAFETY: the kernel writes at most capacity bytes into buf's allocation.
        let n = unsafe {
            libc::recv(
                self.socket.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.capacity(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel initialised the first n bytes (n <= capacity).
        unsafe { buf.set_len(n as usize) };
        Ok(())
    }

    /// Handles one datagram; true when it is our end marker.
    fn handle(&self, collector: &mut Collector, raw: &[u8]) -> bool {
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
        let msg = format!("{{\"type\":\"end\",\"nonce\":{}}}", self.nonce);
        // Sent to ourselves: the queue limit does not apply to a socket's own datagrams, so
        // this never waits for room (the loop is the only reader).
        let marked = self.socket.send_to_addr(msg.as_bytes(), &self.addr).is_ok();
        // Without the marker, take what is queued now, bounded against a tree that keeps
        // sending.
        self.drain(collector, buf, if marked { usize::MAX } else { ROUND_MAX });
    }
}

fn exe_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn program_name(exe: &str) -> &str {
    exe.rsplit('/').next().unwrap_or(exe)
}

impl Collector {
    pub fn new(mode: Mode, rules: Vec<String>, quiet: bool) -> Self {
        Collector {
            mode,
            rules,
            quiet,
            lines: Vec::new(),
            fold: HashMap::new(),
            exes: HashMap::new(),
            pids: HashSet::new(),
            warned: HashSet::new(),
            malformed: 0,
            raw_fold: HashMap::new(),
            slots: Vec::new(),
            refused_unguarded: 0,
        }
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
                    self.kernel_layer(pid, ppid, exe, argv, reason.unwrap_or_default(), false);
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
                self.lines.push(Line::Process(ProcessLine {
                    policy_error,
                    ..ProcessLine::new(pid, ppid, exe, argv)
                }));
            }
            Wire::Connect(a) => self.attempt("connect", a),
            Wire::Send(a) => self.attempt("send", a),
            Wire::Resolve(a) => self.attempt("resolve", a),
            Wire::End { .. } => {}
        }
    }

    fn attempt(&mut self, kind: &'static str, a: WireAttempt) {
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
        self.lines.push(Line::Attempt(AttemptLine {
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
        self.lines.push(Line::Process(ProcessLine {
            guarded: false,
            reason: Some(reason),
            refused: Some(refused),
            ..ProcessLine::new(pid, ppid, exe, argv)
        }));
    }

    /// Records a program the library cannot enter that runs under the kernel layer (`reason`:
    /// why the library cannot enter it). A process that checked in too (a dynamic Go program
    /// loads the library) keeps its line, marked. `first`: put the line before all others
    /// (COMMAND's, once the run is over and no line index is kept any more).
    pub fn kernel_layer(
        &mut self,
        pid: i32,
        ppid: i32,
        exe: String,
        argv: Vec<String>,
        reason: String,
        first: bool,
    ) {
        let existing = self.lines.iter_mut().find_map(|l| match l {
            Line::Process(p) if p.pid == pid && p.guarded && p.exe == exe && pid > 0 => Some(p),
            _ => None,
        });
        if let Some(line) = existing {
            line.layer = Some("kernel");
            line.reason = Some(reason);
            return;
        }
        self.pids.insert(pid);
        // An exec keeps the pid: from now on its attempts are this program's.
        self.exes.insert(pid, exe.clone());
        let line = Line::Process(ProcessLine {
            reason: Some(reason),
            layer: Some("kernel"),
            ..ProcessLine::new(pid, ppid, exe, argv)
        });
        if first {
            self.lines.insert(0, line);
        } else {
            self.lines.push(line);
        }
    }

    /// Adds the repeats counted in shared memory to their lines (after the last event).
    pub fn add_shared_counts(&mut self, read: impl Fn(u64) -> u64) {
        for &(i, slot) in &self.slots {
            if let Some(Line::Attempt(line)) = self.lines.get_mut(i) {
                line.count += read(slot);
            }
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }
}
