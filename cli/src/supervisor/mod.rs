//! The kernel layer: programs the library cannot enter (static, Go) run under a seccomp filter
//! (`egress_policy::seccomp::filter`) whose trapped network calls come here as user
//! notifications. The supervisor decides them with the same policy and matcher as the
//! library, and performs an allowed IPv4/IPv6 call itself, on a duplicate of the program's
//! socket and with its own copy of the address, so that nothing the program changes after the
//! check reaches the kernel (docs/design.md, "The kernel layer").
//!
//! One thread per listener receives; a call that may block (a blocking socket) is performed
//! by a worker of a small pool, so that one slow connect never stalls the tree. Attempts go to
//! the launcher's event socket as the library's do, marked `"layer":"kernel"`.

mod handover;
mod notify;
mod sockaddr;
mod target;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use egress_policy::seccomp::{filter, Insn};
use egress_policy::{DenyAs, Locator, Mode, PolicyView};

/// The filter in the kernel's form, built before the child that installs it is started.
pub struct Filter {
    insns: Vec<libc::sock_filter>,
}

impl Filter {
    pub fn new(fast_ip: Option<u64>) -> Filter {
        let program = filter(fast_ip);
        let insns = program
            .as_slice()
            .iter()
            .map(|&Insn { code, jt, jf, k }| libc::sock_filter { code, jt, jf, k })
            .collect();
        Filter { insns }
    }

    /// The `sock_fprog` that `install` takes; valid while `self` is.
    pub fn prog(&self) -> libc::sock_fprog {
        libc::sock_fprog {
            len: self.insns.len() as libc::c_ushort,
            filter: self.insns.as_ptr().cast_mut(),
        }
    }
}

/// Puts the calling thread under the filter and returns the listener's descriptor, or
/// `-errno`. Only system calls: safe in a `vfork`-style child. With `WAIT_KILLABLE_RECV`
/// (Linux 5.19) a signal no longer aborts a notification the supervisor has received (Go's
/// preemption signals would otherwise interrupt every slow decision); older kernels get the
/// filter without it.
pub fn install(prog: &libc::sock_fprog) -> libc::c_int {
    // SAFETY: prctl and seccomp take plain arguments and a valid sock_fprog.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return -*libc::__errno_location();
        }
        let mut flags =
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        loop {
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                prog as *const libc::sock_fprog,
            );
            if fd >= 0 {
                return fd as libc::c_int;
            }
            let e = *libc::__errno_location();
            if e == libc::EINVAL && flags & libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0 {
                flags &= !libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
                continue;
            }
            return -e;
        }
    }
}

/// Why the layer could not be installed, for the refusal message.
pub fn unavailable_reason(errno: libc::c_int) -> String {
    let what = match errno {
        libc::EBUSY => {
            "the process is already under another seccomp listener (an outer sandbox or supervisor)"
                .to_string()
        }
        libc::EINVAL | libc::ENOSYS => {
            "this kernel lacks seccomp user notification (Linux 5.0+)".to_string()
        }
        e => format!(
            "seccomp filter could not be installed: {}",
            std::io::Error::from_raw_os_error(e)
        ),
    };
    format!("the kernel layer is unavailable ({what})")
}

/// The supervisor's shared state.
pub struct Layer {
    policy: PolicyView<'static>,
    events: UnixDatagram,
    pool: Arc<Pool>,
    /// Threads (ids) inside an allowed lookup the library decided (`--seccomp`): libc's
    /// resolver may reach `nameservers` on port 53 from them.
    lookups: Mutex<std::collections::HashSet<i32>>,
    nameservers: Vec<std::net::IpAddr>,
}

/// The name servers of /etc/resolv.conf (what libc's resolver sends to).
fn nameservers() -> Vec<std::net::IpAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut found: Vec<std::net::IpAddr> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().split('%').next()?.parse().ok())
        .map(egress_policy::canonical_ip)
        .collect();
    if found.is_empty() {
        // glibc's default without a nameserver line.
        found.push(std::net::IpAddr::from([127, 0, 0, 1]));
    }
    found
}

impl Layer {
    /// A supervisor deciding with `policy` (the sealed policy's bytes) and reporting to the
    /// launcher's event socket named by `locator`.
    pub fn new(policy: &'static [u8], locator: &Locator) -> std::io::Result<Arc<Layer>> {
        let policy = PolicyView::parse(policy)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.as_str()))?;
        let mut name = [0u8; 64];
        let n = locator.socket_name(&mut name);
        let addr = SocketAddr::from_abstract_name(&name[..n])?;
        let events = UnixDatagram::unbound()?;
        events.connect_addr(&addr)?;
        Ok(Arc::new(Layer {
            policy,
            events,
            pool: Arc::new(Pool::default()),
            lookups: Mutex::new(Default::default()),
            nameservers: nameservers(),
        }))
    }

    fn mode(&self) -> Mode {
        self.policy.mode()
    }

    fn deny_as(&self) -> DenyAs {
        self.policy.deny_as()
    }

    /// Takes over listeners from processes deeper in the tree (`handover`).
    pub fn accept_handovers(self: &Arc<Self>, locator: &Locator) -> std::io::Result<()> {
        handover::start(self, locator)
    }

    /// Starts a thread that answers the notifications of `listener` until no process uses
    /// its filter any more.
    pub fn supervise(self: &Arc<Self>, listener: OwnedFd) -> std::io::Result<()> {
        let layer = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("egress-seccomp-{}", listener.as_raw_fd()))
            .spawn(move || notify::serve(layer, Arc::new(listener)))
            .map(|_| ())
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Workers for calls that may block; grows while every worker is busy, shrinks when idle.
#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
    ready: Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    idle: usize,
    threads: usize,
}

/// More blocked calls than this wait for a worker (each holds a thread of the launcher).
const MAX_WORKERS: usize = 256;
const IDLE_EXIT: Duration = Duration::from_secs(10);

impl Pool {
    fn submit(self: &Arc<Self>, job: Job) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.jobs.push_back(job);
        if s.idle > 0 || s.threads >= MAX_WORKERS {
            self.ready.notify_one();
            return;
        }
        s.threads += 1;
        let pool = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("egress-seccomp-worker".into())
            .spawn(move || pool.work());
        if spawned.is_err() {
            s.threads -= 1;
            // No thread: run it here rather than never (the receiving thread waits for it).
            if let Some(job) = s.jobs.pop_back() {
                drop(s);
                job();
            }
        }
    }

    fn work(&self) {
        loop {
            let job = {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(job) = s.jobs.pop_front() {
                        break job;
                    }
                    s.idle += 1;
                    let (guard, waited) = self
                        .ready
                        .wait_timeout(s, IDLE_EXIT)
                        .unwrap_or_else(|e| e.into_inner());
                    s = guard;
                    s.idle -= 1;
                    if waited.timed_out() && s.jobs.is_empty() {
                        s.threads -= 1;
                        return;
                    }
                }
            };
            job();
        }
    }
}
