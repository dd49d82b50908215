"""The libc entry points the guard hooks beyond connect/sendto/getaddrinfo: the gethostbyname
family, sendmsg, sendmmsg (one destination per message) and TCP Fast Open."""
import pytest

from conftest import ALLOWED_IP, OTHER_IP, PROGS

EACCES = 13
NO_RECOVERY = 3
MODES = {"block": [], "audit": ["--audit"]}
LOOKUPS = {"ghbn": "gethostbyname", "ghbn2": "gethostbyname2",
           "ghbnr": "gethostbyname_r", "ghbn2r": "gethostbyname2_r"}


@pytest.fixture(scope="module")
def libcentry(compile_c):
    return compile_c(PROGS / "libcentry.c", "libcentry")


@pytest.mark.parametrize("op", LOOKUPS)
@pytest.mark.parametrize("mode", MODES)
def test_gethostbyname_family_denied_name(op, mode, sandbox, dns_log, libcentry, run_guarded):
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test", *MODES[mode]], [libcentry, op, "other.test"])
    looked = res.attempts("resolve", host="other.test")
    assert [(r["call"], r["decision"], r["rule"]) for r in looked] == [(LOOKUPS[op], "deny", None)], res.describe()
    if mode == "block":
        assert res.stdout.startswith(f"fail h_errno={NO_RECOVERY}"), res.describe()
        assert "other.test" not in dns_log.names_since(mark), "a denied lookup reached the resolver"
        assert res.returncode == 3, res.describe()
    else:
        assert res.stdout == f"ok {OTHER_IP}\n", res.describe()
        assert "other.test" in dns_log.names_since(mark)
        assert res.returncode == 0, res.describe()


@pytest.mark.parametrize("op", LOOKUPS)
def test_gethostbyname_family_allowed_name(op, sandbox, libcentry, run_guarded):
    res = run_guarded(["--allow", "allowed.test:80"], [libcentry, op, "allowed.test"])
    assert res.stdout == f"ok {ALLOWED_IP}\n", res.describe()
    looked = res.attempts("resolve", host="allowed.test")
    assert [(r["call"], r["decision"], r["rule"]) for r in looked] == [(LOOKUPS[op], "allow", "allowed.test:80")]
    assert res.returncode == 0


@pytest.mark.parametrize("mode", MODES)
def test_sendmsg_checks_its_destination(mode, sandbox, servers, libcentry, run_guarded):
    res = run_guarded(["--allow", f"{ALLOWED_IP}:9999", *MODES[mode]],
                      [libcentry, "sendmsg", OTHER_IP, "9999", "sendmsg-packet"])
    sends = res.attempts("send", addr=OTHER_IP, port=9999)
    assert [(s["call"], s["decision"], s["proto"]) for s in sends] == [("sendmsg", "deny", "udp")], res.describe()
    arrived = servers.udp[OTHER_IP].settle()
    if mode == "block":
        assert res.stdout == f"errno {EACCES}\n", res.describe()
        assert b"sendmsg-packet" not in arrived
    else:
        assert res.stdout == "sent 14\n", res.describe()
        assert b"sendmsg-packet" in arrived


@pytest.mark.parametrize("mode", MODES)
def test_sendmmsg_checks_every_message(mode, sandbox, servers, libcentry, run_guarded):
    payload = "sendmmsg-packet"
    dests = [f"{ALLOWED_IP}:9999", f"{OTHER_IP}:9999", f"{ALLOWED_IP}:9999"]
    res = run_guarded(["--allow", f"{ALLOWED_IP}:9999", *MODES[mode]], [libcentry, "sendmmsg", payload, *dests])
    assert res.count("send", addr=OTHER_IP, port=9999, decision="deny") == 1, res.describe()
    to_other = servers.udp[OTHER_IP].settle()
    to_allowed = servers.udp[ALLOWED_IP].settle()
    if mode == "block":
        # The allowed message before the denied one is sent; nothing from the denied one on.
        assert res.stdout == "ret 1 errno 0\n", res.describe()
        assert res.count("send", addr=ALLOWED_IP, port=9999, decision="allow") == 1, res.describe()
        assert payload.encode() not in to_other
        assert to_allowed.count(payload.encode()) >= 1
    else:
        assert res.stdout == "ret 3 errno 0\n", res.describe()
        assert res.count("send", addr=ALLOWED_IP, port=9999, decision="allow") == 2, res.describe()
        assert payload.encode() in to_other


def test_sendmmsg_denied_first_message_fails_with_eacces(sandbox, servers, libcentry, run_guarded):
    res = run_guarded(["--allow", f"{ALLOWED_IP}:9999"],
                      [libcentry, "sendmmsg", "denied-first", f"{OTHER_IP}:9999", f"{ALLOWED_IP}:9999"])
    assert res.stdout == f"ret -1 errno {EACCES}\n", res.describe()
    assert b"denied-first" not in servers.udp[ALLOWED_IP].settle()


@pytest.mark.parametrize("mode", MODES)
def test_tcp_fast_open_send_is_a_connect(mode, sandbox, servers, libcentry, run_guarded):
    res = run_guarded(["--allow", f"{ALLOWED_IP}:5432", *MODES[mode]], [libcentry, "tfo", OTHER_IP, "5432"])
    conns = res.attempts("connect", addr=OTHER_IP, port=5432)
    assert [(c["call"], c["decision"], c["proto"]) for c in conns] == [("sendto", "deny", "tcp")], res.describe()
    if mode == "block":
        assert res.stdout == f"errno {EACCES}\n", res.describe()
    else:
        assert res.stdout.startswith(("sent", "errno")) and res.stdout != f"errno {EACCES}\n", res.describe()


@pytest.mark.parametrize("allowed", [True, False])
def test_connect_af_unspec_dissolves_without_a_check(allowed, libcentry, loopback, run_guarded):
    # connect(AF_UNSPEC) on a UDP socket is not egress; it passes untouched and unrecorded,
    # whether or not the earlier association was allowed.
    port = loopback.udp.port
    res = run_guarded(["--allow", f"loopback:{port}"] if allowed else [], [libcentry, "unspec", "127.0.0.1", port])
    first = "connect 0 errno 0" if allowed else f"connect -1 errno {EACCES}"
    assert res.stdout == f"{first}; unspec 0 errno 0\n", res.describe()
    assert [c["addr"] for c in res.lines("connect")] == ["127.0.0.1"], "only the IPv4 connect is recorded"
