"""Loopback is not implicitly allowed; `loopback` covers 127/8, ::1, their mapped forms, 0.0.0.0 and ::.

These tests send only to loopback and run outside the sandbox too (except the `localhost` one,
which looks a name up)."""
import pytest

from conftest import netprobe, token

EACCES = 13
MODES = {"block": [], "audit": ["--audit"]}


def loopback_destinations(lb):
    """(id, netprobe action, addr expected in the report, port)"""
    d = [
        ("127.0.0.1", f"connect=127.0.0.1,{lb.tcp1.port}", "127.0.0.1", lb.tcp1.port),
        ("127.0.0.2", f"connect=127.0.0.2,{lb.tcp_127_0_0_2.port}", "127.0.0.2", lb.tcp_127_0_0_2.port),
        ("0.0.0.0", f"connect=0.0.0.0,{lb.tcp1.port}", "0.0.0.0", lb.tcp1.port),
        ("::ffff:127.0.0.1", f"connect6=::ffff:127.0.0.1,{lb.tcp1.port}", "127.0.0.1", lb.tcp1.port),
    ]
    if lb.tcp6 is not None:
        d += [("::1", f"connect=::1,{lb.tcp6.port}", "::1", lb.tcp6.port),
              ("::", f"connect=::,{lb.tcp6.port}", "::", lb.tcp6.port)]
    return d


DEST_IDS = ["127.0.0.1", "127.0.0.2", "0.0.0.0", "::ffff:127.0.0.1", "::1", "::"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dest", DEST_IDS)
def test_loopback_is_denied_without_a_rule(dest, mode, loopback, run_guarded):
    dests = {d[0]: d for d in loopback_destinations(loopback)}
    if dest not in dests:
        pytest.skip("no IPv6 loopback here")
    _, action, addr, port = dests[dest]
    # a rule for some other place does not cover loopback either
    res = run_guarded(["--allow", "203.0.113.0/24", *MODES[mode]], netprobe(action))
    out = res.outputs()
    conn = res.attempts("connect", port=port)
    assert len(conn) == 1, res.describe()
    assert (conn[0]["addr"], conn[0]["proto"], conn[0]["decision"], conn[0]["rule"]) == (addr, "tcp", "deny", None), res.describe()
    if mode == "block":
        assert not out[0]["ok"] and out[0]["errno"] == EACCES, res.describe()
        assert res.returncode == 3
    else:
        assert out[0]["ok"], res.describe()
        assert res.returncode == 0


@pytest.mark.parametrize("mode", MODES)
def test_allow_loopback_allows_every_loopback_form(mode, loopback, run_guarded):
    dests = loopback_destinations(loopback)
    res = run_guarded(["--allow", "loopback", *MODES[mode]], netprobe(*[d[1] for d in dests]))
    out = res.outputs()
    assert res.returncode == 0, res.describe()
    assert len(out) == len(dests) and all(o["ok"] for o in out), res.describe()
    for _, _, addr, port in dests:
        conn = res.attempts("connect", addr=addr, port=port)
        assert conn and all(c["decision"] == "allow" and c["rule"] == "loopback" for c in conn), (addr, res.describe())
    assert res.summary["denied"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_allow_one_loopback_port_only(mode, loopback, run_guarded):
    p1, p2 = loopback.tcp1.port, loopback.tcp2.port
    rule = f"127.0.0.1:{p1}"
    res = run_guarded(["--allow", rule, *MODES[mode]], netprobe(f"connect=127.0.0.1,{p1}", f"connect=127.0.0.1,{p2}"))
    out = res.outputs()
    assert out[0]["ok"], res.describe()
    a = res.attempts("connect", addr="127.0.0.1", port=p1)
    b = res.attempts("connect", addr="127.0.0.1", port=p2)
    assert [(c["decision"], c["rule"]) for c in a] == [("allow", rule)], res.describe()
    assert [(c["decision"], c["rule"]) for c in b] == [("deny", None)], res.describe()
    if mode == "block":
        assert not out[1]["ok"] and out[1]["errno"] == EACCES, res.describe()
        assert res.returncode == 3
    else:
        assert out[1]["ok"]
        assert res.returncode == 0


def test_loopback_port_rule(loopback, run_guarded):
    p1, p2 = loopback.tcp1.port, loopback.tcp2.port
    rule = f"loopback:{p1}"
    res = run_guarded(["--allow", rule], netprobe(f"connect=127.0.0.1,{p1}", f"connect=0.0.0.0,{p1}",
                                                  f"connect=127.0.0.1,{p2}"))
    out = res.outputs()
    assert [o["ok"] for o in out] == [True, True, False], res.describe()
    assert out[2]["errno"] == EACCES
    assert res.returncode == 3
    assert {c["rule"] for c in res.attempts("connect", port=p1)} == {rule}, res.describe()


@pytest.mark.parametrize("mode", MODES)
def test_loopback_udp(mode, loopback, run_guarded):
    tok = token()
    port = loopback.udp.port
    denied = run_guarded(MODES[mode], netprobe(f"sendto=127.0.0.1,{port},{tok}-denied"))
    allowed = run_guarded(["--allow", "loopback", *MODES[mode]], netprobe(f"sendto=127.0.0.1,{port},{tok}-allowed"))
    arrived = loopback.udp.settle()
    assert allowed.outputs()[0]["ok"] and f"{tok}-allowed".encode() in arrived, allowed.describe()
    assert allowed.returncode == 0
    assert [s["decision"] for s in denied.attempts("send", addr="127.0.0.1", port=port)] == ["deny"], denied.describe()
    assert [s["decision"] for s in allowed.attempts("send", addr="127.0.0.1", port=port)] == ["allow"], allowed.describe()
    if mode == "block":
        assert denied.outputs()[0]["errno"] == EACCES, denied.describe()
        assert f"{tok}-denied".encode() not in arrived, "a denied datagram reached the sink"
        assert denied.returncode == 3
    else:
        assert denied.outputs()[0]["ok"] and f"{tok}-denied".encode() in arrived
        assert denied.returncode == 0


def test_localhost_resolves_without_a_rule_but_its_connect_is_checked(sandbox, loopback, run_guarded):
    url = f"http://localhost:{loopback.http.port}/"
    denied = run_guarded([], ["curl", "-sS", "--noproxy", "*", "-4", url])
    assert denied.returncode == 7, denied.describe()
    assert not denied.attempts("resolve", decision="deny"), "localhost is resolved from /etc/hosts, not refused"
    conn = denied.attempts("connect", port=loopback.http.port)
    assert conn and {c["decision"] for c in conn} == {"deny"} and conn[0]["addr"] == "127.0.0.1", denied.describe()

    allowed = run_guarded(["--allow", "loopback"], ["curl", "-sS", "--noproxy", "*", "-4", url])
    assert allowed.returncode == 0, allowed.describe()
    assert allowed.stdout == "ok from 127.0.0.1"
    assert not allowed.attempts(decision="deny"), allowed.describe()
