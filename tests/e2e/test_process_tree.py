"""The process tree (CONTRACT "Process tree"). Loopback only: runs inside or outside the sandbox.

1. The report's process lines, and every way of starting a child is guarded (fork, exec,
   posix_spawn, shells, `env -i`, `subprocess.run(env={})`, `close_fds=True`): one denied
   connect, and its pid has a process line.
2. Attribution: every descendant's attempt is denied in block mode / recorded in audit mode and
   attributed to the pid and program that made it: the connect line's pid and exe are the
   leaf's own (as the leaf reports them), the pid's last process line names that program, and
   the process lines' ppid links lead from the leaf up to COMMAND.
3. A daemon that closes every descriptor and reuses the policy's number still gets its policy
   without touching the unrelated file.
4. A daemon that outlives COMMAND does not hold egress-run and is named in
   `summary.still_running`."""
import json
import os
import shlex
import time

import pytest

from conftest import PROGS, PYTHON, WAIT_TIMEOUT, py, token

MODES = {"block": [], "audit": ["--audit"]}
EACCES = 13


# --------------------------------------------------------------------------------------------
# 1. The command's process line, and every way of starting a child is guarded


def connect_code(port):
    return ("import socket\n"
            "s = socket.socket()\n"
            "try:\n"
            f"    s.connect(('127.0.0.1', {port})); print('child connected', flush=True)\n"
            "except OSError as e:\n"
            "    print('child errno', e.errno, flush=True)\n")


# How the parent (a Python program) starts the child that makes one connect.
LAUNCH = {
    "subprocess-default": "subprocess.run(child)",  # vfork+execv, close_fds=True
    "subprocess-env-empty": "subprocess.run(child, env={})",
    "subprocess-close-fds-false": "subprocess.run(child, close_fds=False)",  # posix_spawn
    "env-i": "subprocess.run(['env', '-i'] + child)",
    "os-system": "os.system(shlex.join(child))",
    "sh-c": "subprocess.run(['sh', '-c', shlex.join(child) + '; true'])",
    "os-execv": "os.execv(child[0], child)",
    "os-execve-empty-env": "os.execve(child[0], child, {})",
    "fork": "pid = os.fork()\nif pid == 0:\n    exec(child[2]); os._exit(0)\nos.waitpid(pid, 0)",
}


def test_process_line_of_the_command(run_guarded):
    res = run_guarded([], py("print('hi')"))
    assert res.returncode == 0, res.describe()
    procs = res.lines("process")
    assert len(procs) == 1, res.describe()
    p = procs[0]
    assert p["guarded"] is True and p["argv"] == [PYTHON, "-c", "print('hi')"], p
    assert p["exe"].startswith("/"), p
    assert res.summary["processes"] == 1
    assert res.run_line["argv"] == [PYTHON, "-c", "print('hi')"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", LAUNCH)
def test_descendant_is_guarded(how, mode, loopback, run_guarded):
    port = loopback.tcp1.port
    code = ("import os, shlex, subprocess, sys\n"
            f"child = [{PYTHON!r}, '-c', {connect_code(port)!r}]\n"
            "sys.stdout.flush()\n"
            f"{LAUNCH[how]}\n")
    res = run_guarded(MODES[mode], py(code))
    want = "child errno 13\n" if mode == "block" else "child connected\n"
    assert res.stdout == want, res.describe()
    assert res.returncode == (3 if mode == "block" else 0), res.describe()
    conns = res.attempts("connect", addr="127.0.0.1", port=port)
    assert len(conns) == 1 and conns[0]["count"] == 1 and conns[0]["decision"] == "deny", res.describe()
    procs = res.lines("process")
    assert conns[0]["pid"] in {p["pid"] for p in procs}, "the process that made the attempt has a process line"
    assert all(p["guarded"] is True and "policy_error" not in p for p in procs), res.describe()


# --------------------------------------------------------------------------------------------
# 2.-4. Attribution: the leaves (Python and C) and the checks they share

# A Python leaf: one connect, then a JSON line saying who made it.
PY_LEAF = (
    "import json, os, socket, sys\n"
    "def leaf(port):\n"
    "    s = socket.socket()\n"
    "    try:\n"
    "        s.connect(('127.0.0.1', int(port))); err = 0\n"
    "    except OSError as e:\n"
    "        err = e.errno\n"
    "    s.close()\n"
    "    print(json.dumps({'leaf': 'py', 'pid': os.getpid(), 'ppid': os.getppid(),\n"
    "                      'exe': os.readlink('/proc/self/exe'), 'errno': err}), flush=True)\n"
)

# How a Python root (COMMAND) starts the leaf. `leaf` is the C leaf (progs/treeleaf.c), `port`
# the port to connect to; the root prints its own pid first.
PY_LAUNCH = {
    # fork without exec: the child runs the Python leaf in the forked interpreter.
    "fork": "pid = os.fork()\n"
            "if pid == 0:\n"
            "    leaf(port)\n"
            "    os._exit(0)\n"
            "os.waitpid(pid, 0)",
    # exec in place: same pid, a new program.
    "os-execv": "os.execv(cleaf, [cleaf, port])",
    # exec with a fresh environment (no LD_PRELOAD, no EGRESS_RUN_POLICY in it).
    "os-execve-fresh-env": "os.execve(cleaf, [cleaf, port], {'FRESH_ENV': '1'})",
    "os-posix_spawn": "pid = os.posix_spawn(cleaf, [cleaf, port], os.environ)\nos.waitpid(pid, 0)",
    # CPython 3.11 uses posix_spawn for this.
    "subprocess-close-fds-false": "subprocess.run([cleaf, port], close_fds=False)",
}


@pytest.fixture(scope="module")
def treeleaf(compile_c):
    return compile_c(PROGS / "treeleaf.c", "treeleaf")


@pytest.fixture(scope="module")
def vforkexec(compile_c):
    return compile_c(PROGS / "vforkexec.c", "vforkexec")


def json_lines(res, key):
    return [o for o in res.outputs() if key in o]


def process_lines(res, pid):
    return [p for p in res.lines("process") if p["pid"] == pid]


def ancestry(res, pid, root, limit=20):
    """The pids from `pid` up to `root` following the process lines' ppid (both included);
    fails if the chain breaks before reaching root."""
    chain = [pid]
    while pid != root:
        lines = process_lines(res, pid)
        assert lines, f"pid {pid} (an ancestor of the leaf) has no process line\n" + res.describe()
        ppids = {p["ppid"] for p in lines}
        assert len(ppids) == 1, f"pid {pid}'s process lines disagree on ppid: {ppids}\n" + res.describe()
        pid = ppids.pop()
        chain.append(pid)
        assert len(chain) <= limit, f"no path from the leaf to COMMAND (pid {root}): {chain}\n" + res.describe()
    return chain


def check_leaf_attempt(res, mode, port, leaf):
    """The one connect to `port` is the leaf's, named with the leaf's pid and exe."""
    want_errno = EACCES if mode == "block" else 0
    assert leaf["errno"] == want_errno, res.describe()
    assert res.returncode == (3 if mode == "block" else 0), res.describe()
    conns = res.attempts("connect", addr="127.0.0.1", port=port)
    assert len(conns) == 1 and conns[0]["count"] == 1, res.describe()
    c = conns[0]
    assert c["decision"] == "deny" and c["rule"] is None, res.describe()
    assert c["pid"] == leaf["pid"], f"attributed to pid {c['pid']}, the leaf is {leaf['pid']}\n" + res.describe()
    assert c["exe"] == leaf["exe"], f"attributed to {c['exe']}, the leaf is {leaf['exe']}\n" + res.describe()
    lines = process_lines(res, leaf["pid"])
    assert lines and lines[-1]["exe"] == leaf["exe"], "the leaf's (last) process line names its program\n" + res.describe()
    assert all(p["guarded"] is True and "policy_error" not in p for p in res.lines("process")), res.describe()
    # No other attempt anywhere in the tree.
    assert res.summary["attempts"] == 1 and res.summary["denied"] == 1, res.describe()


# --------------------------------------------------------------------------------------------
# 2. Each way of starting a child: the right pid and exe


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", PY_LAUNCH)
def test_python_parent_child_attribution(how, mode, loopback, treeleaf, run_guarded):
    port = loopback.tcp1.port
    code = ("import json, os, subprocess, sys\n" + PY_LEAF +
            "cleaf, port = sys.argv[1], sys.argv[2]\n"
            "print(json.dumps({'root': os.getpid()}), flush=True)\n" + PY_LAUNCH[how] + "\n")
    res = run_guarded(MODES[mode], py(code) + [treeleaf, port])
    roots, leaves = json_lines(res, "root"), json_lines(res, "leaf")
    assert len(roots) == 1 and len(leaves) == 1, res.describe()
    root, leaf = roots[0]["root"], leaves[0]
    assert leaf["leaf"] == ("py" if how == "fork" else "c"), res.describe()
    if how != "fork":
        assert leaf["exe"] == os.path.realpath(treeleaf), res.describe()
    check_leaf_attempt(res, mode, port, leaf)
    assert res.lines("process")[0]["pid"] == root, "COMMAND's process line comes first\n" + res.describe()
    if how.startswith("os-exec"):
        # exec keeps the pid: one pid, two programs, in order; the attempt goes to the second.
        assert leaf["pid"] == root, res.describe()
        exes = [p["exe"] for p in process_lines(res, root)]
        assert len(exes) == 2 and exes[1] == leaf["exe"] and exes[0] != leaf["exe"], res.describe()
        assert res.summary["processes"] == 1, res.describe()
    else:
        assert leaf["pid"] != root and leaf["ppid"] == root, res.describe()
        assert ancestry(res, leaf["pid"], root) == [leaf["pid"], root], res.describe()
        assert res.summary["processes"] == 2, res.describe()


@pytest.mark.parametrize("mode", MODES)
def test_sh_c_three_levels_deep(mode, loopback, run_guarded):
    port = loopback.tcp1.port
    cmd = [PYTHON, "-c", PY_LEAF + "leaf(sys.argv[1])\n", str(port)]
    for _ in range(3):
        # `; exit $?` keeps each shell alive (no exec of its last command): a real 4-level tree.
        cmd = ["sh", "-c", shlex.join(cmd) + "; exit $?"]
    res = run_guarded(MODES[mode], cmd)
    leaves = json_lines(res, "leaf")
    assert len(leaves) == 1, res.describe()
    leaf = leaves[0]
    check_leaf_attempt(res, mode, port, leaf)
    root = res.lines("process")[0]["pid"]
    chain = ancestry(res, leaf["pid"], root)
    assert len(chain) == 4, f"expected sh -> sh -> sh -> python, got pids {chain}\n" + res.describe()
    for pid in chain[1:]:
        exe = process_lines(res, pid)[-1]["exe"]
        assert os.path.basename(exe) in ("sh", "dash", "bash"), (pid, exe, res.describe())
    assert res.summary["processes"] == 4, res.describe()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("env", ["inherit", "empty"])
def test_vfork_execve_from_c(env, mode, loopback, treeleaf, vforkexec, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded(MODES[mode], [vforkexec, env, treeleaf, port])
    roots, leaves = json_lines(res, "root"), json_lines(res, "leaf")
    assert len(roots) == 1 and len(leaves) == 1, res.describe()
    root, leaf = roots[0]["root"], leaves[0]
    assert leaf["exe"] == os.path.realpath(treeleaf), res.describe()
    check_leaf_attempt(res, mode, port, leaf)
    assert leaf["ppid"] == root and ancestry(res, leaf["pid"], root) == [leaf["pid"], root], res.describe()
    assert process_lines(res, root)[0]["exe"] == os.path.realpath(vforkexec), res.describe()


# --------------------------------------------------------------------------------------------
# 3. A daemon that closes every descriptor and reuses the policy's number


DAEMON_FD_REUSE = r"""
import json, os, socket, sys
victims_dir, own_port, leaf_port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
policy_fd = int(os.environ["EGRESS_RUN_POLICY"].split(":")[2])
# The guard's own descriptors live at high numbers (the memfds, the event socket): every low
# number, each of the guard's, and the next two above them are reused.
guard_fds = [n for n in map(int, os.listdir("/proc/self/fd")) if n >= 64]
numbers = sorted((set(range(16)) | set(guard_fds) | {max(guard_fds) + 1, max(guard_fds) + 2}) - {policy_fd})
assert len(numbers) <= 64 and policy_fd in guard_fds, (policy_fd, guard_fds)
pid = os.fork()
if pid == 0:
    os.setsid()
    os.closerange(0, 4096)   # every descriptor, stdio included (close_range(2) in CPython 3.11)
    # An unrelated file, open for reading and writing, dup2'ed onto the policy's number (it
    # lands on 0 first: everything is closed).
    fd = os.open(os.path.join(victims_dir, "victim-policy"), os.O_RDWR)
    assert fd != policy_fd
    os.dup2(fd, policy_fd)          # inheritable
    os.close(fd)
    # More of them on the other numbers: the guard's own event socket number is reused too.
    for i, n in enumerate(numbers):
        fd = os.open(os.path.join(victims_dir, f"victim-{i}"), os.O_RDWR)
        if fd != n:
            os.dup2(fd, n)          # inheritable
            os.close(fd)
        os.set_inheritable(n, True)
    # The daemon's own attempt, with all its old numbers reused.
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", own_port)); err = 0
    except OSError as e:
        err = e.errno
    s.close()
    with open(out, "a") as f:
        f.write(json.dumps({"daemon": os.getpid(), "errno": err}) + "\n")
    # The child: a new program in this process, inheriting the reused numbers.
    leaf = (
        "import json, os, socket, sys\n"
        "port, out, policy_fd, numbers = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.connect(('127.0.0.1', port)); err = 0\n"
        "except OSError as e:\n"
        "    err = e.errno\n"
        "s.close()\n"
        "offsets = {n: os.lseek(n, 0, os.SEEK_CUR) for n in numbers + [policy_fd]}\n"
        "with open(out, 'a') as f:\n"
        "    f.write(json.dumps({'leaf': os.getpid(), 'exe': os.readlink('/proc/self/exe'),\n"
        "                        'errno': err, 'offsets': offsets}) + '\\n')\n"
    )
    os.execv(sys.executable, [sys.executable, "-c", leaf, leaf_port, out, str(policy_fd), json.dumps(numbers)])
_, status = os.waitpid(pid, 0)
print(json.dumps({"root": os.getpid(), "daemon_status": status}), flush=True)
"""


@pytest.mark.parametrize("mode", MODES)
def test_daemon_closes_everything_and_reuses_the_policy_number(mode, loopback, tmp_path, run_guarded):
    own_port, leaf_port = loopback.tcp1.port, loopback.tcp2.port
    victims = tmp_path / "victims"
    victims.mkdir()
    content = {}
    for name in [f"victim-{n}" for n in range(64)] + ["victim-policy"]:
        # Content a policy reader would choke on, and that must stay exactly as it is.
        content[name] = (f"{name}: program data, not a policy {token()}\n" * 50).encode()
        (victims / name).write_bytes(content[name])
    out = tmp_path / "daemon.jsonl"
    res = run_guarded(MODES[mode], py(DAEMON_FD_REUSE) + [victims, own_port, leaf_port, out])
    assert res.returncode == (3 if mode == "block" else 0), res.describe()
    roots = json_lines(res, "root")
    assert len(roots) == 1 and roots[0]["daemon_status"] == 0, res.describe()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    daemon = [r for r in records if "daemon" in r]
    leaf = [r for r in records if "leaf" in r]
    assert len(daemon) == 1 and len(leaf) == 1, (records, res.describe())
    daemon, leaf = daemon[0], leaf[0]
    assert daemon["daemon"] == leaf["leaf"], "the leaf is the daemon's own exec"
    want = EACCES if mode == "block" else 0
    assert daemon["errno"] == want and leaf["errno"] == want, (records, res.describe())

    # The unrelated files: not read (offsets untouched), not written, not truncated.
    assert set(leaf["offsets"].values()) == {0}, f"a reused descriptor was read or written: {leaf['offsets']}"
    for name, data in content.items():
        assert (victims / name).read_bytes() == data, f"{name} was changed\n" + res.describe()

    # Both attempts recorded, attributed to the daemon's pid and its program at the time.
    pid = leaf["leaf"]
    for port in (own_port, leaf_port):
        conns = res.attempts("connect", addr="127.0.0.1", port=port)
        assert len(conns) == 1 and conns[0]["count"] == 1 and conns[0]["decision"] == "deny", res.describe()
        assert conns[0]["pid"] == pid and conns[0]["exe"] == leaf["exe"], res.describe()
    # The exec'd program recovered the policy (through /proc/<launcher>/fd/N): it did not fail
    # closed. Its denial above is the policy's own (no rule), not a fail-closed one.
    lines = process_lines(res, pid)
    assert len(lines) == 2, "the daemon checked in after fork and again after exec\n" + res.describe()
    assert all("policy_error" not in p for p in lines), res.describe()
    assert res.attempts("connect", port=leaf_port)[0]["reason"] == "no rule allows it", res.describe()


@pytest.mark.parametrize("mode", MODES)
def test_recovered_policy_still_allows(mode, loopback, tmp_path, run_guarded):
    """Control for the test above: after recovery the policy's rules apply (an allowed connect
    succeeds in block mode), so the denial above is not the library failing closed."""
    victims = tmp_path / "victims"
    victims.mkdir()
    for name in [f"victim-{n}" for n in range(64)] + ["victim-policy"]:
        (victims / name).write_bytes(b"x" * 100)
    out = tmp_path / "daemon.jsonl"
    port = loopback.tcp1.port
    res = run_guarded(MODES[mode] + ["--allow", f"loopback:{port}"],
                      py(DAEMON_FD_REUSE) + [victims, port, port, out])
    assert res.returncode == 0, res.describe()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["errno"] for r in records] == [0, 0], (records, res.describe())
    conns = res.attempts("connect", port=port)
    assert sum(c["count"] for c in conns) == 2 and {c["decision"] for c in conns} == {"allow"}, res.describe()
    assert {c["rule"] for c in conns} == {f"loopback:{port}"}, res.describe()


# --------------------------------------------------------------------------------------------
# 4. A double-forked daemon that outlives COMMAND


DAEMON_OUTLIVES = r"""
import json, os, socket, sys, time
ready, release, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    # The daemon: stdio on /dev/null, so it holds none of egress-run's pipes.
    null = os.open(os.devnull, os.O_RDWR)
    for n in (0, 1, 2):
        os.dup2(null, n)
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port)); err = 0
    except OSError as e:
        err = e.errno
    s.close()
    with open(ready + ".tmp", "w") as f:
        f.write(json.dumps({"daemon": os.getpid(), "errno": err}))
    os.rename(ready + ".tmp", ready)
    deadline = time.monotonic() + 120        # bounded: the test releases it long before
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
    os._exit(0)
os.waitpid(pid, 0)
deadline = time.monotonic() + 30
while not os.path.exists(ready) and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"root": os.getpid(), "ready": os.path.exists(ready)}), flush=True)
"""


def alive(pid):
    """True if `pid` exists and is not a zombie."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.parametrize("mode", MODES)
def test_daemon_outliving_the_command(mode, loopback, tmp_path, run_guarded):
    port = loopback.tcp1.port
    ready, release = tmp_path / "ready", tmp_path / "release"
    daemon_pid = None
    try:
        res = run_guarded(MODES[mode], py(DAEMON_OUTLIVES) + [ready, release, port])
        info = json.loads(ready.read_text()) if ready.exists() else None
        assert info is not None, "the daemon never got ready\n" + res.describe()
        daemon_pid = info["daemon"]
        # egress-run returned (run_guarded is back) while the daemon still lives.
        assert alive(daemon_pid), "the daemon died before the test released it"
        assert res.outputs() == [{"root": res.lines("process")[0]["pid"], "ready": True}], res.describe()
        assert info["errno"] == (EACCES if mode == "block" else 0), (info, res.describe())
        assert res.returncode == (3 if mode == "block" else 0), res.describe()
        conns = res.attempts("connect", addr="127.0.0.1", port=port)
        assert len(conns) == 1 and conns[0]["count"] == 1 and conns[0]["decision"] == "deny", res.describe()
        assert conns[0]["pid"] == daemon_pid and conns[0]["exe"] == os.readlink(f"/proc/{daemon_pid}/exe"), res.describe()
        assert process_lines(res, daemon_pid), "the daemon checked in\n" + res.describe()
        still = res.summary.get("still_running")
        assert isinstance(still, list) and daemon_pid in still, \
            f"summary.still_running is {still!r}, the daemon {daemon_pid} was alive\n" + res.describe()
        # Nothing that had ended is listed: COMMAND and the intermediate child are gone.
        assert set(still) == {daemon_pid}, res.describe()
    finally:
        release.write_text("go")
        if daemon_pid is not None:
            deadline = time.monotonic() + WAIT_TIMEOUT
            while alive(daemon_pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if alive(daemon_pid):
                os.kill(daemon_pid, 9)
