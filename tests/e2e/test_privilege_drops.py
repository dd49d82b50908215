"""After dropping privileges: a guarded process that lost the policy descriptor (Python's
default `close_fds=True` closes it) and then cannot open `/proc/<launcher>/fd/N` still obtains
its policy (docs/design.md "Policy hand-over"): after `setpriv --reuid`, `runuser -u nobody`,
`subprocess.run(..., user=...)`, in a new PID namespace (`unshare -pf --mount-proc`), and from
a process started before the launcher exited. Test suites start databases as another user this
way; before, such a process failed closed, so even loopback was denied and the run exited 3.

Every case runs the same program natively and under `egress-run --allow loopback`: the probe
(progs/netprobe.py) connects to a loopback listener (allowed: it must get through) and to
198.51.100.20:5432 in the sandbox (not allowed: natively it connects, guarded it is refused).

Also here: the launcher's policy service (the abstract socket `egress-run.<pid>.<ino>.policy`)
answers only processes of its own tree, with the sealed policy memfd; and a process that can
obtain its policy in no way still fails closed, saying why."""
import array
import errno
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (OTHER_IP, PROGS, PYTHON, REPO, RUN_TIMEOUT, WAIT_TIMEOUT, guarded_env, netprobe,
                      py)

NOBODY = 65534
# The interpreter for programs run as `nobody`: the one running the tests may live where that
# user cannot reach it (under /root).
USER_PYTHON = "/usr/bin/python3"
SETPRIV_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
REQUIRED_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def _works(argv: list[str]) -> str:
    """'' when `argv` runs and exits 0 here, else why not."""
    if not shutil.which(argv[0]):
        return f"{argv[0]} is not installed"
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_TIMEOUT)
    except OSError as e:
        return f"{argv[0]} cannot run: {e}"
    if p.returncode != 0:
        return f"`{' '.join(argv)}` fails here: {(p.stderr or p.stdout).strip()[:200]}"
    return ""


def uid_change_unavailable() -> str:
    """Why this process cannot start a child as another user ('' when it can). Inside the
    sandbox a non-root user is mapped alone in its user namespace: no other uid exists there."""
    if os.geteuid() != 0:
        return "changing uid needs root (the sandbox maps a non-root user alone in its namespace)"
    return _works(SETPRIV_NOBODY + [USER_PYTHON, str(PROGS / "netprobe.py")])


def needs_uid_change() -> None:
    why = uid_change_unavailable()
    if why:
        pytest.skip(why)


def probe(port: int) -> list[str]:
    """netprobe: a loopback connect (allowed) and one to the sandbox's other address."""
    return [USER_PYTHON, str(PROGS / "netprobe.py"), f"connect=127.0.0.1,{port}",
            f"connect={OTHER_IP},5432"]


def parent(child: list[str], close_fds: bool = True, **popen_kw: object) -> list[str]:
    """A Python program that runs `child` with subprocess.run (close_fds=True, the default)
    and exits with its status."""
    kw = "".join(f", {k}={v!r}" for k, v in popen_kw.items())
    code = (
        "import subprocess, sys\n"
        f"r = subprocess.run({child!r}, close_fds={close_fds!r}{kw})\n"
        "sys.exit(r.returncode)\n"
    )
    return [USER_PYTHON, "-c", code]


def results(stdout: str) -> dict[str, dict]:
    """netprobe's JSON lines by action."""
    out = {}
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            obj = json.loads(line)
            out[obj["action"]] = obj
    return out


def check_native(argv: list[str], port: int) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=guarded_env())
    got = results(p.stdout)
    lb, other = got.get(f"connect=127.0.0.1,{port}"), got.get(f"connect={OTHER_IP},5432")
    assert p.returncode == 0 and lb and other and lb["ok"] and other["ok"], (
        f"natively both connects succeed\nexit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")


def check_guarded(res, port: int) -> None:
    """Loopback got through, the other destination was refused (EACCES), and every process
    that checked in had its policy."""
    got = results(res.stdout)
    lb, other = got.get(f"connect=127.0.0.1,{port}"), got.get(f"connect={OTHER_IP},5432")
    assert lb and lb["ok"], "the allowed loopback connect must get through\n" + res.describe()
    assert other and not other["ok"] and other["errno"] == errno.EACCES, (
        "the destination no rule allows must be refused\n" + res.describe())
    errors = [o for o in res.report if o["type"] == "process" and o.get("policy_error")]
    assert not errors, "a process could not obtain its policy\n" + res.describe()
    conns = {(o["addr"], o["decision"]) for o in res.report if o["type"] == "connect"}
    assert ("127.0.0.1", "allow") in conns and (OTHER_IP, "deny") in conns, res.describe()
    assert res.returncode == 3, res.describe()
    assert "could not obtain its policy" not in res.stderr, res.describe()


def compare(run_guarded, argv: list[str], port: int) -> None:
    check_native(argv, port)
    check_guarded(run_guarded(["--allow", "loopback"], argv), port)


# --------------------------------------------------------------------------------------------
# A child that changes uid after its parent closed the descriptor


def test_close_fds_then_setpriv_to_another_user(sandbox, servers, loopback, run_guarded):
    needs_uid_change()
    compare(run_guarded, parent(SETPRIV_NOBODY + probe(loopback.tcp1.port)), loopback.tcp1.port)


def test_close_fds_then_runuser(sandbox, servers, loopback, run_guarded):
    needs_uid_change()
    argv = ["runuser", "-u", "nobody", "--"]
    why = _works(argv + ["true"])
    if why:
        pytest.skip(why)
    compare(run_guarded, parent(argv + probe(loopback.tcp1.port)), loopback.tcp1.port)


def test_subprocess_run_with_user(sandbox, servers, loopback, run_guarded):
    # Python closes the descriptors and changes uid in the child before exec: the program
    # that starts has neither the descriptor nor the right to open the launcher's copy.
    needs_uid_change()
    argv = parent(probe(loopback.tcp1.port), user=NOBODY, group=NOBODY, extra_groups=[])
    compare(run_guarded, argv, loopback.tcp1.port)


def test_grandchild_of_a_uid_change(sandbox, servers, loopback, run_guarded):
    # The process that changed uid hands its policy on: its own child (close_fds=False) needs
    # neither /proc nor the launcher.
    needs_uid_change()
    inner = parent(probe(loopback.tcp1.port), close_fds=False)
    argv = parent(inner, user=NOBODY, group=NOBODY, extra_groups=[])
    compare(run_guarded, argv, loopback.tcp1.port)


# --------------------------------------------------------------------------------------------
# A new PID namespace: /proc/<launcher pid> names no process there


def test_new_pid_namespace_after_close_fds(sandbox, servers, loopback, run_guarded):
    argv = ["unshare", "-pf", "--mount-proc", "--"]
    why = _works(argv + ["true"])
    if why:
        pytest.skip(why)
    compare(run_guarded, parent(argv + probe(loopback.tcp1.port)), loopback.tcp1.port)


def test_new_pid_namespace_then_another_user(sandbox, servers, loopback, run_guarded):
    needs_uid_change()
    argv = ["unshare", "-pf", "--mount-proc", "--"]
    why = _works(argv + ["true"])
    if why:
        pytest.skip(why)
    compare(run_guarded, parent(argv + SETPRIV_NOBODY + probe(loopback.tcp1.port)),
            loopback.tcp1.port)


# --------------------------------------------------------------------------------------------
# After the launcher exited

DAEMON = r"""
import os, subprocess, sys, time
ready, go, out, port = sys.argv[1:5]
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.02)
with open(out + ".tmp", "w") as f:
    # Only what this process holds can help its child once the launcher is gone.
    subprocess.run([sys.executable, PROBE, f"connect=127.0.0.1,{port}", "connect=OTHER,5432"],
                   stdout=f, stderr=subprocess.STDOUT, close_fds=CLOSE_FDS)
os.rename(out + ".tmp", out)
"""


@pytest.mark.parametrize("close_fds", [False, True], ids=["inherits", "close_fds"])
def test_child_started_after_the_launcher_exited(close_fds, sandbox, servers, loopback, run_guarded,
                                                 tmp_path):
    # A daemon started with close_fds=True (it reopens the launcher's copy while the launcher
    # lives) starts a child after egress-run returned: the daemon must have kept the policy,
    # and must hand it on even when that child closes what it inherits (close_range leaves the
    # guard's policy descriptor).
    port = loopback.tcp1.port
    daemon = (DAEMON.replace("PROBE", repr(str(PROGS / "netprobe.py"))).replace("OTHER", OTHER_IP)
              .replace("CLOSE_FDS", repr(close_fds)))

    def run(tag: str, guarded: bool) -> dict[str, dict]:
        ready, go, out = (tmp_path / f"{tag}.{n}" for n in ("ready", "go", "out"))
        starter = (
            "import os, subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {daemon!r}, {str(ready)!r}, {str(go)!r},"
            f" {str(out)!r}, '{port}'], close_fds=True, start_new_session=True,"
            " stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "deadline = time.monotonic() + 60\n"
            f"while not os.path.exists({str(ready)!r}) and time.monotonic() < deadline:\n"
            "    time.sleep(0.02)\n"
        )
        if guarded:
            res = run_guarded(["--allow", "loopback"], py(starter))
            assert res.returncode == 0, res.describe()
        else:
            subprocess.run(py(starter), check=True, timeout=RUN_TIMEOUT, env=guarded_env())
        go.touch()
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert out.exists(), f"the daemon's child wrote nothing ({tag})"
        return results(out.read_text())

    native = run("native", False)
    assert all(r["ok"] for r in native.values()) and len(native) == 2, native
    guarded = run("guarded", True)
    lb, other = guarded.get(f"connect=127.0.0.1,{port}"), guarded.get(f"connect={OTHER_IP},5432")
    assert lb and lb["ok"], f"loopback must get through after the launcher exited: {guarded}"
    assert other and not other["ok"] and other["errno"] == errno.EACCES, guarded


# --------------------------------------------------------------------------------------------
# The launcher's policy service


RECV_POLICY = r"""
import array, socket


def recv_policy(name, timeout=30):
    # Connects to the policy service `name` (abstract): (message, descriptors received).
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(timeout)
        s.connect(b"\0" + name)
        msg, anc, _, _ = s.recvmsg(256, socket.CMSG_SPACE(4 * 4))
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return msg, list(fds)
"""
exec(RECV_POLICY)  # defines recv_policy here too


ASK = r"""
import fcntl, json, os, sys
loc = os.environ["EGRESS_RUN_POLICY"].split(";")[0].split(":")
name = f"egress-run.{loc[1]}.{loc[4]}.policy".encode()
print(json.dumps({"name": name.decode()}), flush=True)
msg, fds = recv_policy(name)
info = []
for fd in fds:
    st = os.fstat(fd)
    info.append({"ino": st.st_ino, "dev": st.st_dev, "seals": fcntl.fcntl(fd, fcntl.F_GET_SEALS)})
print(json.dumps({"msg": msg.decode(), "fds": info, "loc": loc}), flush=True)
sys.stdin.read()
"""


def test_policy_service_answers_its_tree_only(egress_bin, tmp_path):
    # Inside the tree (the guarded program itself) the answer carries the sealed policy; the
    # test process, outside it, is refused and gets no descriptor.
    code = RECV_POLICY + ASK
    p = subprocess.Popen([str(egress_bin), "--allow", "loopback", "--", PYTHON, "-c", code],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=guarded_env(), start_new_session=True)
    try:
        first = json.loads(p.stdout.readline())
        inside = json.loads(p.stdout.readline())
        msg, fds = recv_policy(first["name"].encode())
        for fd in fds:
            os.close(fd)
    finally:
        p.stdin.close()
        p.wait(timeout=RUN_TIMEOUT)
        err = p.stderr.read()
    loc = inside["loc"]
    assert len(inside["fds"]) == 1, inside
    got = inside["fds"][0]
    assert (got["dev"], got["ino"]) == (int(loc[3]), int(loc[4])), inside
    assert got["seals"] & REQUIRED_SEALS == REQUIRED_SEALS, inside
    assert inside["msg"].startswith("ok"), inside
    assert fds == [], f"a process outside the run got descriptors: {msg!r}"
    assert msg.startswith(b"refused"), msg
    assert p.returncode == 0, err


# --------------------------------------------------------------------------------------------
# An orphan: reparented to the launcher (a subreaper), not lost

ORPHAN = r"""
import os, subprocess, sys, time
# Double fork: the grandchild is reparented out of the run's tree.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(0.2)
        # Close every descriptor one by one (close_range would keep the guard's), then start
        # the probe as another user: no descriptor, no /proc, and the launcher refuses a
        # process outside its tree.
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd > 2:
                try:
                    os.close(fd)
                except OSError:
                    pass
        r = subprocess.run(sys.argv[1:], user=65534, group=65534, extra_groups=[],
                           capture_output=True, text=True)
        with open(OUT + ".tmp", "w") as f:
            f.write(r.stdout)
        os.rename(OUT + ".tmp", OUT)
    os._exit(0)
os.wait()
deadline = time.monotonic() + 60
while not os.path.exists(OUT) and time.monotonic() < deadline:
    time.sleep(0.02)
"""


def test_an_orphan_that_changed_uid_and_closed_everything_still_gets_its_policy(loopback, run_guarded,
                                                                            tmp_path):
    # The launcher is a child subreaper (the kernel layer needs its descendants to stay its
    # descendants): a double-forked orphan is reparented to it, so its policy service still
    # answers the orphan's child, which has no descriptor and cannot open /proc/<launcher>.
    needs_uid_change()
    out = tmp_path / "orphan.out"
    code = ORPHAN.replace("OUT", repr(str(out)))
    port = loopback.tcp1.port
    res = run_guarded(["--allow", "loopback"], py(code) + probe(port)[:3])
    got = results(out.read_text()) if out.exists() else {}
    lb = got.get(f"connect=127.0.0.1,{port}")
    assert lb and lb["ok"], f"{got}\n{res.describe()}"
    errors = [o.get("policy_error") for o in res.report if o["type"] == "process"]
    assert not any(errors), res.describe()
    assert res.returncode == 0, res.describe()


def test_no_message_repeats_its_words():
    # "the process the process has no valid policy": the hint once repeated its subject.
    phrase = "the process " * 2
    for top in ("cli/src", "preload/src", "docs"):
        for path in (REPO / top).rglob("*"):
            if path.is_file() and path.suffix in (".rs", ".md"):
                assert phrase.strip() not in path.read_text(), path


# --------------------------------------------------------------------------------------------
# close_range keeps the guard's policy descriptor, and only that

CLOSERANGE = r"""
import json, os, sys
n = int(os.environ["EGRESS_RUN_POLICY"].split(";")[0].split(":")[2])
if sys.argv[1] == "reused":
    # The program closes the guard's number and puts a file of its own there.
    fd = os.open("/dev/null", os.O_RDONLY)
    os.dup2(fd, n)
    os.close(fd)
mine = os.open("/dev/null", os.O_RDONLY)
os.closerange(3, 1 << 20)
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
print(json.dumps({"policy_fd_open": is_open(n), "mine_open": is_open(mine)}))
"""


@pytest.mark.parametrize("case", ["guard", "reused"])
def test_close_range_keeps_only_the_guards_policy_descriptor(case, run_guarded):
    res = run_guarded(["--allow", "loopback"], py(CLOSERANGE) + [case])
    assert res.returncode == 0, res.describe()
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["mine_open"] is False, res.describe()
    # The guard's own descriptor stays for the children; a file the program put at that
    # number is closed as asked.
    assert out["policy_fd_open"] is (case == "guard"), res.describe()
