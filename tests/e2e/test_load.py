"""Load: 8 processes x 32 threads x 5,000 attempts (the stress figure set for the guard: 1,280,000
attempts per run), mixed TCP connects to an allowed loopback listener and UDP datagrams to an
allowed and to a denied loopback port. Every attempt must be counted (the report's counts per
destination, and per process, equal what the program counted itself), every report line must be
whole JSON (the harness checks each line against the schema and the summary invariants), and nothing
may hang (hang guard only: no timing is asserted).

Full size takes about 25 s per mode on a 2-CPU machine. EGRESS_E2E_LOAD_ITERS (attempts per
thread, default 5000) scales it down where that is too slow; the assertions do not change.
Loopback only."""
import collections
import json
import os
import socket

import pytest

from conftest import PROGS

MODES = {"block": [], "audit": ["--audit"]}
PROCS, THREADS = 8, 32
ITERS = int(os.environ.get("EGRESS_E2E_LOAD_ITERS", "5000"))
KINDS = ("tcp", "ua", "ud")  # TCP connect (allowed), UDP allowed port, UDP denied port


@pytest.fixture(scope="module")
def loadgen(compile_c):
    return compile_c(PROGS / "loadgen.c", "loadgen")


@pytest.mark.parametrize("mode", MODES)
def test_many_processes_threads_and_attempts(mode, loadgen, run_guarded):
    # The listener is this test's socket, inherited by the program (whose forked acceptor
    # drains it); the UDP ports are bound here and never read (a full buffer drops datagrams,
    # which the senders do not notice).
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4096)
    ua = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ua.bind(("127.0.0.1", 0))
    ud = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ud.bind(("127.0.0.1", 0))
    port = {"tcp": lst.getsockname()[1], "ua": ua.getsockname()[1], "ud": ud.getsockname()[1]}
    try:
        args = MODES[mode] + ["--allow", f"loopback:{port['tcp']}", "--allow", f"loopback:{port['ua']}"]
        res = run_guarded(args, [loadgen, "parent", lst.fileno(), PROCS, THREADS, ITERS,
                                 port["tcp"], port["ua"], port["ud"]],
                          pass_fds=[lst.fileno()], timeout=900)
    finally:
        for s in (lst, ua, ud):
            s.close()

    workers = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(workers) == PROCS, res.describe()[:5000]
    per_thread = {k: len(range(i, ITERS, len(KINDS))) for i, k in enumerate(KINDS)}
    for w in workers:
        for k in KINDS:
            assert w[k] == THREADS * per_thread[k], w
    total = {k: sum(w[k] for w in workers) for k in KINDS}
    assert sum(total.values()) == PROCS * THREADS * ITERS

    # What the program saw.
    for w in workers:
        assert w["tcp_ok"] == w["tcp"] and w["ua_ok"] == w["ua"], w
        if mode == "block":
            assert w["ud_eacces"] == w["ud"], w
        else:
            assert w["ud_ok"] == w["ud"], w
    assert res.returncode == (3 if mode == "block" else 0), res.describe()[:5000]

    # What the report counted: per destination...
    want = {
        ("connect", "tcp", port["tcp"], "allow"): total["tcp"],
        ("send", "udp", port["ua"], "allow"): total["ua"],
        ("send", "udp", port["ud"], "deny"): total["ud"],
    }
    got = collections.Counter()
    per_pid = collections.defaultdict(collections.Counter)
    for o in res.attempts():
        key = (o["type"], o.get("proto"), o.get("port"), o["decision"])
        assert o.get("addr") == "127.0.0.1" and key in want, f"unexpected attempt line {o}"
        got[key] += o["count"]
        per_pid[o["pid"]][key] += o["count"]
    assert dict(got) == want, f"report counts {dict(got)}, the program counted {want}"
    dests = {(d["proto"], d["port"], d["decision"]): d["count"] for d in res.summary["destinations"]}
    assert dests == {(p, po, d): n for (_, p, po, d), n in want.items()}, res.summary
    assert res.summary["attempts"] == PROCS * THREADS * ITERS, res.summary
    assert res.summary["denied"] == total["ud"], res.summary

    # ... and per process: each worker's attempts are its own.
    assert set(per_pid) == {w["pid"] for w in workers}, sorted(per_pid)
    for w in workers:
        assert per_pid[w["pid"]] == {
            ("connect", "tcp", port["tcp"], "allow"): w["tcp"],
            ("send", "udp", port["ua"], "allow"): w["ua"],
            ("send", "udp", port["ud"], "deny"): w["ud"],
        }, (w, per_pid[w["pid"]])
    # parent + acceptor + 8 workers, all checked in.
    assert res.summary["processes"] == PROCS + 2, res.summary
