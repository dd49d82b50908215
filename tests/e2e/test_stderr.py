"""Denial lines on egress-run's stderr, and --quiet (loopback only)."""
from conftest import netprobe, py


def test_denial_is_announced_on_stderr(loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded([], netprobe(*[f"connect=127.0.0.1,{port}"] * 3))
    assert res.returncode == 3, res.describe()
    assert res.count("connect", port=port) == 3
    mention = [l for l in res.stderr.splitlines() if f"127.0.0.1:{port}" in l]
    assert mention, "the destination is named on stderr"
    assert any("python" in l for l in mention), "the program is named on stderr"


def test_denial_announced_even_when_the_program_closed_its_stderr(loopback, run_guarded):
    port = loopback.tcp1.port
    code = ("import os, socket\nos.close(2)\ns = socket.socket()\n"
            f"try: s.connect(('127.0.0.1', {port}))\nexcept OSError as e: print(e.errno)\n")
    res = run_guarded([], py(code))
    assert res.stdout == "13\n", res.describe()
    assert any(f"127.0.0.1:{port}" in l for l in res.stderr.splitlines()), res.describe()


def test_quiet_prints_nothing_of_its_own(loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded(["--quiet"], netprobe(f"connect=127.0.0.1,{port}"))
    assert res.returncode == 3, res.describe()
    assert res.stderr == "", res.describe()
    assert res.count("connect", port=port, decision="deny") == 1, "the report is unaffected by --quiet"


def test_quiet_still_reports_own_errors(run_guarded):
    res = run_guarded(["--quiet", "--allow", "10.0.0.1/24"], py("pass"), report=False)
    assert res.returncode == 125
    assert res.stderr.startswith("egress-run: invalid rule '10.0.0.1/24':"), res.describe()
