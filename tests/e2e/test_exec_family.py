"""The exec family: glibc's variadic exec functions (execl, execlp, execle) reach its internal
execve, not the hooks, so the guard provides them itself (a C shim): an empty environment is
still guarded, and an unguardable program is still refused. Loopback only."""
import stat
import subprocess

import pytest

from conftest import PROGS, PYTHON

EACCES = 13
HOWS = ["execl", "execlp", "execle-empty", "execv-cleared", "execvp-cleared", "execvpe-empty",
        "posix_spawn-empty", "posix_spawnp-empty"]
SEARCHES_PATH = ("execlp", "execvp-cleared", "execvpe-empty", "posix_spawnp-empty")


@pytest.fixture(scope="module")
def execfam(compile_c):
    return compile_c(PROGS / "execfam.c", "execfam")


@pytest.fixture(scope="module")
def connector(build_dir):
    """A script run through PYTHON that connects to 127.0.0.1:PORT and prints the errno."""
    script = build_dir / "connect_once"
    script.write_text(
        f"#!{PYTHON}\n"
        "import socket, sys\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.connect(('127.0.0.1', int(sys.argv[1]))); print('connected')\n"
        "except OSError as e:\n"
        "    print('errno', e.errno)\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture(scope="module")
def static_prog(build_dir):
    src = build_dir / "static_hello.c"
    src.write_text('#include <stdio.h>\nint main(void){puts("static ran");return 0;}\n')
    out = build_dir / "static_hello_execfam"
    r = subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot build a static program here: {r.stderr[:200]}")
    return out


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("mode", ["block", "audit"])
def test_variadic_exec_child_is_guarded(how, mode, execfam, connector, loopback, run_guarded):
    port = loopback.tcp1.port
    prog = connector.name if how in SEARCHES_PATH else str(connector)
    env = {"PATH": f"{connector.parent}:/usr/bin:/bin"} if how in SEARCHES_PATH else None
    res = run_guarded([] if mode == "block" else ["--audit"], [execfam, how, prog, port], env=env)
    assert res.stdout == ("errno 13\n" if mode == "block" else "connected\n"), res.describe()
    conns = res.attempts("connect", addr="127.0.0.1", port=port)
    assert [c["decision"] for c in conns] == ["deny"], res.describe()
    assert conns[0]["exe"].endswith(("python3", "python3.11")) or "python" in conns[0]["exe"], res.describe()


@pytest.mark.parametrize("how", ["execl", "execle-empty", "execv-cleared", "execvpe-empty", "posix_spawn-empty"])
def test_variadic_exec_of_a_static_program_enters_the_kernel_layer(how, execfam, static_prog, run_guarded):
    # Each entry point runs the gate: the static program runs under the kernel layer (a
    # posix_spawn child through the trampoline, with the guard's environment restored).
    res = run_guarded([], [execfam, how, static_prog])
    assert res.stdout == "static ran\n", res.describe()
    layered = [p for p in res.lines("process") if p.get("layer") == "kernel"]
    assert len(layered) == 1 and "statically linked" in layered[0]["reason"], res.describe()
    assert res.returncode == 0, res.describe()


@pytest.fixture(scope="module")
def cleared_shell(compile_c):
    return compile_c(PROGS / "cleared_shell.c", "cleared_shell")


@pytest.mark.parametrize("how", ["system", "popen", "wordexp"])
@pytest.mark.parametrize("mode", ["block", "audit"])
def test_shell_after_clearenv_is_guarded(how, mode, cleared_shell, connector, loopback, run_guarded):
    # glibc's system/popen/wordexp spawn the shell internally (no exec hook sees it) with the
    # current environ; after clearenv() that environ has neither LD_PRELOAD nor the locator.
    port = loopback.tcp1.port
    command = f"$({connector} {port})" if how == "wordexp" else f"{connector} {port}"
    res = run_guarded([] if mode == "block" else ["--audit"], [cleared_shell, how, command])
    assert res.stdout == ("errno 13\n" if mode == "block" else "connected\n"), res.describe()
    conns = res.attempts("connect", addr="127.0.0.1", port=port)
    assert [c["decision"] for c in conns] == ["deny"], res.describe()


FD_HOWS = ["fexecve", "execveat", "execveat-empty"]


@pytest.fixture(scope="module")
def execfd(compile_c):
    return compile_c(PROGS / "execfd.c", "execfd")


@pytest.mark.parametrize("how", FD_HOWS)
def test_descriptor_exec_child_is_guarded(how, execfd, connector, loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded([], [execfd, how, connector, port])
    assert res.stdout == "errno 13\n", res.describe()
    assert res.count("connect", addr="127.0.0.1", port=port, decision="deny") == 1, res.describe()


@pytest.mark.parametrize("how", FD_HOWS)
def test_descriptor_exec_of_a_static_program_enters_the_kernel_layer(how, execfd, static_prog, run_guarded):
    res = run_guarded([], [execfd, how, static_prog])
    assert res.stdout == "static ran\n", res.describe()
    layered = [p for p in res.lines("process") if p.get("layer") == "kernel"]
    assert len(layered) == 1 and "statically linked" in layered[0]["reason"], res.describe()
    assert res.returncode == 0, res.describe()
