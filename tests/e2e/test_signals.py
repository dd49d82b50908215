"""Signals sent to egress-run are forwarded; attempts of killed processes are not lost."""
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import PYTHON, RUN_TIMEOUT, finish, guarded_env, kill_tree, load_report, py, spawn

MODES = {"block": [], "audit": ["--audit"]}

# Sent to egress-run with kill, these reach COMMAND (design.md, Decisions: Signals); their
# default action ends COMMAND.
FORWARDED_DEADLY = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                    signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig", FORWARDED_DEADLY, ids=lambda s: signal.Signals(s).name)
def test_signal_to_egress_run_is_forwarded(sig, mode, loopback, egress_bin, tmp_path):
    port = loopback.tcp1.port
    code = ("import resource, signal, socket, time\n"
            "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
            f"signal.signal({int(sig)}, signal.SIG_DFL)\n"
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
    assert p.returncode == -sig, f"exit {p.returncode}\nstdout (after ready):\n{out}\nstderr:\n{err}"
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
    expected_status = {"self": -signal.SIGKILL, "child": 0, "exec": 0, "exit": 0}[how]
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


# --- Innocent programs must not notice the guard: signals ---------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1,
                                 signal.SIGSEGV, signal.SIGABRT], ids=lambda s: signal.Signals(s).name)
def test_egress_run_dies_of_commands_signal(sig, mode, egress_bin, tmp_path):
    """Like sudo: a parent sees egress-run killed by the signal that killed COMMAND, as it
    would without egress-run; the summary still says 128+N. No core of egress-run is left."""
    command = ["sh", "-c", f"ulimit -c 0; trap - {int(sig)} 2>/dev/null; kill -{int(sig)} $$"]
    native = subprocess.run(command, env=guarded_env(), cwd=tmp_path, timeout=RUN_TIMEOUT)
    assert native.returncode == -sig
    report = tmp_path / "r.jsonl"
    p = spawn([egress_bin, *MODES[mode], "--report", report, "--", *command], env=guarded_env(),
              cwd=tmp_path)
    out, err = finish(p)
    assert p.returncode == native.returncode, f"exit {p.returncode}\nstderr:\n{err}"
    summary = load_report(report, p.returncode, mode)[-1]
    assert summary["command_status"] == 128 + sig and summary["exit_code"] == 128 + sig, summary
    assert not [f for f in os.listdir(tmp_path) if f.startswith("core")], os.listdir(tmp_path)


def test_shell_loop_stops_when_command_is_interrupted(egress_bin):
    """`for i in 1 2 3; do egress-run -- CMD; done` stops at Ctrl-C: a shell that waits for a
    foreground job killed by SIGINT stops too (bash); it also reports 130 through $?."""
    inner = f'{egress_bin} --allow loopback -- sh -c "kill -INT \\$\\$"; echo status=$?'
    p = spawn(["sh", "-c", inner], env=guarded_env())
    out, err = finish(p)
    assert out == "status=130\n", (out, err)
    # The same in a loop with bash, which ends a loop whose child died of SIGINT.
    loop = f'for i in 1 2 3; do {egress_bin} --quiet -- sh -c "kill -INT \\$\\$"; echo "round $i"; done'
    native = f'for i in 1 2 3; do sh -c "kill -INT \\$\\$"; echo "round $i"; done'
    want = subprocess.run(["bash", "-c", native], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    p = spawn(["bash", "-c", loop], env=guarded_env())
    out, err = finish(p)
    assert (p.returncode, out) == (want.returncode, want.stdout), (p.returncode, out, err)


SIGNAL_STATE = ("import sys\n"
                "for line in open('/proc/self/status'):\n"
                "    if line.startswith(('SigBlk', 'SigIgn')): print(line.strip())\n")

PARENT = ("import json, signal, subprocess, sys\n"
          "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGALRM, signal.SIGTERM,"
          " signal.SIGWINCH})\n"
          "for s in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGPIPE):\n"
          "    signal.signal(s, signal.SIG_IGN)\n"
          "out = [subprocess.run(json.loads(a), capture_output=True, text=True, restore_signals=False,"
          " timeout=60).stdout for a in sys.argv[1:]]\n"
          "print(json.dumps(out))\n")


def test_command_inherits_the_callers_mask_and_ignored_signals(egress_bin, tmp_path):
    """A blocked or ignored signal in egress-run's caller is blocked or ignored in COMMAND,
    as in a program the caller started itself (nohup, `trap '' INT`, blocked SIGTERM)."""
    native = [PYTHON, "-c", SIGNAL_STATE]
    guarded = [str(egress_bin), "--quiet", "--report", str(tmp_path / "r.jsonl"), "--", *native]
    p = subprocess.run(py(PARENT) + [json.dumps(native), json.dumps(guarded)], env=guarded_env(),
                       capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert p.returncode == 0, p.stderr
    want, got = json.loads(p.stdout)
    assert "SigBlk" in want and got == want, f"native:\n{want}\nunder egress-run:\n{got}"


def test_inherited_default_sigpipe_stays_default(egress_bin, tmp_path):
    """The launcher ignores SIGPIPE for itself; COMMAND gets the caller's default back."""
    code = "import sys\nfor line in open('/proc/self/status'):\n    if line.startswith('SigIgn'): print(line.strip())\n"
    # restore_signals (the default) gives the children SIGPIPE at SIG_DFL.
    native = subprocess.run(py(code), capture_output=True, text=True, timeout=RUN_TIMEOUT)
    p = spawn([egress_bin, "--quiet", "--", *py(code)], env=guarded_env())
    out, err = finish(p)
    assert out == native.stdout, (out, native.stdout, err)


def _ready(p):
    try:
        line = p.stdout.readline()
    except BaseException:
        kill_tree(p)
        raise
    if not line.startswith("ready"):
        kill_tree(p)
        pytest.fail(f"the command did not start as expected: {line!r} {finish(p)}")
    return line


TRAP = ("import signal, sys, time\n"
        "def got(n, f):\n"
        "    print('got', signal.Signals(n).name, flush=True); sys.exit(5)\n"
        "signal.signal(int(sys.argv[1]), got)\n"
        "print('ready', flush=True)\n"
        "for _ in range(600):  # gives up after about 30 s: never an orphan\n"
        "    time.sleep(0.05)\n")


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT, signal.SIGALRM,
                                 signal.SIGWINCH, signal.SIGCONT], ids=lambda s: signal.Signals(s).name)
def test_signal_to_egress_run_reaches_a_trap_in_command(sig, egress_bin, tmp_path):
    """`timeout -s USR1 egress-run -- CMD`: a COMMAND that traps the signal gets it."""
    p = spawn([egress_bin, "--quiet", "--", *py(TRAP), int(sig)], env=guarded_env())
    _ready(p)
    os.kill(p.pid, sig)
    out, err = finish(p)
    assert (p.returncode, out) == (5, f"got {signal.Signals(sig).name}\n"), (p.returncode, out, err)


def test_command_dies_when_egress_run_is_killed(egress_bin, tmp_path):
    """`timeout -s KILL egress-run -- CMD`: COMMAND must not run on unsupervised."""
    code = ("import os, time\n"
            "print('ready', os.getpid(), flush=True)\n"
            "for _ in range(600):  # gives up after about 30 s: never an orphan\n"
            "    time.sleep(0.05)\n")
    p = spawn([egress_bin, "--quiet", "--", *py(code)], env=guarded_env())
    pid = int(_ready(p).split()[1])
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=RUN_TIMEOUT)

    def alive():
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except FileNotFoundError:
            return False

    for _ in range(400):  # hang guard, about 20 s; COMMAND itself gives up after about 30 s
        if not alive():
            break
        time.sleep(0.05)
    still = alive()
    finish(p)
    assert not still, "COMMAND still runs after egress-run was killed with SIGKILL"


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def _wait_state(pid, want):
    for _ in range(400):  # hang guard, about 20 s
        if _state(pid) in want:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("to", ["egress-run", "command"])
def test_job_control_stop_and_continue(to, egress_bin):
    """SIGTSTP sent to egress-run alone is forwarded; COMMAND stopped by job control (as by
    Ctrl-Z, which reaches the whole foreground group) stops egress-run too, so that the shell
    sees a stopped job; SIGCONT to egress-run continues both."""
    code = ("import os, sys, time\n"
            "print('ready', os.getpid(), flush=True)\n"
            "for _ in range(600):  # gives up after about 30 s: never an orphan\n"
            "    time.sleep(0.05)\n"
            "    if sys.stdin.readline() == 'end\\n': sys.exit(7)\n")
    # The kernel discards stop signals sent to an orphaned process group: egress-run gets a
    # group of its own below a parent in the same session (as a job-control shell does).
    parent = ("import subprocess, sys\n"
              "p = subprocess.Popen(sys.argv[1:], process_group=0)\n"
              "print('launcher', p.pid, flush=True)\n"
              "sys.exit(p.wait())\n")
    p = spawn([*py(parent), egress_bin, "--quiet", "--", *py(code)], env=guarded_env(),
              stdin=subprocess.PIPE)
    launcher = int(p.stdout.readline().split()[1])
    pid = int(_ready(p).split()[1])
    try:
        os.kill(launcher if to == "egress-run" else pid, signal.SIGTSTP)
        assert _wait_state(pid, "T"), f"COMMAND not stopped: {_state(pid)}"
        assert _wait_state(launcher, "T"), f"egress-run not stopped: {_state(launcher)}"
        os.kill(launcher, signal.SIGCONT)
        assert _wait_state(pid, "RS"), f"COMMAND not continued: {_state(pid)}"
        assert _wait_state(launcher, "RS"), f"egress-run not continued: {_state(launcher)}"
        p.stdin.write("end\n")
        p.stdin.flush()
    except BaseException:
        kill_tree(p)
        raise
    out, err = finish(p)
    assert p.returncode == 7, (p.returncode, out, err)
