"""Beyond issue #2's list: the report's process lines, and the guard following the process tree
(CONTRACT "Process tree": fork, exec, posix_spawn, shells, `env -i`, `subprocess.run(env={})`,
`close_fds=True`). Loopback only: runs inside or outside the sandbox."""
import pytest

from conftest import PYTHON, py

MODES = {"block": [], "audit": ["--audit"]}


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
