"""Signals sent to egress-run are forwarded; attempts of killed processes are not lost."""
import os
import signal

import pytest

from conftest import PYTHON, finish, guarded_env, kill_tree, load_report, spawn

MODES = {"block": [], "audit": ["--audit"]}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_signal_to_egress_run_is_forwarded(sig, mode, loopback, egress_bin, tmp_path):
    port = loopback.tcp1.port
    code = ("import signal, socket, time\n"
            "for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
            "    signal.signal(s, signal.SIG_DFL)\n"
            "c = socket.socket()\n"
            "try:\n"
            f"    c.connect(('127.0.0.1', {port})); print('connected', flush=True)\n"
            "except OSError as e:\n"
            "    print('errno', e.errno, flush=True)\n"
            "print('ready', flush=True)\n"
            "for _ in range(600):  # gives up after about 30 s: never an orphan\n"
            "    time.sleep(0.05)\n"
            "print('not killed', flush=True)\n")
    report = tmp_path / "r.jsonl"
    p = spawn([egress_bin, *MODES[mode], "--report", report, "--", PYTHON, "-c", code], env=guarded_env())
    try:
        first = p.stdout.readline()
        ready = p.stdout.readline()
    except BaseException:
        kill_tree(p)
        raise
    if ready != "ready\n":
        kill_tree(p)
        pytest.fail(f"the command did not start as expected: {first!r} {ready!r} {finish(p)}")
    assert first == ("errno 13\n" if mode == "block" else "connected\n")
    os.kill(p.pid, sig)
    out, err = finish(p)
    assert p.returncode == 128 + sig, f"exit {p.returncode}\nstdout (after ready):\n{out}\nstderr:\n{err}"
    lines = load_report(report, p.returncode, mode)
    conn = [o for o in lines if o["type"] == "connect" and o["port"] == port]
    assert len(conn) == 1 and conn[0]["decision"] == "deny" and conn[0]["count"] == 1, lines
    assert lines[-1]["exit_code"] == 128 + sig


BURST = ("import os, signal, socket, sys\n"
         "udp_port, tcp1, tcp2, how = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]\n"
         "def burst():\n"
         "    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "    for i in range(600):\n"
         "        try: u.sendto(b'burst', ('127.0.0.1', udp_port))\n"
         "        except PermissionError: pass\n"
         "    for port in [tcp1] * 100 + [tcp2] * 100:\n"
         "        with socket.socket() as c:\n"
         "            try: c.connect(('127.0.0.1', port))\n"
         "            except PermissionError: pass\n"
         "    sys.stdout.flush()\n"
         "if how == 'self':\n"
         "    burst(); os.kill(os.getpid(), signal.SIGKILL)\n"
         "elif how == 'exec':\n"
         "    burst(); os.execv('/bin/true', ['true'])\n"
         "elif how == 'child':\n"
         "    pid = os.fork()\n"
         "    if pid == 0:\n"
         "        burst(); os.kill(os.getpid(), signal.SIGKILL)\n"
         "    _, status = os.waitpid(pid, 0)\n"
         "    print('child', os.waitstatus_to_exitcode(status), flush=True)\n"
         "elif how == 'exit':\n"
         "    burst(); os._exit(0)\n")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["self", "child", "exec", "exit"])
def test_burst_then_death_loses_nothing(how, mode, loopback, run_guarded):
    """600 datagrams + 200 connects, all denied, then SIGKILL (or exec, or _exit): all 800 counted."""
    udp, t1, t2 = loopback.udp.port, loopback.tcp1.port, loopback.tcp2.port
    res = run_guarded(MODES[mode], [PYTHON, "-c", BURST, udp, t1, t2, how])
    expected_status = {"self": 128 + signal.SIGKILL, "child": 0, "exec": 0, "exit": 0}[how]
    if mode == "block" and expected_status == 0:
        expected_status = 3
    assert res.returncode == expected_status, res.describe()
    if how == "child":
        assert res.stdout == f"child {-signal.SIGKILL}\n", res.describe()
    assert res.count("send", addr="127.0.0.1", port=udp, decision="deny") == 600, res.describe()
    assert res.count("connect", addr="127.0.0.1", port=t1, decision="deny") == 100, res.describe()
    assert res.count("connect", addr="127.0.0.1", port=t2, decision="deny") == 100, res.describe()
    assert res.summary["attempts"] == 800 and res.summary["denied"] == 800, res.describe()
    loopback.udp.settle()  # leave the sink empty for others (audit mode delivered the datagrams)
