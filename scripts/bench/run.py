#!/usr/bin/env python3
"""Runs the egress-run benchmarks and prints the results tables.

Called by scripts/bench.sh, which compiles the workloads (scripts/bench/*.c) and the
forwarding-only shim into a temp directory and passes them here. Every workload talks to
127.0.0.1 only and stops by itself after a fixed number of iterations.

Each workload has variants: native, under egress-run, and under the peers (a forwarding-only
LD_PRELOAD shim, strace, proxychains4, pytest-socket) where they apply. All variants of a
workload run in the same rounds, in alternating order (reversed every other round), BENCH_RUNS
rounds. Every run goes through the small `measure` helper (measure.c), which forks, execs and
wait4()s the command and reports wall time (CLOCK_MONOTONIC around fork..wait4), CPU time
(user+sys of the whole child tree: under egress-run that is the launcher plus COMMAND plus
everything COMMAND waited for) and peak RSS (ru_maxrss: the tree's largest process). The
workloads also write their own CPU time and peak RSS at exit (BENCH_RUSAGE_OUT), which splits
the guarded CPU into the program's share and the launcher's.

A few peers are too slow to run the full count in the time budget (strace stops the program at
every system call); they run a fraction of it, and all figures are compared per operation.
"""

import argparse
import ipaddress
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

STARTUP_RUNS = 50
RULE_COUNTS = (1, 100, 10_000)
PEERS = ("shim", "strace", "proxychains", "pytest-socket")

# Peers that run a fraction of the count: (peer, workload) -> divisor. Chosen so that no
# single run takes much longer than the native one (strace is 5-30x slower per operation).
PEER_DIVISOR = {
    ("strace", "connect"): 8,
    ("strace", "udp"): 20,
    ("strace", "gai"): 100,
    ("strace", "spawn"): 20,
    ("shim", "gai"): 10,
    ("proxychains", "gai"): 10,
    ("proxychains", "spawn"): 3,
}

# Performance targets (median ratios guarded/native unless stated).
RATIO_TARGETS = {"connect": 1.02, "udp": 1.05, "udp-audit": 1.10, "udp-seccomp": 1.05, "gai": 1.05,
                 "pytest": 1.03}
REPORT_LINES_TARGET = 10  # "a few lines, not 1M"
RSS_TARGET_KIB = 2048


# ---------------------------------------------------------------- formatting


def fmt_time(seconds):
    if abs(seconds) >= 1:
        return f"{seconds:.2f} s"
    if abs(seconds) >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_spread(values):
    """Median with its spread: min–max for a few runs, interquartile range for many."""
    med = statistics.median(values)
    if len(values) >= 10:
        q = statistics.quantiles(values, n=4)
        lo, hi, what = q[0], q[2], "IQR "
    else:
        lo, hi, what = min(values), max(values), ""
    return f"{fmt_time(med)} ({what}{fmt_time(lo)}–{fmt_time(hi)})"


def fmt_added(seconds, ms=False):
    if ms or abs(seconds) >= 1e-3:
        return f"{seconds * 1e3:+.2f} ms"
    return f"{seconds * 1e6:+.2f} µs"


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- running


class Runner:
    def __init__(self, work, measure):
        self.work = work
        self.measure = measure
        self.errfile = os.path.join(work, "stderr.txt")
        self.result_file = os.path.join(work, "result.txt")
        self.rusage_file = os.path.join(work, "rusage.txt")
        self.env = dict(os.environ)
        self.env["BENCH_RUSAGE_OUT"] = self.rusage_file

    def run(self, argv, env=None, stdout="/dev/null", check=True):
        """Runs argv once through the measure helper; returns a dict of measurements.

        env: variables set in the command's environment only. Fails loudly on a non-zero exit
        (a denial under egress-run exits 3) unless check is false."""
        for f in (self.rusage_file, self.result_file):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
            (os.POSIX_SPAWN_OPEN, 2, self.errfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        ]
        extra = []
        for k, v in (env or {}).items():
            extra += ["-e", f"{k}={v}"]
        helper = [self.measure, self.result_file] + extra + argv
        pid = os.posix_spawn(self.measure, helper, self.env, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        try:
            with open(self.result_file) as f:
                code, wall, user, sys_, rss = f.read().split()
        except (FileNotFoundError, ValueError):
            raise SystemExit(f"bench: measure failed (status {status}) on {' '.join(argv)}\n"
                             f"{self.stderr()}".rstrip())
        if code != "0" and check:
            raise SystemExit(f"bench: {' '.join(argv)} exited with {code}\n{self.stderr()}".rstrip())
        own_cpu = own_rss = None
        try:
            with open(self.rusage_file) as f:
                u, s, r = f.read().split()
                own_cpu, own_rss = float(u) + float(s), int(r)
        except (FileNotFoundError, ValueError):
            pass
        return {
            "code": code,
            "wall": float(wall),
            "cpu": float(user) + float(sys_),
            "rss": int(rss),
            "own_cpu": own_cpu,
            "own_rss": own_rss,
        }

    def stderr(self):
        with open(self.errfile, errors="replace") as f:
            return f.read()


@dataclass
class Variant:
    key: str  # "native", "egress-run", "audit", a peer, or a scaling label
    build: object  # build(n) -> argv doing n operations
    n: int  # operations one run does; per-op figures divide by it
    env: dict = field(default_factory=dict)  # set in the command's environment only
    samples: list = field(default_factory=list)

    @property
    def argv(self):
        return self.build(self.n)

    def shrunk(self, k):
        """The same variant doing at most k operations (for the checks)."""
        return Variant(self.key, self.build, min(k, self.n), self.env)

    def med(self, what):
        vals = [m[what] for m in self.samples if m[what] is not None]
        return statistics.median(vals) if vals else None

    def per_op(self, what):
        m = self.med(what)
        return None if m is None else m / self.n


@dataclass
class Workload:
    name: str  # BENCH_ONLY key
    desc: str
    unit: str  # "op", "exec" (per-op figures per spawned process) or "run" (n=1 per sample)
    variants: list
    runs: int
    tests: int = None  # pytest suite: how many tests passed in the check run

    def v(self, key):
        for v in self.variants:
            if v.key == key:
                return v
        return None


def compare(base, other):
    """Per-op wall and CPU: ratio other/base and added cost per op (seconds)."""
    out = {}
    for what in ("wall", "cpu"):
        b, o = base.per_op(what), other.per_op(what)
        if b is None or o is None:
            out[what] = out[what + "_added"] = None
            continue
        out[what] = o / b if b > 0 else None
        out[what + "_added"] = o - b
    return out


def run_workload(runner, w):
    for r in range(w.runs):
        seq = w.variants if r % 2 == 0 else list(reversed(w.variants))
        for v in seq:
            m = runner.run(v.argv, env=v.env)
            v.samples.append(m)
            if w.unit != "run":
                progress(
                    f"{w.name:8} run {r + 1}/{w.runs} {v.key:16} wall {fmt_time(m['wall']):>9}"
                    f"  cpu {fmt_time(m['cpu']):>9}  rss {m['rss']} KiB"
                )
    if w.unit == "run":
        meds = ", ".join(f"{v.key} {fmt_time(v.med('wall'))}" for v in w.variants)
        progress(f"{w.name:8} {w.desc}: medians {meds}")


# ---------------------------------------------------------------- checks


def read_report(path):
    summary, lines, records = {}, 0, []
    with open(path) as f:
        for line in f:
            lines += 1
            obj = json.loads(line)
            records.append(obj)
            if obj.get("type") == "summary":
                summary = obj
    return summary, lines, records


def guard_check(runner, name, argv, expect, report, env=None):
    """One small guarded run with --report: proves the guard really sees the workload.

    argv starts with egress-run; expect maps summary keys to wanted values."""
    runner.run(argv[:1] + ["--report", report] + argv[1:], env=env)
    summary, _, records = read_report(report)
    ok = all(summary.get(k) == want for k, want in expect.items())
    got = " ".join(f"{k}={summary.get(k)}" for k in ("attempts", "denied", "processes"))
    return f"{name}: report {got}" + ("" if ok else f"  <-- UNEXPECTED (wanted {expect})"), ok, records


ADDR_RE = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


def off_loopback(strace_log):
    """Destinations other than loopback in an strace log of connect/send calls."""
    bad = set()
    with open(strace_log, errors="replace") as f:
        for line in f:
            if not re.search(r"\b(connect|sendto|sendmsg|sendmmsg)\(", line):
                continue
            for v4, v6 in ADDR_RE.findall(line):
                a = ipaddress.ip_address(v4 or v6)
                if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped:
                    a = a.ipv4_mapped
                if not (a.is_loopback or a.is_unspecified):
                    bad.add(str(a))
    return sorted(bad)


def traffic_check(runner, strace, label, v, work):
    """Runs a variant under strace (small count) and lists where it sends: loopback only."""
    log = os.path.join(work, "traffic.log")
    argv = [strace, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o", log] + v.argv
    runner.run(argv, env=v.env)
    bad = off_loopback(log)
    with open(log, errors="replace") as f:
        calls = sum(1 for line in f if re.search(r"\b(connect|sendto|sendmsg|sendmmsg)\(", line))
    ok = not bad
    line = f"{label} [{v.key}]: {calls} connect/send calls traced, " + (
        "all to loopback (or AF_UNIX/netlink)" if ok else f"OFF LOOPBACK: {', '.join(bad)}"
    )
    return line, ok


def bindings_check(runner, label, v, lib, symbols, procs, work):
    """LD_DEBUG: LIB is loaded in PROCS processes (one LD_DEBUG_OUTPUT file each) and the
    program's calls of SYMBOLS are bound to it: the peer is really in."""
    out = os.path.join(work, "ld-debug")
    for f in os.listdir(work):
        if f.startswith("ld-debug"):
            os.unlink(os.path.join(work, f))
    env = dict(v.env, LD_DEBUG="files,bindings", LD_DEBUG_OUTPUT=out)
    runner.run(v.argv, env=env)
    base = re.escape(os.path.basename(lib))
    loaded, text = 0, ""
    for f in os.listdir(work):
        if f.startswith("ld-debug"):
            with open(os.path.join(work, f), errors="replace") as fh:
                t = fh.read()
            loaded += bool(re.search(rf"file=\S*{base} \[0\]", t))
            text += t
    found = [s for s in symbols if re.search(rf"to \S*{base} \[\d+\]: normal symbol `{s}'", text)]
    ok = len(found) == len(symbols) and loaded >= procs
    line = f"{label} [{v.key}]: {os.path.basename(lib)} loaded in {loaded} process{'es' if loaded != 1 else ''}"
    if symbols:
        line += f", {', '.join(symbols)} bound to it: {', '.join(found) or 'none'}"
    return line + ("" if ok else f"  <-- UNEXPECTED (wanted {procs} processes, {symbols})"), ok


# ---------------------------------------------------------------- rules


def generate_rules(count):
    """count-1 rules that never match 127.0.0.1, then `loopback`, so a scan that stops at the
    first match visits them all. Documentation and test ranges only."""
    rules = []
    i = 0
    while len(rules) < count - 1:
        b = i % 256
        h = (i * 2654435761) & 0xFFFFFFFF  # spread the generated networks
        kind = i % 10
        if kind == 0:
            rules.append(f"203.0.113.{b}:{1 + i % 65000}")
        elif kind == 1:
            rules.append(f"198.51.100.{b}")
        elif kind == 2:  # IPv4 networks /15../32 inside 198.18.0.0/15 (benchmarking range)
            base = int(ipaddress.ip_address("198.18.0.0")) | (h & 0x1FFFF)
            rules.append(str(ipaddress.ip_network((base, 15 + i % 18), strict=False)))
        elif kind == 3:
            rules.append(f"192.0.2.{b}/32:{1000 + i % 5000}-{7000 + i % 5000}")
        elif kind == 4:
            rules.append(f"2001:db8:{h & 0xFFFF:x}:{i & 0xFFFF:x}::/64")
        elif kind == 5:
            rules.append(f"[2001:db8::{i:x}]:{1 + i % 65000}")
        elif kind == 6:
            rules.append(f"host{i}.test")
        elif kind == 7:
            rules.append(f"*.zone{i}.test:443")
        elif kind == 8:
            rules.append(f"svc{i}.example.test:8000-8999")
        else:  # IPv6 networks /32../128 inside 2001:db8::/32
            base = int(ipaddress.ip_address("2001:db8::")) | (h << 64) | i
            rules.append(str(ipaddress.ip_network((base, 32 + i % 97), strict=False)))
        i += 1
    rules.append("loopback")
    return rules


# ---------------------------------------------------------------- peers


def find_peers(args, work, wanted):
    """Which peers can run here: {peer: (argv prefix, env)}, a skip reason for the others, and
    the preloaded library of those that preload one."""
    have, why, libs = {}, {}, {}
    if "shim" in wanted:
        if args.shim and os.path.exists(args.shim):
            have["shim"] = ([], {"LD_PRELOAD": args.shim})
            libs["shim"] = args.shim
        else:
            why["shim"] = "fwd_shim.so was not built"
    if "strace" in wanted:
        strace = shutil.which("strace")
        if not strace:
            why["strace"] = "strace is not installed"
        elif subprocess.run([strace, "-f", "-qq", "-o", "/dev/null", "/bin/true"],
                            stderr=subprocess.DEVNULL).returncode != 0:
            why["strace"] = "strace cannot trace here (ptrace not permitted?)"
        else:
            have["strace"] = ([strace, "-f", "-qq", "-e", "trace=network", "-o", "/dev/null"], {})
    if "proxychains" in wanted:
        pc = shutil.which("proxychains4")
        if not pc:
            why["proxychains"] = "proxychains4 is not installed"
        else:
            conf = os.path.join(work, "proxychains.conf")
            with open(conf, "w") as f:
                # Loopback goes direct (localnet); names are never resolved by the host
                # (proxy_dns: a name not in /etc/hosts gets a fake 224.x address); the proxy,
                # on loopback, is never used by the workloads.
                f.write("strict_chain\nproxy_dns\nremote_dns_subnet 224\n"
                        "tcp_read_time_out 15000\ntcp_connect_time_out 8000\n"
                        "localnet 127.0.0.0/255.0.0.0\n\n[ProxyList]\nsocks5 127.0.0.1 9\n")
            # what it preloads (a path compiled into proxychains4) is in the child's environment
            r = subprocess.run([pc, "-q", "-f", conf, "/usr/bin/env"], capture_output=True, text=True)
            lib = [line[len("LD_PRELOAD="):] for line in r.stdout.splitlines()
                   if line.startswith("LD_PRELOAD=")]
            if r.returncode != 0 or not lib:
                why["proxychains"] = "proxychains4 -q env failed or preloaded nothing"
            else:
                have["proxychains"] = ([pc, "-q", "-f", conf], {})
                libs["proxychains"] = lib[0].split(":")[0]
    if "pytest-socket" in wanted:
        r = subprocess.run([args.python, "-c", "import pytest_socket"], stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            why["pytest-socket"] = "the pytest_socket module is not installed"
        else:
            have["pytest-socket"] = ([], {})
    for p in PEERS:
        if p not in wanted and p not in why:
            why[p] = "not in BENCH_PEERS"
    return have, why, libs


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory of the compiled workloads")
    ap.add_argument("--egress-run", required=True)
    ap.add_argument("--python", required=True, help="the real python binary (not a shim)")
    ap.add_argument("--work", required=True, help="scratch directory")
    ap.add_argument("--skip", default="", help="comma-separated workloads to skip")
    ap.add_argument("--shim", default="", help="the forwarding-only LD_PRELOAD shim")
    ap.add_argument("--suite-dir", default="", help="unpacked sdist whose tests/ is the pytest suite")
    ap.add_argument("--suite-name", default="")
    ap.add_argument("--suite-stdlib", action="store_true",
                    help="no sdist: use a few modules of the stdlib's test package")
    ap.add_argument("--suite-skip", default="", help="why there is no pytest suite")
    args = ap.parse_args()

    runs = int(os.environ.get("BENCH_RUNS", "5"))
    if runs < 1:
        raise SystemExit("bench: BENCH_RUNS must be at least 1")
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    div = 10 if quick else 1
    only = [w for w in os.environ.get("BENCH_ONLY", "").split(",") if w]
    skip = set(w for w in args.skip.split(",") if w)
    wanted_peers = [p for p in os.environ.get("BENCH_PEERS", ",".join(PEERS)).split(",") if p]

    def selected(name):
        return name not in skip and (not only or name in only)

    def count(default):
        return max(1, default // div)

    py = args.python
    binp = lambda prog: os.path.join(args.bin, prog)  # noqa: E731
    eg = args.egress_run
    block = [eg, "--quiet", "--allow", "loopback", "--"]
    audit = [eg, "--quiet", "--audit", "--"]
    work = args.work
    report = os.path.join(work, "report.jsonl")

    runner = Runner(work, binp("measure"))
    peers, peer_skip, peer_libs = find_peers(args, work, wanted_peers)
    for p, why in peer_skip.items():
        if why != "not in BENCH_PEERS":
            progress(f"bench: peer {p} skipped: {why}")

    dns_log = os.environ.get("EGRESS_DNS_LOG")
    dns_before = count_dns_queries(dns_log)

    started = time.time()
    with open("/proc/loadavg") as f:
        load_before = " ".join(f.read().split()[:3])

    def with_prefix(prefix, build):
        return lambda n: prefix + build(n)

    def c_build(path, *extra):
        return lambda n: [path, str(n), *extra]

    def peer_variants(wname, build, n, which=("shim", "strace", "proxychains")):
        """The peers' variants of a workload (some run a fraction of the count)."""
        out = []
        for p in which:
            if p in peers:
                prefix, env = peers[p]
                pn = max(1, n // PEER_DIVISOR.get((p, wname), 1))
                out.append(Variant(p, with_prefix(prefix, build), pn, env))
        return out

    workloads = []
    checks = []  # (line, ok)

    # -- the C loops: native, egress-run, peers
    c_loops = [
        ("connect", "connect", 40_000, "TCP connect+close, 127.0.0.1", "op"),
        ("udp", "udp", 500_000, "UDP sendto, 127.0.0.1", "op"),
        ("gai", "gai", 200_000, 'getaddrinfo("localhost")', "op"),
        ("spawn", "spawn", 3_000, "posix_spawn /bin/true + wait", "exec"),
        ("dlsym", "dlsym", 1_000_000, 'dlsym(libc, "getpid"): forwarded', "op"),
        ("dlsym-hooked", "dlsym", 200_000, 'dlsym(libc, "connect"): answered by the guard', "op"),
    ]
    for name, prog, default_n, desc, unit in c_loops:
        if not selected(name):
            continue
        n = count(default_n)
        build = c_build(binp(prog), *(["connect"] if name == "dlsym-hooked" else []))
        vs = [Variant("native", build, n), Variant("egress-run", with_prefix(block, build), n)]
        if name == "udp":
            vs.append(Variant("audit", with_prefix(audit, build), n))
            # --seccomp: every datagram still decided by the library, passing the kernel
            # layer's filter through the library's stub (no round trip)
            vs.append(Variant("seccomp", with_prefix([eg, "--quiet", "--seccomp", "--allow", "loopback", "--"],
                                                     build), n))
            # a nested run: every datagram is decided by two levels
            vs.append(Variant("nested", with_prefix(block + block, build), n))
        if not name.startswith("dlsym"):
            vs += peer_variants(name, build, n)
        workloads.append(Workload(name, desc, unit, vs, runs))

    # -- the connect loop of a static program: the kernel layer decides every connect (a
    # notification round trip, and the supervisor connects on a duplicate of the socket)
    if selected("connect-static") and os.path.exists(binp("connect-static")):
        n = count(5_000)
        build = c_build(binp("connect-static"))
        vs = [Variant("native", build, n), Variant("egress-run", with_prefix(block, build), n)]
        workloads.append(Workload("connect-static", "TCP connect+close, 127.0.0.1, static program",
                                  "op", vs, runs))

    # -- start-up of one program (one sample = one run)
    startup_n = count(STARTUP_RUNS)
    if selected("startup"):
        true = lambda n: ["/bin/true"]  # noqa: E731
        vs = [Variant("native", true, 1), Variant("egress-run", with_prefix([eg, "--"], true), 1)]
        vs += peer_variants("startup", true, 1)
        workloads.append(Workload("startup", "start-up of /bin/true", "run", vs, startup_n))
        pypass = lambda n: [py, "-c", "pass"]  # noqa: E731
        vs = [Variant("native", pypass, 1),
              Variant("egress-run", with_prefix([eg, "--allow", "loopback", "--"], pypass), 1)]
        workloads.append(Workload("startup-py", "start-up of python3 -c pass", "run", vs, startup_n))

    # -- everyday exec-heavy work (one sample = one run): a shell loop, git, make, subprocess
    everyday = everyday_workloads(work, py) if selected("everyday") else []
    for name, desc, argv in everyday:
        build = lambda n, argv=argv: argv  # noqa: E731
        vs = [Variant("native", build, 1),
              Variant("egress-run", with_prefix([eg, "--quiet", "--allow", "loopback", "--"], build), 1)]
        workloads.append(Workload(name, desc, "run", vs, runs))

    # -- Python: create_connection loop
    pyconnect = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyconnect.py")
    if selected("python"):
        n = count(15_000)
        build = lambda n: [py, pyconnect, str(n)]  # noqa: E731
        vs = [Variant("native", build, n), Variant("egress-run", with_prefix(block, build), n)]
        if "pytest-socket" in peers:
            vs.append(Variant("pytest-socket", lambda n, b=build: b(n) + ["--pytest-socket"], n))
        workloads.append(Workload("python", "Python socket.create_connection, 127.0.0.1", "op", vs, runs))

    # -- a real pytest suite (one sample = one run of the suite)
    if selected("pytest"):
        suite = suite_argv(args, py, quick, work)
        if suite is None:
            why = args.suite_skip or "no suite available"
            progress(f"bench: pytest suite skipped: {why}")
            checks.append((f"pytest: skipped: {why}", True))
        else:
            cmd, label = suite
            plain = lambda n: cmd + ["-p", "no:socket"]  # noqa: E731  (pytest-socket not loaded)
            vs = [Variant("native", plain, 1), Variant("egress-run", with_prefix(block, plain), 1)]
            if "pytest-socket" in peers:
                vs.append(Variant("pytest-socket",
                                  lambda n: cmd + ["--disable-socket", "--allow-unix-socket"], 1))
            workloads.append(Workload("pytest", label, "run", vs, runs))

    # -- rule count: the connect loop, worst case for a scan (the only matching rule is last);
    # and the spawn loop, since every new process takes in the whole policy
    if selected("rules"):
        files = {}
        for c in RULE_COUNTS:
            files[c] = os.path.join(work, f"rules-{c}.allow")
            with open(files[c], "w") as f:
                f.write("\n".join(generate_rules(c)) + "\n")
        for prog, default_n, unit in (("connect", 20_000, "op"), ("spawn", 1_000, "exec")):
            n = count(default_n)
            build = c_build(binp(prog))
            vs = [Variant("native", build, n)]
            for c in RULE_COUNTS:
                prefix = [eg, "--quiet", "--allow-file", files[c], "--"]
                vs.append(Variant(f"{c} rules", with_prefix(prefix, build), n))
            workloads.append(Workload(f"rules-{prog}", prog, unit, vs, runs))

    # -- threads and processes: the same total count split k ways
    for wname, prog, default_n in (("threads", "connect", 10_000), ("threads", "udp", 125_000),
                                   ("procs", "connect", 10_000), ("procs", "udp", 125_000)):
        if not selected(wname):
            continue
        n = count(default_n)
        path = binp(prog)
        vs = []
        for k in (1, 2, 4):
            if wname == "threads":
                build, total = c_build(path, str(k)), n
            else:
                build = lambda n, k=k, path=path: [binp("par"), str(k), path, str(max(1, n // k))]  # noqa: E731
                total = max(1, n // k) * k
            vs.append(Variant(f"native x{k}", build, total))
            vs.append(Variant(f"egress-run x{k}", with_prefix(block, build), total))
        what = "threads" if wname == "threads" else "processes"
        workloads.append(Workload(f"{wname}-{prog}", f"{prog}, 1/2/4 {what}", "op", vs, runs))

    # ---------------- checks before timing: the guard and the peers really are at work
    for w in workloads:
        checks += checks_for(runner, w, peers, peer_libs, args, work, report)
    if "strace" not in peers:
        checks.append(("where the variants send: not checked (needs strace)", True))
    for line, ok in checks:
        progress("check " + line)
    if not all(ok for _, ok in checks):
        raise SystemExit("bench: a check failed (see above); not timing anything")

    # ---------------- timing
    for w in workloads:
        run_workload(runner, w)

    # ---------------- one long audit run: how many report lines for 1M identical datagrams
    report_lines = None
    if selected("report"):
        n = count(1_000_000)
        runner.run(audit[:1] + ["--report", report] + audit[1:] + [binp("udp"), str(n)])
        summary, lines, _ = read_report(report)
        report_lines = (n, lines, summary.get("attempts"))
        progress(f"report   {n:,} datagrams (audit): {lines} report lines, attempts={summary.get('attempts')}")

    dns_after = count_dns_queries(dns_log)
    with open("/proc/loadavg") as f:
        load_after = " ".join(f.read().split()[:3])
    elapsed = time.time() - started

    print_tables(workloads, quick, runs, startup_n, load_before, load_after, elapsed,
                 peers, peer_skip, report_lines, checks, dns_before, dns_after)


def everyday_workloads(work, py):
    """(name, description, argv; the program by absolute path, as measure.c execs it) of
    everyday exec-heavy work, built in `work`: a bash loop of
    200 /bin/true, `git status` in a repository of 500 files, `make -j2 -B` of 20 C files, and
    100 Python subprocess.run calls. None of them touches the network."""
    out = []
    out.append(("everyday-bash", "bash: 200 × /bin/true",
                [shutil.which("bash") or "/bin/bash", "-c", "for i in $(seq 200); do /bin/true; done"]))
    if shutil.which("git"):
        repo = os.path.join(work, "git-repo")
        if not os.path.isdir(repo):
            os.makedirs(repo)
            for i in range(500):
                with open(os.path.join(repo, f"f{i}.txt"), "w") as f:
                    f.write(f"{i}\n")
            env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.invalid",
                       GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.invalid")
            for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "x"]):
                subprocess.run(cmd, cwd=repo, env=env, check=True)
        out.append(("everyday-git", "git status (500 files)", [shutil.which("git"), "-C", repo, "status", "--short"]))
    if shutil.which("make") and shutil.which("gcc"):
        proj = os.path.join(work, "make-proj")
        os.makedirs(proj, exist_ok=True)
        for i in range(20):
            with open(os.path.join(proj, f"m{i}.c"), "w") as f:
                f.write(f"int f{i}(int x) {{ return x * {i + 1}; }}\n")
        with open(os.path.join(proj, "Makefile"), "w") as f:
            objs = " ".join(f"m{i}.o" for i in range(20))
            f.write(f"all: {objs}\n%.o: %.c\n\tgcc -O1 -c $< -o $@\n")
        out.append(("everyday-make", "make -j2 -B (20 C files)", [shutil.which("make"), "-s", "-C", proj, "-j2", "-B"]))
    out.append(("everyday-subprocess", "Python: 100 × subprocess.run(['/bin/true'])",
                [py, "-c", "import subprocess\nfor _ in range(100): subprocess.run(['/bin/true'])"]))
    return out


def count_dns_queries(log):
    """Queries the sandbox's test resolver has logged so far (None outside the sandbox)."""
    if not log or not os.path.exists(log):
        return None
    with open(log, errors="replace") as f:
        return sum(1 for line in f if "query[" in line or "query " in line.lower())


def suite_argv(args, py, quick, work):
    """The pytest command for the suite (without plugin options), and its label."""
    base = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if args.suite_dir:
        tests = os.path.join(args.suite_dir, "tests")
        target = os.path.join(tests, "test_recipes.py") if quick else tests
        label = f"pytest: {args.suite_name} {'tests/test_recipes.py' if quick else 'tests/'}"
        return base + ["--rootdir", args.suite_dir, target], label
    if args.suite_stdlib:
        # unittest-style stdlib modules that pass under pytest (test_json, test_heapq... need
        # their own load_tests and fail when collected by pytest)
        mods = ["test_string", "test_textwrap"] if quick else [
            "test_textwrap", "test_fractions", "test_collections", "test_difflib", "test_shlex",
            "test_string"]
        ini = os.path.join(work, "suite-pytest.ini")
        with open(ini, "w") as f:
            f.write("[pytest]\n")
        return base + ["-c", ini, "--rootdir", work, "--pyargs"] + [f"test.{m}" for m in mods], \
            f"pytest: stdlib {', '.join(mods)}"
    return None


def checks_for(runner, w, peers, peer_libs, args, work, report):
    """Guard checks (small guarded runs with --report), then where each peer is really in, and
    that nothing any variant sends leaves loopback."""
    out = []
    small = 200
    strace = peers.get("strace", ([None], {}))[0][0]

    if w.name in ("connect", "udp", "gai", "spawn"):
        for key, mode in (("egress-run", "block"), ("audit", "audit, no rules"),
                          ("nested", "2 nested runs, the outer report")):
            v = w.v(key)
            if not v:
                continue
            s = v.shrunk(small)
            expect = {"connect": {"attempts": s.n}, "udp": {"attempts": s.n},
                      "spawn": {"processes": s.n + 1}, "gai": {}}[w.name]
            line, ok, _ = guard_check(runner, w.name, s.argv, expect, report)
            out.append((f"{line} [N={s.n}, {mode}]", ok))
        # the call each loop makes, bound to the peer's library (proxychains does not hook
        # posix_spawn: there, what counts is that every child loads it)
        sym = {"connect": ["connect"], "udp": ["sendto"], "gai": ["getaddrinfo"],
               "spawn": ["posix_spawn"]}[w.name]
        for key in ("shim", "proxychains"):
            v, lib = w.v(key), peer_libs.get(key)
            if v:
                s = v.shrunk(20)
                procs = s.n + 1 if w.name == "spawn" else 1
                syms = [] if (key, w.name) == ("proxychains", "spawn") else sym
                out.append(bindings_check(runner, w.name, s, lib, syms, procs, work))
        if strace:
            for v in w.variants:
                if v.key != "strace":
                    out.append(traffic_check(runner, strace, w.name, v.shrunk(20), work))
    elif w.name.startswith("everyday"):
        v = w.v("egress-run")
        line, ok, _ = guard_check(runner, w.name, v.argv, {"denied": 0}, report)
        summary, _, _ = read_report(report)
        ok = ok and (summary.get("processes") or 0) >= 1
        out.append((line + ("" if ok else "  <-- the guard is not in the processes"), ok))
    elif w.name.startswith("dlsym"):
        # the look-up really is answered by the guard (connect) or forwarded to libc (getpid)
        want = "libegress_preload.so" if w.name == "dlsym-hooked" else "libc.so.6"
        m = runner.run(w.v("egress-run").shrunk(small).argv, env={"BENCH_DLSYM_SHOW": "1"},
                       stdout=os.path.join(work, "dlsym.out"), check=False)
        with open(os.path.join(work, "dlsym.out")) as f:
            got = f.read().strip()
        ok = m["code"] == "0" and got == want
        out.append((f"{w.name} [egress-run]: answer defined in {got or '?'}"
                    + ("" if ok else f"  <-- expected {want}"), ok))
    elif w.name == "python":
        v = w.v("egress-run").shrunk(small)
        line, ok, _ = guard_check(runner, "python", v.argv, {"attempts": v.n, "denied": 0}, report)
        out.append((line + f" [N={v.n}]", ok))
        ps = w.v("pytest-socket")
        if ps:
            # connecting anywhere but 127.0.0.1 must raise pytest-socket's error: it is active
            probe = [args.python, "-c",
                     "import socket, pytest_socket\n"
                     "pytest_socket.socket_allow_hosts(['127.0.0.1'])\n"
                     "s = socket.socket()\n"
                     "try:\n    s.connect(('127.0.0.2', 9))\n"
                     "except pytest_socket.SocketConnectBlockedError:\n    raise SystemExit(0)\n"
                     "raise SystemExit(1)\n"]
            m = runner.run(probe, check=False)
            out.append(("python [pytest-socket]: socket_allow_hosts(['127.0.0.1']) refuses 127.0.0.2"
                        + ("" if m["code"] == "0" else "  <-- NOT ACTIVE"), m["code"] == "0"))
        if strace:
            for v in w.variants:
                out.append(traffic_check(runner, strace, "python", v.shrunk(20), work))
    elif w.name == "pytest":
        v = w.v("egress-run")
        out_file = os.path.join(work, "pytest.out")
        runner.run(v.argv[:1] + ["--report", report] + v.argv[1:], stdout=out_file)
        summary, _, _ = read_report(report)
        with open(out_file, errors="replace") as f:
            tail = [line.strip() for line in f if line.strip()][-1:]
        tail = tail[0] if tail else "(no output)"
        passed = re.search(r"(\d+) passed", tail)
        bad = re.search(r"\d+ (failed|error)", tail)
        ok = bool(passed) and not bad and summary.get("denied") == 0
        out.append((f"pytest [egress-run]: '{tail}'; report attempts={summary.get('attempts')} "
                    f"denied={summary.get('denied')} processes={summary.get('processes')}"
                    + ("" if ok else "  <-- UNEXPECTED"), ok))
        w.tests = int(passed.group(1)) if passed else None
        ps = w.v("pytest-socket")
        if ps:
            m = runner.run(ps.argv, stdout=out_file, check=False)
            with open(out_file, errors="replace") as f:
                tail = ([line.strip() for line in f if line.strip()] or ["(no output)"])[-1]
            out.append((f"pytest [pytest-socket]: '{tail}'", m["code"] == "0"))
            probe = os.path.join(work, "test_socket_probe.py")
            with open(probe, "w") as f:
                f.write("import socket\n\ndef test_probe():\n    socket.socket(socket.AF_INET)\n")
            cmd = [args.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", work,
                   "--disable-socket", "--allow-unix-socket", probe]
            m = runner.run(cmd, stdout=out_file, check=False)
            out.append(("pytest [pytest-socket]: --disable-socket makes a test creating an "
                        "AF_INET socket fail" + ("" if m["code"] == "1" else "  <-- NOT ACTIVE"),
                        m["code"] == "1"))
    elif w.name == "rules-connect":
        for v in w.variants[1:]:
            s = v.shrunk(small)
            line, ok, records = guard_check(runner, w.name, s.argv, {"attempts": s.n, "denied": 0}, report)
            rules_used = sorted({r.get("rule") for r in records if r.get("type") == "connect"} - {None})
            ok = ok and rules_used == ["loopback"]
            out.append((f"{line} [{v.key}, matched by {rules_used}]", ok))
    elif w.name == "rules-spawn":
        for v in w.variants[1:]:
            s = v.shrunk(20)
            line, ok, _ = guard_check(runner, w.name, s.argv, {"processes": s.n + 1, "denied": 0}, report)
            out.append((f"{line} [{v.key}]", ok))
    elif w.name.startswith(("threads-", "procs-")):
        v = [x for x in w.variants if x.key.startswith("egress-run")][-1]  # 4 threads/processes
        s = v.shrunk(small)
        expect = {"attempts": s.n}
        if w.name.startswith("procs-"):
            k = int(v.key.rsplit("x", 1)[1])
            expect = {"attempts": s.n // k * k, "processes": k + 1}
        line, ok, _ = guard_check(runner, w.name, s.argv, expect, report)
        out.append((f"{line} [{v.key}]", ok))
    return out


# ---------------------------------------------------------------- output


def print_tables(workloads, quick, runs, startup_n, load_before, load_after, elapsed,
                 peers, peer_skip, report_lines, checks, dns_before, dns_after):
    by = {w.name: w for w in workloads}

    print()
    print(f"Runs per variant: {runs} (workloads); {startup_n} (startup rows)."
          f"{' BENCH_QUICK=1: counts divided by 10.' if quick else ''}")
    print(f"Load average before: {load_before}; after: {load_after}; "
          f"benchmark took {elapsed:.0f} s.")

    # -- the native/guarded tables (as before, plus the Python rows)
    rows = []  # (label, workload, guarded variant key)
    for name, key, tag in (("connect", "egress-run", "block"),
                           ("connect-static", "egress-run", "kernel layer"),
                           ("udp", "egress-run", "block"),
                           ("udp", "seccomp", "--seccomp"),
                           ("udp", "audit", "audit, no rules"), ("udp", "nested", "2 nested runs"),
                           ("gai", "egress-run", "block"),
                           ("spawn", "egress-run", "block"), ("dlsym", "egress-run", "block"),
                           ("dlsym-hooked", "egress-run", "block"), ("python", "egress-run", "block")):
        if name in by:
            rows.append((f"{by[name].desc} [{tag}]", by[name], key))
    if "pytest" in by:
        rows.append((f"{by['pytest'].desc} [block]", by["pytest"], "egress-run"))
    if "startup" in by:
        rows.append(("egress-run -- /bin/true", by["startup"], "egress-run"))
    if "startup-py" in by:
        rows.append(("egress-run --allow loopback -- python3 -c pass", by["startup-py"], "egress-run"))
    for name in ("everyday-bash", "everyday-git", "everyday-make", "everyday-subprocess"):
        if name in by:
            rows.append((by[name].desc, by[name], "egress-run"))

    if rows:
        print()
        print("| workload | N | native median (spread) | guarded median (spread) | ratio wall "
              "| ratio CPU | added per op |")
        print("| --- | ---: | --- | --- | ---: | ---: | ---: |")
        for label, w, key in rows:
            nat, gua = w.v("native"), w.v(key)
            c = compare(nat, gua)
            ncount = f"{len(gua.samples):,} runs" if w.unit == "run" else f"{gua.n:,}"
            added = fmt_added(c["wall_added"], ms=w.unit == "run")
            print(f"| {label} | {ncount} | {fmt_spread([m['wall'] for m in nat.samples])} "
                  f"| {fmt_spread([m['wall'] for m in gua.samples])} | {c['wall']:.2f} "
                  f"| {c['cpu']:.2f} | {added} |")

        print()
        print("CPU split and memory (medians). Guarded CPU is the whole tree; 'program' is what "
              "the workload itself used (its own getrusage at exit, children included); "
              "'launcher' is the rest. 'program RSS' is the workload process's own peak.")
        print()
        print("| workload | CPU native | CPU guarded | of which program | of which launcher "
              "| added CPU per op | peak RSS native | peak RSS guarded (largest process) "
              "| program RSS native → guarded |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, w, key in rows:
            nat, gua = w.v("native"), w.v(key)
            c = compare(nat, gua)
            own = gua.med("own_cpu")
            launcher = (statistics.median(m["cpu"] - m["own_cpu"] for m in gua.samples
                                          if m["own_cpu"] is not None) if own is not None else None)
            nrss, grss = nat.med("own_rss"), gua.med("own_rss")
            prss = f"{int(nrss):,} → {int(grss):,} KiB" if nrss and grss else "n/a"
            print(f"| {label} | {fmt_time(nat.med('cpu'))} | {fmt_time(gua.med('cpu'))} "
                  f"| {fmt_time(own) if own is not None else 'n/a'} "
                  f"| {fmt_time(launcher) if launcher is not None else 'n/a'} "
                  f"| {fmt_added(c['cpu_added'], ms=w.unit == 'run')} "
                  f"| {int(nat.med('rss')):,} KiB | {int(gua.med('rss')):,} KiB | {prss} |")

    # -- peers
    peer_rows = [n for n in ("connect", "udp", "gai", "spawn", "startup", "python", "pytest") if n in by]
    if peer_rows:
        cols = ["egress-run"] + list(PEERS)
        print()
        print("Peers, same run: added wall per op (per exec for spawn, per run for the startup and "
              "pytest rows), then ratio to native wall / CPU. '—' = does not apply.")
        print()
        print("| workload | N | " + " | ".join(cols) + " |")
        print("| --- | ---: | " + " | ".join("---:" for _ in cols) + " |")
        scaled = []
        for name in peer_rows:
            w = by[name]
            nat = w.v("native")
            cells = []
            for col in cols:
                v = w.v(col)
                if v is None:
                    cells.append("skipped" if col in peer_skip and applies(col, name) else "—")
                    continue
                c = compare(nat, v)
                cells.append(f"{fmt_added(c['wall_added'], ms=w.unit == 'run')} "
                             f"×{c['wall']:.2f} / ×{c['cpu']:.2f}")
                if v.n != nat.n:
                    scaled.append(f"{col} on {name}: {v.n:,} of {nat.n:,}")
            n = f"{len(nat.samples)} runs" if w.unit == "run" else f"{nat.n:,}"
            print(f"| {w.desc} | {n} | " + " | ".join(cells) + " |")
            if name == "udp" and w.v("audit"):
                c = compare(nat, w.v("audit"))
                print(f"| {w.desc} (egress-run in audit mode) | {n} | "
                      f"{fmt_added(c['wall_added'])} ×{c['wall']:.2f} / ×{c['cpu']:.2f} | "
                      + " | ".join("—" for _ in PEERS) + " |")
        if scaled or peer_skip:
            print()
        if scaled:
            print("Peers run with a smaller count (compared per operation): " + "; ".join(scaled) + ".")
        if peer_skip:
            print("Peers skipped: " + "; ".join(f"{p}: {why}" for p, why in peer_skip.items()) + ".")

    # -- rule count
    rw = [by[n] for n in ("rules-connect", "rules-spawn") if n in by]
    if rw:
        print()
        print("Rule count: allow files of N rules whose only match (`loopback`) is last. Added cost "
              "per connect (connect loop) and per exec (spawn loop: every process takes in the "
              "policy); 'program RSS' is the workload process's own peak.")
        print()
        print("| loop | rules | N | median (spread) | ratio wall | ratio CPU | added per op "
              "| added CPU per op | program RSS | launcher CPU |")
        print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for w in rw:
            nat = w.v("native")
            print(f"| {w.desc} | native | {nat.n:,} | {fmt_spread([m['wall'] for m in nat.samples])} "
                  f"| | | | | {int(nat.med('own_rss')):,} KiB | |")
            for c_ in RULE_COUNTS:
                v = w.v(f"{c_} rules")
                c = compare(nat, v)
                launcher = statistics.median(m["cpu"] - m["own_cpu"] for m in v.samples)
                print(f"| {w.desc} | {c_:,} | {v.n:,} | {fmt_spread([m['wall'] for m in v.samples])} "
                      f"| {c['wall']:.2f} | {c['cpu']:.2f} | {fmt_added(c['wall_added'])} "
                      f"| {fmt_added(c['cpu_added'])} | {int(v.med('own_rss')):,} KiB | {fmt_time(launcher)} |")

    # -- threads and processes
    scal = [w for w in workloads if w.name.startswith(("threads-", "procs-"))]
    if scal:
        print()
        print("Threads and processes: the same total count split over k threads of one process, "
              "or over k processes started together (par); native vs guarded at each k.")
        print()
        print("| workload | k | N | native median | guarded median | ratio wall | ratio CPU "
              "| added per op | added CPU per op |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for w in scal:
            kind = "threads" if w.name.startswith("threads-") else "processes"
            prog = w.name.split("-", 1)[1]
            for k in (1, 2, 4):
                nat, gua = w.v(f"native x{k}"), w.v(f"egress-run x{k}")
                c = compare(nat, gua)
                print(f"| {prog}, {kind} | {k} | {nat.n:,} | {fmt_time(nat.med('wall'))} "
                      f"| {fmt_time(gua.med('wall'))} | {c['wall']:.2f} | {c['cpu']:.2f} "
                      f"| {fmt_added(c['wall_added'])} | {fmt_added(c['cpu_added'])} |")

    print_targets(by, report_lines)

    print()
    print("Checks (before timing):")
    for line, _ in checks:
        print(f"- {line}")
    if dns_before is not None:
        extra = dns_after - dns_before
        print(f"- sandbox test resolver: {extra} queries during the benchmark"
              + ("" if extra == 0 else "  <-- something resolved a name through DNS"))


def applies(peer, workload):
    if peer == "pytest-socket":
        return workload in ("python", "pytest")
    return workload in ("connect", "udp", "gai", "spawn", "startup")


def print_targets(by, report_lines):
    """The performance targets' table: measured, target, met or missed (wall, and CPU)."""
    rows = []

    def verdict(value, limit):
        if value is None:
            return "n/a"
        return "met" if value <= limit else "missed"

    def ratio_row(label, name, key, tkey):
        if name not in by or not by[name].v(key):
            rows.append((label, f"≤ {RATIO_TARGETS[tkey]:.2f}", "not run", "", "n/a", "n/a"))
            return
        c = compare(by[name].v("native"), by[name].v(key))
        t = RATIO_TARGETS[tkey]
        rows.append((label, f"≤ {t:.2f}", f"{c['wall']:.3f}", f"{c['cpu']:.3f}",
                     verdict(c["wall"], t), verdict(c["cpu"], t)))

    ratio_row("TCP connect loop", "connect", "egress-run", "connect")
    ratio_row("UDP sendto loop, allowed, block mode", "udp", "egress-run", "udp")
    ratio_row("UDP sendto loop, audit mode", "udp", "audit", "udp-audit")
    # --seccomp against the library alone (not native): the library-decided path.
    udp = by.get("udp")
    if udp and udp.v("seccomp") and udp.v("egress-run"):
        c = compare(udp.v("egress-run"), udp.v("seccomp"))
        t = RATIO_TARGETS["udp-seccomp"]
        rows.append(("UDP sendto loop, --seccomp / library alone", f"≤ {t:.2f}", f"{c['wall']:.3f}",
                     f"{c['cpu']:.3f}", verdict(c["wall"], t), verdict(c["cpu"], t)))
    ratio_row('getaddrinfo("localhost")', "gai", "egress-run", "gai")

    w = by.get("spawn")
    if w and w.v("shim"):
        g, s = compare(w.v("native"), w.v("egress-run")), compare(w.v("native"), w.v("shim"))
        cells, verdicts = [], []
        for what in ("wall_added", "cpu_added"):
            times = g[what] / s[what] if s[what] > 0 else None  # shim within noise: no ratio
            cells.append(f"{fmt_added(g[what])} vs shim {fmt_added(s[what])}"
                         + (f" (×{times:.1f})" if times is not None else ""))
            verdicts.append(verdict(times, 2.0))
        rows.append(("spawn loop, per exec added", "≤ 2× the shim's", *cells, *verdicts))
    else:
        rows.append(("spawn loop, per exec added", "≤ 2× the shim's", "not run (needs spawn + shim)",
                     "", "n/a", "n/a"))

    w = by.get("startup")
    if w:
        c = compare(w.v("native"), w.v("egress-run"))
        rows.append(("`egress-run -- /bin/true`", "≤ +2 ms absolute median",
                     fmt_added(c["wall_added"], ms=True), fmt_added(c["cpu_added"], ms=True),
                     verdict(c["wall_added"], 2e-3), verdict(c["cpu_added"], 2e-3)))
    else:
        rows.append(("`egress-run -- /bin/true`", "≤ +2 ms absolute median", "not run", "", "n/a", "n/a"))

    ratio_row("pytest suite" + (f" ({by['pytest'].tests} tests)" if "pytest" in by
                                and by["pytest"].tests else ""),
              "pytest", "egress-run", "pytest")

    w = by.get("connect")
    if w and w.v("strace"):
        g, s = compare(w.v("native"), w.v("egress-run")), compare(w.v("native"), w.v("strace"))
        vals = [g[k] / s[k] if s[k] and s[k] > 0 else None for k in ("wall_added", "cpu_added")]
        fmt = lambda x, a, b: (f"1/{1 / x:.0f} ({fmt_added(a)} vs {fmt_added(b)})" if x and x > 0
                               else f"none measured ({fmt_added(a)} vs {fmt_added(b)})")  # noqa: E731
        rows.append(("vs strace on the connect loop", "guarded overhead ≤ 1/20 of strace's",
                     fmt(vals[0], g["wall_added"], s["wall_added"]),
                     fmt(vals[1], g["cpu_added"], s["cpu_added"]),
                     verdict(vals[0], 1 / 20), verdict(vals[1], 1 / 20)))
    else:
        rows.append(("vs strace on the connect loop", "guarded overhead ≤ 1/20 of strace's",
                     "not run (needs connect + strace)", "", "n/a", "n/a"))

    # the workload process's own peak RSS, guarded minus native; the worst workload
    worst = None
    for name in ("connect", "udp", "gai", "spawn", "python"):
        w = by.get(name)
        if not w:
            continue
        for key in ("egress-run", "audit"):
            v = w.v(key)
            if v and v.med("own_rss") and w.v("native").med("own_rss"):
                d = v.med("own_rss") - w.v("native").med("own_rss")
                if worst is None or d > worst[0]:
                    worst = (d, f"{name}{' audit' if key == 'audit' else ''}")
    if worst:
        w = by.get("rules-connect")
        many = ""
        if w:  # with a long allow list the policy each process maps is larger
            d = w.v(f"{max(RULE_COUNTS)} rules").med("own_rss") - w.v("native").med("own_rss")
            many = f"; with {max(RULE_COUNTS):,} rules {d:+,.0f} KiB"
        rows.append(("peak RSS of a guarded process", "≤ +2 MiB",
                     f"{worst[0]:+,.0f} KiB (worst workload: {worst[1]}){many}", "",
                     verdict(worst[0], RSS_TARGET_KIB), ""))
    else:
        rows.append(("peak RSS of a guarded process", "≤ +2 MiB", "not run", "", "n/a", ""))

    if report_lines:
        n, lines, attempts = report_lines
        ok = lines <= REPORT_LINES_TARGET and attempts == n
        rows.append((f"report size for {n:,} identical datagrams", "a few lines, not 1M",
                     f"{lines} lines (attempts={attempts:,})" if attempts is not None else f"{lines} lines",
                     "", "met" if ok else "missed", ""))
    else:
        rows.append(("report size for 1M identical datagrams", "a few lines, not 1M", "not run", "",
                     "n/a", ""))

    print()
    print(f"Performance targets. Ratios are guarded/native medians; 'met' uses the wall figure, "
          f"then the CPU figure (user+sys of the tree). 'A few lines' is taken as ≤ {REPORT_LINES_TARGET}.")
    print()
    print("| target | goal | measured (wall) | measured (CPU) | wall | CPU |")
    print("| --- | --- | ---: | ---: | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
