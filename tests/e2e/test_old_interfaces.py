"""Old glibc interfaces that reach the network through glibc's internal calls, past the usual
entry points: the public alias `__connect`, and the BSD remote-command family (`rcmd`, `rexec`,
`ruserok`), which resolve and connect inside libc. Each is decided (a lookup of its host for
the remote commands, refused outright for the `ruserok` trust checks) and recorded."""
import pytest

from conftest import ALLOWED_IP, OTHER_IP, PROGS, TcpListener

EACCES = 13
MODES = {"block": [], "audit": ["--audit"]}


@pytest.fixture(scope="module")
def old(compile_c):
    return compile_c(PROGS / "old_interfaces.c", "old_interfaces")


@pytest.fixture(scope="module")
def remote_ports(servers):
    """Listeners on the rsh (514) and rexec (512) ports of the test addresses, which accept and
    close at once: where a call is let through, it fails fast instead of retrying a refused
    connection for half a minute."""
    made = [TcpListener(ip, port) for ip in (ALLOWED_IP, OTHER_IP) for port in (512, 514)]
    yield made
    for listener in made:
        listener.close()


@pytest.mark.parametrize("mode", MODES)
def test_connect_through_its_public_alias(mode, sandbox, servers, old, run_guarded):
    before = servers.tcp[OTHER_IP].count()
    res = run_guarded(["--allow", ALLOWED_IP, *MODES[mode]], [old, "alias", OTHER_IP, "5432"])
    lines = res.attempts("connect", addr=OTHER_IP, port=5432)
    assert [(a["call"], a["decision"]) for a in lines] == [("connect", "deny")], res.describe()
    if mode == "block":
        assert res.stdout == f"errno {EACCES}\n", res.describe()
        assert servers.tcp[OTHER_IP].count() == before
    else:
        assert res.stdout == "ok\n", res.describe()


@pytest.mark.parametrize("call", ["rcmd", "rexec", "ruserok"])
@pytest.mark.parametrize("mode", MODES)
def test_remote_command_interfaces_are_lookups_of_their_host(call, mode, sandbox, dns_log, old, run_guarded,
                                                             remote_ports):
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test", *MODES[mode]], [old, call, "other.test"])
    looked = res.attempts("resolve", host="other.test")
    assert [(r["call"], r["decision"]) for r in looked] == [(call, "deny")], res.describe()
    if mode == "block":
        assert res.stdout.startswith("rc -1"), res.describe()
        if call != "ruserok":
            assert res.stdout == f"rc -1 errno {EACCES}\n", res.describe()
        assert "other.test" not in dns_log.names_since(mark), "a refused lookup reached the resolver"
    else:
        assert "other.test" in dns_log.names_since(mark)


def test_remote_command_allowed_by_a_name_rule(sandbox, dns_log, old, run_guarded, remote_ports):
    """rexec to a host a name rule allows goes ahead (and fails on its own: nothing listens)."""
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test"], [old, "rexec", "allowed.test"])
    looked = res.attempts("resolve", host="allowed.test")
    assert [(r["call"], r["decision"]) for r in looked] == [("rexec", "allow")], res.describe()
    assert "allowed.test" in dns_log.names_since(mark)
