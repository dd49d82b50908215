"""Raw system calls: syscall(SYS_connect, ...) and syscall(SYS_sendto, ...) through libc's
syscall() are checked like the real calls; other system calls pass through. Loopback only."""
import pytest

from conftest import PROGS

EACCES = 13


@pytest.fixture(scope="module")
def rawsyscall(compile_c):
    return compile_c(PROGS / "rawsyscall.c", "rawsyscall")


def test_syscall_connect_and_sendto_denied_in_block_mode(rawsyscall, loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded([], [rawsyscall, port])
    assert res.stdout.splitlines() == [f"connect -1 errno {EACCES}", f"sendto -1 errno {EACCES}", "getpid ok 1"], res.describe()
    conn = res.attempts("connect", addr="127.0.0.1", port=port)
    send = res.attempts("send", addr="127.0.0.1", port=port)
    assert [(c["call"], c["decision"], c["proto"]) for c in conn] == [("syscall", "deny", "tcp")], res.describe()
    assert [(s["call"], s["decision"], s["proto"]) for s in send] == [("syscall", "deny", "udp")], res.describe()
    assert res.returncode == 3, res.describe()


def test_syscall_connect_recorded_in_audit_mode(rawsyscall, loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded(["--audit"], [rawsyscall, port])
    assert res.stdout.splitlines() == ["connect 0 errno 0", "sendto 1 errno 0", "getpid ok 1"], res.describe()
    assert res.count("connect", addr="127.0.0.1", port=port, decision="deny") == 1, res.describe()
    assert res.returncode == 0


def test_syscall_allowed_by_rule(rawsyscall, loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded(["--allow", f"loopback:{port}"], [rawsyscall, port])
    assert res.stdout.splitlines() == ["connect 0 errno 0", "sendto 1 errno 0", "getpid ok 1"], res.describe()
    assert res.count("connect", decision="allow", rule=f"loopback:{port}") == 1, res.describe()
    assert res.returncode == 0
