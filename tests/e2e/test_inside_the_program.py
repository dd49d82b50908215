"""Inside the guarded program (HAZARDS "Inside the guarded program"): errno of calls the guard lets
through is the kernel's; hooks that run before the guard library's constructor (another library's
constructor, the program's .preinit_array) are still checked and reported; fork while other threads
are inside hooks does not deadlock and loses no attempt; connect from a signal handler is checked,
also when the signal interrupts a hook. Loopback only, except the fork test's lookup variant (a test
name: sandbox)."""
import errno
import os
import shutil
import socket
import subprocess

import pytest

from conftest import PROGS, TcpListener

MODES = {"block": [], "audit": ["--audit"]}
EACCES = errno.EACCES


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listener():
    """A listener of this test's own, to tell whether anything reached it."""
    t = TcpListener("127.0.0.1")
    yield t
    t.close()


# --------------------------------------------------------------------------------------------
# errno on the allowed path


@pytest.mark.parametrize("mode", MODES)
def test_errno_of_a_call_let_through_is_the_kernels(mode, loopback, compile_c, run_guarded):
    prog = compile_c(PROGS / "errnocheck.c", "errnocheck")
    lport, cport = loopback.tcp1.port, closed_port()
    # block mode: allowed by a rule; audit mode: would be denied, recorded, and let through.
    args = ["--allow", "loopback"] if mode == "block" else ["--audit"]
    res = run_guarded(args, [prog, lport, cport])
    assert res.returncode == 0, res.describe()
    out = res.outputs()
    assert out == [{"nonblock_rc": -1, "nonblock_errno": errno.EINPROGRESS,
                    "refused_rc": -1, "refused_errno": errno.ECONNREFUSED}], res.describe()
    decision = "allow" if mode == "block" else "deny"
    for port in (lport, cport):
        conns = res.attempts("connect", addr="127.0.0.1", port=port)
        assert len(conns) == 1 and conns[0]["count"] == 1 and conns[0]["decision"] == decision, res.describe()
    assert res.summary["attempts"] == 2, res.describe()


# --------------------------------------------------------------------------------------------
# Hooks that run before the guard library's constructor


@pytest.fixture(scope="module")
def early(build_dir):
    """{'ctor': program whose linked library's constructor connects,
        'preinit': the same program also connecting from its .preinit_array}"""
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    d = build_dir / "early"
    d.mkdir(exist_ok=True)
    cmds = [["gcc", "-shared", "-fPIC", "-O1", "-Wall", "-o", d / "libearly.so", PROGS / "early_lib.c"]]
    progs = {"ctor": d / "early_main", "preinit": d / "early_main_preinit"}
    for kind, out in progs.items():
        cmds.append(["gcc", "-O1", "-Wall", *(["-DPREINIT"] if kind == "preinit" else []), "-o", out,
                     PROGS / "early_main.c", f"-L{d}", "-learly", f"-Wl,-rpath,{d}"])
    for cmd in cmds:
        r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"{cmd} failed:\n{r.stderr}")
    return progs


def check_early(res, mode, port, prog, keys):
    out = res.outputs()
    want = EACCES if mode == "block" else 0
    assert out == [{k: want for k in keys}], res.describe()
    assert res.returncode == (3 if mode == "block" else 0), res.describe()
    conns = res.attempts("connect", addr="127.0.0.1", port=port)
    assert sum(c["count"] for c in conns) == len(keys), res.describe()
    assert {c["decision"] for c in conns} == {"deny"}, res.describe()
    procs = res.lines("process")
    assert len(procs) == 1 and procs[0]["exe"] == os.path.realpath(prog), res.describe()
    assert "policy_error" not in procs[0], res.describe()
    assert {c["pid"] for c in conns} == {procs[0]["pid"]}, res.describe()
    assert {c["exe"] for c in conns} == {os.path.realpath(prog)}, res.describe()


@pytest.mark.parametrize("mode", MODES)
def test_connect_from_another_librarys_constructor(mode, loopback, early, run_guarded):
    # libearly's constructor runs before the guard library's (glibc initialises the program's
    # own dependencies before the preloaded library); either way it must be checked and reported.
    port = loopback.tcp1.port
    res = run_guarded(MODES[mode], [early["ctor"]], env={"EARLY_PORT": str(port)})
    check_early(res, mode, port, early["ctor"], ["ctor_errno"])


# Regression: before commit 540bea1 a hook run from .preinit_array (getenv() still NULL) cached
# "EGRESS_RUN_POLICY is not set" for the life of the process: EACCES even in audit mode, no
# process line, no events, block-mode exit 0.
@pytest.mark.parametrize("mode", MODES)
def test_connect_from_preinit_array(mode, loopback, early, run_guarded):
    # .preinit_array runs before every shared library's constructor, libc's included.
    port = loopback.tcp1.port
    res = run_guarded(MODES[mode], [early["preinit"]], env={"EARLY_PORT": str(port)})
    check_early(res, mode, port, early["preinit"], ["ctor_errno", "preinit_errno"])


# --------------------------------------------------------------------------------------------
# fork while other threads are inside hooks


@pytest.fixture(scope="module")
def forkstorm(compile_c):
    return compile_c(PROGS / "forkstorm.c", "forkstorm")


def check_forkstorm(res):
    assert res.returncode == 0, res.describe()
    out = res.outputs()
    assert len(out) == 1, res.describe()
    o = out[0]
    assert o["children"] == 200 and o["children_ok"] == 200, o
    assert o["thread_failed"] == 0 and o["thread_connects"] > 0, o
    conns = res.attempts("connect", addr="127.0.0.1", port=o["port"])
    assert {c["decision"] for c in conns} == {"allow"}, res.describe()
    total = sum(c["count"] for c in conns)
    assert total == o["thread_connects"] + o["children"], \
        f"the report counts {total} connects, the program made {o['thread_connects']} + {o['children']}"
    by_pid = {}
    for c in conns:
        by_pid[c["pid"]] = by_pid.get(c["pid"], 0) + c["count"]
    assert by_pid.pop(o["pid"]) == o["thread_connects"], "the threads' connects are the parent's"
    assert by_pid == {pid: 1 for pid in o["child_pids"]}, "each child's one connect is its own"
    procs = {p["pid"] for p in res.lines("process")}
    assert procs == {o["pid"], *o["child_pids"]}, "every child checked in"
    assert res.summary["processes"] == 201, res.summary
    return o


def test_fork_while_threads_connect(forkstorm, run_guarded):
    # 16 threads connect in a loop while the main thread forks 200 children that connect once.
    # A lock held by another thread at fork time would hang a child: the hang guard catches it.
    res = run_guarded(["--allow", "loopback"], [forkstorm, 16, 200])
    check_forkstorm(res)


def test_fork_while_threads_connect_and_resolve(sandbox, forkstorm, run_guarded):
    # The same, with every fourth thread also inside getaddrinfo of a name a rule allows (the
    # sandbox's test resolver answers; each lookup is recorded).
    res = run_guarded(["--allow", "loopback", "--allow", "allowed.test"], [forkstorm, 16, 200, "allowed.test"])
    o = check_forkstorm(res)
    assert o["lookups"] > 0 and o["lookups_failed"] == 0, o
    lookups = res.attempts("resolve", host="allowed.test")
    assert {r["decision"] for r in lookups} == {"allow"} and {r["pid"] for r in lookups} == {o["pid"]}, res.describe()
    assert sum(r["count"] for r in lookups) == o["lookups"], res.describe()


# --------------------------------------------------------------------------------------------
# connect from a signal handler


@pytest.fixture(scope="module")
def sigconnect(compile_c):
    return compile_c(PROGS / "sigconnect.c", "sigconnect")


@pytest.mark.parametrize("mode", MODES)
def test_connect_from_a_signal_handler(mode, listener, sigconnect, run_guarded):
    res = run_guarded(MODES[mode], [sigconnect, "once", listener.port])
    o = res.outputs()
    assert len(o) == 1 and o[0]["handler_calls"] == 1 and o[0]["handler_other"] == 0, res.describe()
    if mode == "block":
        assert o[0]["handler_eacces"] == 1 and listener.count() == 0, res.describe()
        assert res.returncode == 3, res.describe()
    else:
        assert o[0]["handler_ok"] == 1, res.describe()
        assert res.returncode == 0, res.describe()
    conns = res.attempts("connect", addr="127.0.0.1", port=listener.port)
    assert len(conns) == 1 and conns[0]["count"] == 1 and conns[0]["decision"] == "deny", res.describe()


# Regression: before commit 540bea1 the handler's connect found the thread's re-entrancy guard
# set and passed unchecked and unrecorded (hooks::check_with returned Proceed when
# guard::active()): about half of the handler's denied connects reached the listener.
@pytest.mark.parametrize("mode", MODES)
def test_signal_handler_connect_while_inside_a_hook(mode, listener, sigconnect, run_guarded):
    # The main thread connects to a closed port 20,000 times (each one goes through the hook)
    # while another thread signals it every 200 us; the handler connects to `listener`.
    loop_port, iters = closed_port(), 20000
    res = run_guarded(MODES[mode], [sigconnect, "storm", loop_port, listener.port, iters])
    o = res.outputs()
    assert len(o) == 1, res.describe()
    o = o[0]
    assert o["handler_calls"] > 0 and o["handler_other"] == 0, o
    assert o["loop_ok"] + o["loop_eacces"] + o["loop_other"] == iters, o
    if mode == "block":
        assert o["loop_eacces"] == iters, o
        assert o["handler_ok"] == 0 and listener.count() == 0, \
            f"{o['handler_ok']} of the handler's {o['handler_calls']} denied connects got through: {o}"
        assert o["handler_eacces"] == o["handler_calls"], o
        assert res.returncode == 3, res.describe()
    else:
        assert o["handler_ok"] == o["handler_calls"], o
    assert res.count("connect", addr="127.0.0.1", port=loop_port, decision="deny") == iters, res.describe()
    recorded = res.count("connect", addr="127.0.0.1", port=listener.port, decision="deny")
    assert recorded == o["handler_calls"], \
        f"the report has {recorded} of the handler's {o['handler_calls']} connects: {o}"
