"""The event channel between the guarded tree and egress-run (docs/design.md, *Events*;
docs/report.md, *A report written as the run goes*; docs/threat-model.md, *The event channel*).

- The report is written as the run goes: after a SIGKILL of egress-run the file holds the
  `run` line, the lines of everything received, the counts known, and only whole lines.
- Only the run's tree can write events: a datagram from outside (forged, or a byte-for-byte
  replay of a real event of another run) is dropped and counted in `summary.events_rejected`.
- A process that dies before any attempt is still reported.

Loopback only: the denied destinations are loopback ports under rules that do not allow them."""
import json
import os
import random
import signal
import socket
import time
from pathlib import Path

import pytest

from conftest import (PYTHON, RUN_TIMEOUT, WAIT_TIMEOUT, finish, guarded_env, kill_tree, load_report,
                      parse_report, spawn)

# Allows nothing on loopback: every connect below is denied before it leaves.
NOT_LOOPBACK = ["--allow", "203.0.113.10:80"]


def interrupted(raw):
    """Lines and problems of a report whose writer was killed: every problem counts except the
    missing summary."""
    lines, problems = parse_report(raw)
    return lines, [p for p in problems if "not 'summary'" not in p]


def wait_for(report, enough, what):
    """Reads `report` until enough(lines) holds (the hang guard is the only time limit)."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    lines = []
    while time.monotonic() < deadline:
        raw = report.read_bytes() if report.exists() else b""
        lines, problems = interrupted(raw)
        assert not problems, (problems, raw[-2000:])
        if enough(lines):
            return lines
        time.sleep(0.02)
    pytest.fail(f"the report never showed {what} while the run went on:\n" + "\n".join(map(json.dumps, lines)))


def denied(lines, port):
    return sum(o["count"] for o in lines if o.get("type") == "connect" and o.get("port") == port
               and o.get("decision") == "deny")


def gone(pid):
    """Whether `pid` is gone or a zombie (its parent, egress-run, is dead and not reaping)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


# Denies a burst of distinct destinations (one line each) and a repeated one (one line, folded
# in shared memory), prints its pid, then waits to be killed.
BURST = ("import os, socket, sys, time\n"
         "first, n, repeats = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])\n"
         "def attempt(port):\n"
         "    s = socket.socket()\n"
         "    try:\n"
         "        s.connect(('127.0.0.1', port))\n"
         "    except OSError:\n"
         "        pass\n"
         "    s.close()\n"
         "for port in range(first, first + n):\n"
         "    attempt(port)\n"
         "for _ in range(repeats):\n"
         "    attempt(first - 1)\n"
         "print(os.getpid(), flush=True)\n"
         "for _ in range(600):  # about 30 s at most: never an orphan\n"
         "    time.sleep(0.05)\n")


def test_sigkill_after_a_burst_of_denials_keeps_them(egress_bin, tmp_path):
    report = tmp_path / "r.jsonl"
    first, n, repeats = 40000, 30, 200
    p = spawn([egress_bin, *NOT_LOOPBACK, "--report", report, "--", PYTHON, "-c", BURST,
               first, n, repeats], env=guarded_env())
    try:
        child = int(p.stdout.readline())
        # Each denial is in the file while the run goes on, and the repeats' count follows
        # within a second (they are counted in shared memory, without a datagram each).
        wait_for(report, lambda ls: all(denied(ls, port) == 1 for port in range(first, first + n))
                 and denied(ls, first - 1) == repeats, f"{n} denials and {repeats} repeats")
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=RUN_TIMEOUT)
        # COMMAND dies with egress-run (PR_SET_PDEATHSIG): nothing runs on unwatched.
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gone(child), "COMMAND outlived egress-run's SIGKILL"
    finally:
        finish(p)
    raw = report.read_bytes()
    lines, problems = interrupted(raw)
    assert not problems, problems
    assert lines[0]["type"] == "run" and lines[-1]["type"] != "summary", lines
    for port in range(first, first + n):
        assert denied(lines, port) == 1, (port, lines)
    assert denied(lines, first - 1) == repeats, lines
    procs = [o for o in lines if o["type"] == "process"]
    assert [o["pid"] for o in procs] == [child], procs


# Many processes at once, each with distinct destinations (new lines all the time), repeats and
# long argument lists (lines of a few KiB, across page boundaries of the file).
LOAD = ("import os, socket, sys\n"
        "def attempt(port):\n"
        "    s = socket.socket()\n"
        "    try:\n"
        "        s.connect(('127.0.0.1', port))\n"
        "    except OSError:\n"
        "        pass\n"
        "    s.close()\n"
        "kids = []\n"
        "for k in range(6):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        for i in range(3000):\n"
        "            attempt(20000 + k * 1000 + i % 700)\n"
        "            if i % 300 == 0:\n"
        "                os.spawnv(os.P_WAIT, '/bin/true', ['/bin/true', 'x' * (500 + i)])\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "for pid in kids:\n"
        "    os.waitpid(pid, 0)\n")


def test_sigkill_at_random_moments_leaves_only_whole_lines(egress_bin, tmp_path):
    rng = random.Random(os.getpid())
    for round_ in range(6):
        report = tmp_path / f"r{round_}.jsonl"
        p = spawn([egress_bin, *NOT_LOOPBACK, "--report", report, "--", PYTHON, "-c", LOAD],
                  env=guarded_env())
        try:
            time.sleep(rng.uniform(0.05, 0.6))
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=RUN_TIMEOUT)
        finally:
            finish(p)
        raw = report.read_bytes()
        lines, problems = interrupted(raw)
        assert not problems, (round_, problems)
        assert lines and lines[0]["type"] == "run", (round_, raw[:500])
        assert raw.endswith(b"\n"), (round_, raw[-500:])


# ------------------------------------------------------------------------------------------
# Only the tree can write events

def event_socket(launcher_pid):
    """The abstract name of a launcher's event socket, as /proc/net/unix lists it."""
    prefix = f"@egress-run.{launcher_pid}."
    for row in Path("/proc/net/unix").read_text().splitlines()[1:]:
        parts = row.split()
        # Only `egress-run.<pid>.<ino>`: the policy service and the kernel layer's handover
        # listen at the same name plus a suffix (".policy", ".kernel").
        if len(parts) >= 8 and parts[7].startswith(prefix) and parts[7][len(prefix):].isdigit():
            return b"\0" + parts[7][1:].encode()
    return None


# Inside a run: builds an event exactly as the library frames it (magic, version, the run's
# key read from the sealed policy, a connect event of a made-up program), writes it to a file,
# and sends it to its own run's socket too (accepted: a control that the bytes are right).
INSIDER = ("import os, socket, sys\n"
           "loc = os.environ['EGRESS_RUN_POLICY'].split(';')[0].split(':')\n"
           "launcher, fd, ino = loc[1], int(loc[2]), loc[4]\n"
           "with open(f'/proc/self/fd/{fd}', 'rb') as f:\n"
           "    key = f.read()[72:88]\n"
           "body = ('{\"type\":\"connect\",\"pid\":%d,\"call\":\"connect\",\"proto\":\"tcp\",'\n"
           "        '\"addr\":\"127.0.0.9\",\"port\":4444,\"host\":\"forged.invalid\",'\n"
           "        '\"decision\":\"allow\",\"rule\":0,\"enforced\":true}' % os.getpid()).encode()\n"
           "datagram = b'EGEV\\x01\\0\\0\\0' + key + body\n"
           "open(sys.argv[1], 'wb').write(datagram)\n"
           "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
           "s.sendto(datagram, ('\\0egress-run.%s.%s' % (launcher, ino)).encode())\n")

# Waits (at most ~30 s) until the file named by argv[1] exists.
WAITER = ("import os, sys, time\n"
          "print('ready', flush=True)\n"
          "for _ in range(600):\n"
          "    if os.path.exists(sys.argv[1]):\n"
          "        break\n"
          "    time.sleep(0.05)\n")


def test_forged_and_replayed_datagrams_are_dropped_and_counted(egress_bin, run_guarded, tmp_path):
    # Run A: a real, keyed event of that run (made inside its tree), accepted there.
    captured = tmp_path / "event.bin"
    a = run_guarded(["--allow", "loopback"], [PYTHON, "-c", INSIDER, captured])
    assert a.returncode == 0, a.describe()
    assert a.attempts("connect", host="forged.invalid"), "control: a keyed event is accepted\n" + a.describe()
    assert a.summary["events_rejected"] == 0, a.describe()
    replay = captured.read_bytes()

    # Run B: the test, outside B's tree, sends to B's socket while B's command waits.
    report = tmp_path / "b.jsonl"
    done = tmp_path / "done"
    p = spawn([egress_bin, "--allow", "loopback", "--report", report, "--", PYTHON, "-c", WAITER, done],
              env=guarded_env())
    try:
        assert p.stdout.readline() == "ready\n"
        name = event_socket(p.pid)
        assert name, "run B's event socket is not listed in /proc/net/unix"
        body = replay[24:]
        forged = [
            replay,                                     # a real event of run A, byte for byte
            body,                                       # the event without framing (the old format)
            replay[:8] + bytes(16) + body,              # no key (as a process without a policy)
            replay[:8] + os.urandom(16) + body,         # a guessed key
            b"EGEV\x01\0\0\0",                          # cut short
        ]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for d in forged:
                s.sendto(d, name)
        done.touch()
        out, err = finish(p)
    finally:
        kill_tree(p)
    lines = load_report(report, p.returncode, "block")
    assert p.returncode == 0, (out, err, lines)
    assert not [o for o in lines if o.get("host") == "forged.invalid" or o.get("port") == 4444], lines
    assert lines[-1]["events_rejected"] == len(forged), lines[-1]
    assert lines[-1]["attempts"] == 0, lines[-1]


# ------------------------------------------------------------------------------------------
# Processes that die early


def test_a_process_killed_before_any_attempt_is_reported(run_guarded):
    code = "import os, signal; print(os.getpid(), flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    res = run_guarded(["--allow", "loopback"],
                      ["/bin/sh", "-c", f"{PYTHON} -c '{code}'; exit 0"])
    assert res.returncode == 0, res.describe()
    pid = int(res.stdout.split()[0])
    procs = [o for o in res.lines("process") if o["pid"] == pid]
    assert procs and procs[-1]["guarded"] is True, res.describe()


def test_a_report_to_a_pipe_is_written_as_the_run_goes(egress_bin):
    # `--report /dev/stdout | jq ...`: the lines arrive while the run goes, and the end is not
    # an error (a pipe cannot be flushed to disk).
    p = spawn([egress_bin, "--quiet", "--allow", "loopback", "--report", "/dev/stdout", "--",
               "/bin/sh", "-c", "exit 0"], env=guarded_env())
    out, err = finish(p)
    assert p.returncode == 0, (p.returncode, err)
    lines, problems = parse_report(out.encode(), p.returncode, "block")
    assert not problems, (problems, out)
    assert [o["type"] for o in lines][0] == "run" and lines[-1]["type"] == "summary", out


# A process of the tree without a policy has no key: it is accepted because the kernel names
# it as the sender and it descends from egress-run. It is started here with a raw fork (no
# fork handler: it never checks in with the key) and a raw execve with a locator whose device
# number is wrong (so it fails closed), then tries a connect.
NO_KEY = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
SYS_FORK, SYS_EXECVE = 57, 59
port = sys.argv[1]
loc = os.environ["EGRESS_RUN_POLICY"].split(";")[0].split(":")
loc[3] = str(int(loc[3]) + 1)
env = dict(os.environ, EGRESS_RUN_POLICY=":".join(loc))
code = ("import socket, sys\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.connect(('127.0.0.1', int(sys.argv[1])))\n"
        "except OSError as e:\n"
        "    print('errno', e.errno, flush=True)\n")
argv = [sys.executable.encode(), b"-c", code.encode(), port.encode()]
envp = [f"{k}={v}".encode() for k, v in env.items()]
c_argv = (ctypes.c_char_p * (len(argv) + 1))(*argv, None)
c_envp = (ctypes.c_char_p * (len(envp) + 1))(*envp, None)
path = ctypes.c_char_p(sys.executable.encode())
pid = libc.syscall(SYS_FORK)
if pid == 0:
    libc.syscall(SYS_EXECVE, path, c_argv, c_envp)
    os._exit(127)
print("child", pid, flush=True)
# Left a zombie for a while: egress-run places a sender by its /proc entry, which goes when the
# process is reaped (a sender gone before its first datagram is read cannot be placed).
os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
import time; time.sleep(1)
os.waitpid(pid, 0)
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="raw system call numbers of x86-64")
def test_a_process_without_a_policy_is_heard_as_part_of_the_tree(run_guarded, loopback):
    port = loopback.tcp1.port
    res = run_guarded(["--allow", "loopback"], [PYTHON, "-c", NO_KEY, port])
    assert res.returncode == 3, res.describe()
    child = int(res.stdout.split("child", 1)[1].split()[0])
    assert "errno 13" in res.stdout, res.describe()
    procs = [o for o in res.lines("process") if o["pid"] == child]
    assert procs and "policy_error" in procs[-1], res.describe()
    conns = res.attempts("connect", pid=child, port=port)
    assert [c["decision"] for c in conns] == ["deny"], res.describe()
    assert res.summary["events_rejected"] == 0, res.describe()


# COMMAND forks a child (PR_SET_PDEATHSIG is COMMAND's alone: the child outlives egress-run),
# prints its pid and either waits to be killed or exits at once. The child waits for a file,
# then connects to a destination the rules allow and writes the errno it got.
ORPHAN = r"""
import os, socket, sys, time
port, go, out, how = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for _ in range(1200):  # about 60 s at most: never an orphan for long
        if os.path.exists(go):
            break
        time.sleep(0.05)
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port)); err = 0
    except OSError as e:
        err = e.errno
    with open(out + ".tmp", "w") as f:
        f.write(str(err))
    os.rename(out + ".tmp", out)
    os._exit(0)
print(pid, flush=True)
if how == "wait":
    time.sleep(60)
"""


@pytest.mark.parametrize("how", ["killed", "ended"])
def test_a_process_left_by_a_killed_launcher_fails_closed(how, egress_bin, loopback, tmp_path):
    """Killed: the child's next new attempt finds the launcher gone without the run having
    ended, and is refused (block mode). Ended normally: the child goes on under its policy."""
    go, out = tmp_path / "go", tmp_path / "out"
    p = spawn([egress_bin, "--quiet", "--allow", "loopback", "--", PYTHON, "-c", ORPHAN,
               loopback.tcp1.port, go, out, "wait" if how == "killed" else "exit"], env=guarded_env())
    try:
        int(p.stdout.readline())
        if how == "killed":
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=RUN_TIMEOUT)
        go.touch()
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert out.exists(), "the child never tried"
        got = int(out.read_text())
    finally:
        kill_tree(p)
        p.communicate()
    assert got == (13 if how == "killed" else 0), got
