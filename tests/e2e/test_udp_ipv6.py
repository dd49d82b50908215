"""UDP sends, IPv6 destinations and IPv4-mapped IPv6 destinations."""
import pytest

from conftest import ALLOWED_IP, OTHER_IP, V6_IP, netprobe, token

EACCES = 13
MODES = {"block": [], "audit": ["--audit"]}


@pytest.mark.parametrize("mode", MODES)
def test_udp_sendto_allowed(mode, sandbox, servers, run_guarded):
    tok = token()
    res = run_guarded(["--allow", f"{ALLOWED_IP}:9999", *MODES[mode]], netprobe(f"sendto={ALLOWED_IP},9999,{tok}"))
    out = res.outputs()
    assert res.returncode == 0, res.describe()
    assert out[0]["ok"] and out[0]["sent"] == len(tok), res.describe()
    assert servers.udp[ALLOWED_IP].wait_for(tok.encode()), "the allowed datagram did not arrive"
    sends = res.attempts("send", addr=ALLOWED_IP, port=9999)
    assert len(sends) == 1, res.describe()
    s = sends[0]
    assert (s["proto"], s["decision"], s["rule"], s["count"]) == ("udp", "allow", f"{ALLOWED_IP}:9999", 1)
    assert s.get("host") is None
    assert res.summary["attempts"] == 1 and res.summary["denied"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_udp_sendto_denied(mode, sandbox, servers, run_guarded):
    tok = token()
    res = run_guarded(["--allow", f"{ALLOWED_IP}:9999", *MODES[mode]],
                      netprobe(f"sendto={OTHER_IP},9999,{tok}", f"sendto={OTHER_IP},9999,{tok}"))
    out = res.outputs()
    sends = res.attempts("send", addr=OTHER_IP, port=9999)
    assert sends and all(s["decision"] == "deny" and s["rule"] is None and s["proto"] == "udp" for s in sends), res.describe()
    assert res.count("send", addr=OTHER_IP, port=9999) == 2, res.describe()
    arrived = servers.udp[OTHER_IP].settle()
    if mode == "block":
        assert [(o["ok"], o.get("error"), o.get("errno")) for o in out] == [(False, "PermissionError", EACCES)] * 2, res.describe()
        assert tok.encode() not in arrived, "a denied datagram reached the sink"
        assert res.returncode == 3, res.describe()
    else:
        assert all(o["ok"] for o in out), res.describe()
        assert arrived.count(tok.encode()) == 2
        assert res.returncode == 0, res.describe()


@pytest.mark.parametrize("mode", MODES)
def test_udp_ipv6_port_not_in_rule_is_denied(mode, sandbox, servers, run_guarded):
    tok = token()
    res = run_guarded(["--allow", f"[{V6_IP}]:80", *MODES[mode]], netprobe(f"sendto={V6_IP},9999,{tok}"))
    out = res.outputs()
    sends = res.attempts("send", addr=V6_IP, port=9999)
    assert len(sends) == 1 and sends[0]["decision"] == "deny" and sends[0]["proto"] == "udp", res.describe()
    arrived = servers.udp[V6_IP].settle()
    if mode == "block":
        assert not out[0]["ok"] and out[0]["errno"] == EACCES, res.describe()
        assert tok.encode() not in arrived
        assert res.returncode == 3
    else:
        assert out[0]["ok"] and tok.encode() in arrived, res.describe()
        assert res.returncode == 0


@pytest.mark.parametrize("mode", MODES)
def test_ipv6_connect_allowed_by_bracketed_rule(mode, sandbox, servers, run_guarded):
    tok = token()
    res = run_guarded(["--allow", f"[{V6_IP}]:80", *MODES[mode]], netprobe(f"http=http://[{V6_IP}]/{tok}"))
    out = res.outputs()
    assert res.returncode == 0, res.describe()
    assert out[0]["ok"] and out[0]["body"] == f"ok from {V6_IP}", res.describe()
    conn = res.attempts("connect", addr=V6_IP, port=80)
    assert len(conn) == 1 and conn[0]["decision"] == "allow" and conn[0]["rule"] == f"[{V6_IP}]:80", res.describe()
    assert conn[0]["proto"] == "tcp"


@pytest.mark.parametrize("mode", MODES)
def test_ipv6_connect_denied_without_rule(mode, sandbox, servers, run_guarded):
    tok = token()
    # an IPv4 rule and another IPv6 port do not cover [2001:db8::10]:80
    res = run_guarded(["--allow", f"{ALLOWED_IP}:80", "--allow", f"[{V6_IP}]:443", *MODES[mode]],
                      netprobe(f"http=http://[{V6_IP}]/{tok}"))
    out = res.outputs()
    conn = res.attempts("connect", addr=V6_IP, port=80)
    assert len(conn) == 1 and conn[0]["decision"] == "deny" and conn[0]["rule"] is None, res.describe()
    if mode == "block":
        assert not out[0]["ok"] and out[0]["errno"] == EACCES, res.describe()
        assert f"/{tok}" not in servers.http[V6_IP].paths()
        assert res.returncode == 3
    else:
        assert out[0]["ok"] and f"/{tok}" in servers.http[V6_IP].paths(), res.describe()
        assert res.returncode == 0


@pytest.mark.parametrize("mode", MODES)
def test_ipv4_mapped_destination_is_matched_as_ipv4(mode, sandbox, servers, run_guarded):
    tok = token()
    res = run_guarded(["--allow", "203.0.113.0/24", *MODES[mode]],
                      netprobe(f"connect6=::ffff:{ALLOWED_IP},80", f"connect6=::ffff:{OTHER_IP},80",
                               f"sendto6=::ffff:{OTHER_IP},9999,{tok}"))
    out = res.outputs()
    assert len(out) == 3, res.describe()
    assert out[0]["ok"], res.describe()
    ok = res.attempts("connect", port=80, decision="allow")
    assert [(c["addr"], c["rule"]) for c in ok] == [(ALLOWED_IP, "203.0.113.0/24")], res.describe()
    bad = res.attempts("connect", port=80, decision="deny")
    assert [c["addr"] for c in bad] == [OTHER_IP], res.describe()
    sends = res.attempts("send", port=9999)
    assert [(s["addr"], s["decision"], s["proto"]) for s in sends] == [(OTHER_IP, "deny", "udp")], res.describe()
    assert not [o for o in res.report if "::ffff:" in str(o.get("addr"))], "mapped addresses must be shown as IPv4"
    arrived = servers.udp[OTHER_IP].settle()
    if mode == "block":
        for o in out[1:]:
            assert not o["ok"] and o["errno"] == EACCES, res.describe()
        assert tok.encode() not in arrived
        assert res.returncode == 3
    else:
        assert out[1]["ok"] and out[2]["ok"], res.describe()
        assert tok.encode() in arrived
        assert res.returncode == 0


@pytest.mark.parametrize("mode", MODES)
def test_connected_udp_socket_is_checked_at_connect(mode, sandbox, servers, run_guarded):
    res = run_guarded(MODES[mode], netprobe(f"udpconnect={OTHER_IP},9999"))
    out = res.outputs()
    conn = res.attempts("connect", addr=OTHER_IP, port=9999)
    assert len(conn) == 1 and conn[0]["proto"] == "udp" and conn[0]["decision"] == "deny", res.describe()
    if mode == "block":
        assert not out[0]["ok"] and out[0]["errno"] == EACCES
        assert res.returncode == 3
    else:
        assert out[0]["ok"]
        assert res.returncode == 0
