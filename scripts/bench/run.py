#!/usr/bin/env python3
"""Runs the egress-run benchmarks and prints the results table.

Called by scripts/bench.sh, which compiles the workloads (scripts/bench/*.c) into a temp
directory and passes it here. Every workload talks to 127.0.0.1 only and stops by itself after
a fixed number of iterations.

Each workload runs natively and under egress-run, alternating (the order flips every round),
BENCH_RUNS times each. Every run goes through the small `measure` helper (measure.c), which
forks, execs and wait4()s the command and reports wall time (CLOCK_MONOTONIC around fork..wait4),
CPU time (user+sys of the whole child tree: under egress-run that is the launcher plus COMMAND
plus everything COMMAND waited for) and peak RSS (ru_maxrss: the tree's largest process). The C
workloads also write their own CPU time at exit (BENCH_RUSAGE_OUT), which splits the guarded
CPU into the program's share and the launcher's.
"""

import argparse
import json
import os
import statistics
import sys
import time

# name -> (program, default count, description)
WORKLOADS = {
    "connect": ("connect", 40_000, "TCP connect+close, 127.0.0.1"),
    "udp": ("udp", 500_000, "UDP sendto, 127.0.0.1"),
    "gai": ("gai", 200_000, 'getaddrinfo("localhost")'),
    "spawn": ("spawn", 3_000, "posix_spawn /bin/true + wait"),
}
STARTUP_RUNS = 50


def fmt_time(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
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


class Runner:
    def __init__(self, work, measure):
        self.work = work
        self.measure = measure
        self.errfile = os.path.join(work, "stderr.txt")
        self.result_file = os.path.join(work, "result.txt")
        self.rusage_file = os.path.join(work, "rusage.txt")
        self.env = dict(os.environ)
        self.env["BENCH_RUSAGE_OUT"] = self.rusage_file

    def run(self, argv):
        """Runs argv once through the measure helper; returns a dict of measurements.

        Fails loudly on a non-zero exit (a denial under egress-run exits 3)."""
        for f in (self.rusage_file, self.result_file):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, self.errfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        ]
        helper = [self.measure, self.result_file] + argv
        pid = os.posix_spawn(self.measure, helper, self.env, file_actions=actions)
        _, status = os.waitpid(pid, 0)
        try:
            with open(self.result_file) as f:
                code, wall, user, sys_, rss = f.read().split()
        except (FileNotFoundError, ValueError):
            code = f"? (measure status {status})"
        if code != "0":
            with open(self.errfile, errors="replace") as f:
                err = f.read()
            raise SystemExit(f"bench: {' '.join(argv)} exited with {code}\n{err}".rstrip())
        own = None
        try:
            with open(self.rusage_file) as f:
                u, s, _ = f.read().split()
                own = float(u) + float(s)
        except (FileNotFoundError, ValueError):
            pass
        return {
            "wall": float(wall),
            "cpu": float(user) + float(sys_),
            "rss": int(rss),
            "own_cpu": own,
        }


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


def validate(runner, name, argv, n, report):
    """One small guarded run with --report: proves the guard really sees the workload."""
    runner.run(argv[:1] + ["--report", report] + argv[1:])
    summary = {}
    with open(report) as f:
        for line in f:
            obj = json.loads(line)
            if obj.get("type") == "summary":
                summary = obj
    attempts, denied, procs = (summary.get(k) for k in ("attempts", "denied", "processes"))
    expect = {"connect": ("attempts", n), "udp": ("attempts", n), "spawn": ("processes", n + 1)}
    ok = True
    if name in expect:
        key, want = expect[name]
        ok = summary.get(key) == want
    return (
        f"{name}: N={n} -> report attempts={attempts} denied={denied} processes={procs}"
        + ("" if ok else "  <-- UNEXPECTED")
    ), ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory of the compiled workloads")
    ap.add_argument("--egress-run", required=True)
    ap.add_argument("--python", required=True, help="the real python binary (not a shim)")
    ap.add_argument("--work", required=True, help="scratch directory")
    ap.add_argument("--skip", default="", help="comma-separated workloads to skip")
    args = ap.parse_args()

    runs = int(os.environ.get("BENCH_RUNS", "5"))
    if runs < 1:
        raise SystemExit("bench: BENCH_RUNS must be at least 1")
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    div = 10 if quick else 1
    only = [w for w in os.environ.get("BENCH_ONLY", "").split(",") if w]
    skip = set(w for w in args.skip.split(",") if w)

    eg = args.egress_run
    block = [eg, "--quiet", "--allow", "loopback", "--"]
    audit = [eg, "--quiet", "--audit", "--"]

    runner = Runner(args.work, os.path.join(args.bin, "measure"))
    started = time.time()
    with open("/proc/loadavg") as f:
        load_before = " ".join(f.read().split()[:3])

    # rows: (label, n, native samples, guarded samples, unit) where unit "op" or "run"
    rows = []
    checks = []

    for name, (prog, default_n, desc) in WORKLOADS.items():
        if name in skip or (only and name not in only):
            continue
        n = max(1, default_n // div)
        path = os.path.join(args.bin, prog)
        variants = [("block", block)]
        if name == "udp":
            variants.append(("audit, no rules", audit))

        for vname, prefix in variants:
            line, ok = validate(
                runner, name, prefix + [path, str(min(n, 200))], min(n, 200),
                os.path.join(args.work, "report.jsonl"),
            )
            checks.append(f"{line} [{vname}]")
            progress("check " + checks[-1])

        samples = {"native": []}
        for vname, _ in variants:
            samples[vname] = []
        order = [("native", [])] + variants
        for r in range(runs):
            seq = order if r % 2 == 0 else list(reversed(order))
            for vname, prefix in seq:
                m = runner.run(prefix + [path, str(n)])
                samples[vname].append(m)
                progress(
                    f"{name:8} run {r + 1}/{runs} {vname:16} wall {fmt_time(m['wall']):>9}"
                    f"  cpu {fmt_time(m['cpu']):>9}  rss {m['rss']} KiB"
                )
        for vname, _ in variants:
            label = f"{desc} [{vname}]"
            rows.append((label, n, samples["native"], samples[vname], "op"))

    startup = [
        ("egress-run -- /bin/true", ["/bin/true"], [eg, "--"]),
        (
            "egress-run --allow loopback -- python3 -c pass",
            [args.python, "-c", "pass"],
            [eg, "--allow", "loopback", "--"],
        ),
    ]
    startup_n = max(1, STARTUP_RUNS // div)
    if not only or "startup" in only:
        for label, cmd, prefix in startup:
            nat, gua = [], []
            for i in range(startup_n):
                pair = [(nat, cmd), (gua, prefix + cmd)]
                if i % 2:
                    pair.reverse()
                for bucket, argv in pair:
                    bucket.append(runner.run(argv))
            progress(
                f"startup  {label}: native median {fmt_time(statistics.median(m['wall'] for m in nat))}"
                f", guarded {fmt_time(statistics.median(m['wall'] for m in gua))}"
            )
            rows.append((label, startup_n, nat, gua, "run"))

    with open("/proc/loadavg") as f:
        load_after = " ".join(f.read().split()[:3])
    elapsed = time.time() - started

    def med(samples, key):
        vals = [m[key] for m in samples if m[key] is not None]
        return statistics.median(vals) if vals else None

    print()
    print(f"Runs per variant: {runs} (workloads); {startup_n} (startup rows)."
          f"{' BENCH_QUICK=1: counts divided by 10.' if quick else ''}")
    print(f"Load average before: {load_before}; after: {load_after}; "
          f"benchmark took {elapsed:.0f} s.")
    print()
    print("| workload | N | native median (spread) | guarded median (spread) | ratio wall "
          "| ratio CPU | added per op |")
    print("| --- | ---: | --- | --- | ---: | ---: | ---: |")
    for label, n, nat, gua, unit in rows:
        nw, gw = med(nat, "wall"), med(gua, "wall")
        nc, gc = med(nat, "cpu"), med(gua, "cpu")
        ncount = f"{n:,} runs" if unit == "run" else f"{n:,}"
        if unit == "run":
            # Each sample is one run: the spread is over the runs; added = per run.
            added = fmt_added(gw - nw, ms=True)
        else:
            added = fmt_added((gw - nw) / n)
        rc = f"{gc / nc:.2f}" if nc and nc > 0 else "n/a"
        print(
            f"| {label} | {ncount} | {fmt_spread([m['wall'] for m in nat])} "
            f"| {fmt_spread([m['wall'] for m in gua])} | {gw / nw:.2f} | {rc} | {added} |"
        )

    print()
    print("CPU split and memory (medians). Guarded CPU is the whole tree; 'program' is what "
          "the workload itself used (its own getrusage at exit, children included); "
          "'launcher' is the rest.")
    print()
    print("| workload | CPU native | CPU guarded | of which program | of which launcher "
          "| added CPU per op | peak RSS native | peak RSS guarded (largest process) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, n, nat, gua, unit in rows:
        nc, gc = med(nat, "cpu"), med(gua, "cpu")
        own = med(gua, "own_cpu")
        launcher = (
            statistics.median(m["cpu"] - m["own_cpu"] for m in gua if m["own_cpu"] is not None)
            if own is not None
            else None
        )
        per = (gc - nc) / (1 if unit == "run" else n)
        print(
            f"| {label} | {fmt_time(nc)} | {fmt_time(gc)} "
            f"| {fmt_time(own) if own is not None else 'n/a'} "
            f"| {fmt_time(launcher) if launcher is not None else 'n/a'} "
            f"| {fmt_added(per, ms=unit == 'run')} | {int(med(nat, 'rss')):,} KiB | {int(med(gua, 'rss')):,} KiB |"
        )

    print()
    print("Guard checks (one small guarded run each, with --report):")
    for c in checks:
        print(f"- {c}")


if __name__ == "__main__":
    main()
