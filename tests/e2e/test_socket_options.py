"""Socket options and kinds that send packets somewhere no connect or sendto named: source
routes (IP_OPTIONS, IPV6_RTHDR, as options or per-message control data), packet sockets and
raw sockets that build their own IP header, and multicast joins."""
import subprocess

import pytest

from conftest import ALLOWED_IP, OTHER_IP, PROGS, PYTHON, V6_IP

EACCES = 13
MODES = {"block": [], "audit": ["--audit"]}


@pytest.fixture(scope="module")
def unusual(compile_c):
    return compile_c(PROGS / "unusual.c", "unusual")


@pytest.mark.parametrize("mode", MODES)
def test_ipv4_source_route_option_is_refused(mode, sandbox, servers, unusual, run_guarded):
    payload = f"source-routed-{mode}"
    res = run_guarded(["--allow", f"{ALLOWED_IP}:9999", *MODES[mode]],
                      [unusual, "srr", "setsockopt", OTHER_IP, ALLOWED_IP, "9999", payload])
    routes = res.attempts("connect", call="setsockopt")
    assert [(r["addr"], r["port"], r["decision"], r["proto"]) for r in routes] == [(OTHER_IP, 0, "deny", "udp")], \
        res.describe()
    if mode == "block":
        # The option is refused; the datagram then goes to the allowed address directly.
        assert res.stdout == f"setsockopt -1 errno {EACCES}; sent {len(payload)} errno 0\n", res.describe()
        assert payload.encode() in servers.udp[ALLOWED_IP].settle()
    else:
        assert res.stdout.startswith("setsockopt 0 errno 0;"), res.describe()


@pytest.mark.parametrize("mode", MODES)
def test_ipv4_source_route_control_message_is_refused(mode, sandbox, servers, unusual, run_guarded):
    payload = f"source-routed-cmsg-{mode}"
    res = run_guarded(["--allow", f"{ALLOWED_IP}:9999", *MODES[mode]],
                      [unusual, "srr", "cmsg", OTHER_IP, ALLOWED_IP, "9999", payload])
    routes = res.attempts("send", addr=OTHER_IP, port=0)
    assert [(r["call"], r["decision"], r["proto"]) for r in routes] == [("sendmsg", "deny", "udp")], res.describe()
    if mode == "block":
        assert res.stdout == f"setsockopt 0 errno 0; sent -1 errno {EACCES}\n", res.describe()
        assert payload.encode() not in servers.udp[ALLOWED_IP].settle()
        assert payload.encode() not in servers.udp[OTHER_IP].settle()
    else:
        assert "errno 13" not in res.stdout, res.describe()


@pytest.mark.parametrize("via", ["setsockopt", "cmsg"])
@pytest.mark.parametrize("mode", MODES)
def test_ipv6_routing_header_is_refused(via, mode, sandbox, unusual, run_guarded):
    # The control message goes with a datagram to [::1]:9, which a rule allows.
    res = run_guarded(["--allow", "loopback:9", *MODES[mode]], [unusual, "rthdr", via, V6_IP])
    kind, call = ("connect", "setsockopt") if via == "setsockopt" else ("send", "sendmsg")
    routes = res.attempts(kind, call=call, addr=V6_IP, port=0)
    assert [(r["decision"], r["proto"]) for r in routes] == [("deny", "udp")], res.describe()
    if mode == "block":
        assert res.stdout.endswith(f"-1 errno {EACCES}\n"), res.describe()
    else:
        assert f"errno {EACCES}" not in res.stdout, res.describe()


def test_other_socket_options_pass_through(loopback, run_guarded):
    # Options without a route (a NOP-only IP_OPTIONS, SO_REUSEADDR, an empty IPV6_RTHDR, which
    # removes one) are set as usual, unrecorded.
    code = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([1, 1, 1, 0]))
s.sendto(b"plain-options", ("127.0.0.1", {loopback.udp.port}))
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, b"")
print("ok")
"""
    res = run_guarded(["--allow", f"loopback:{loopback.udp.port}"], [PYTHON, "-c", code])
    assert res.stdout == "ok\n", res.describe()
    assert res.attempts("connect", call="setsockopt") == [], res.describe()
    assert b"plain-options" in loopback.udp.settle()


@pytest.fixture(scope="module")
def raw_capable(unusual):
    """Packet and raw sockets need CAP_NET_RAW (root in the sandbox has it)."""
    r = subprocess.run([unusual, "packet"], capture_output=True, text=True)
    if r.stdout != "fd\n":
        pytest.skip(f"no CAP_NET_RAW here: {r.stdout.strip()}")


@pytest.mark.parametrize("mode", MODES)
def test_packet_socket_is_refused(mode, sandbox, raw_capable, unusual, run_guarded):
    res = run_guarded(["--allow", f"{ALLOWED_IP}", *MODES[mode]], [unusual, "packet"])
    made = res.attempts("send", call="socket")
    assert [(m["addr"], m["port"], m["proto"], m["decision"]) for m in made] == [("0.0.0.0", 0, "raw", "deny")], \
        res.describe()
    assert res.stdout == (f"errno {EACCES}\n" if mode == "block" else "fd\n"), res.describe()


@pytest.mark.parametrize("how", ["raw", "opt"])
@pytest.mark.parametrize("mode", MODES)
def test_raw_socket_building_its_header_is_decided_by_the_header(how, mode, sandbox, servers, raw_capable, unusual,
                                                                   run_guarded):
    # The header says OTHER_IP:9999; the sendto address says ALLOWED_IP, which a rule allows.
    payload = f"hand-built-{how}-{mode}"
    res = run_guarded(["--allow", ALLOWED_IP, *MODES[mode]],
                      [unusual, "hdrincl", how, OTHER_IP, ALLOWED_IP, "9999", payload])
    sends = res.attempts("send", addr=OTHER_IP)
    assert [(s["port"], s["proto"], s["decision"]) for s in sends] == [(0, "raw", "deny")], res.describe()
    arrived = servers.udp[OTHER_IP].settle()
    if mode == "block":
        assert res.stdout == f"errno {EACCES}\n", res.describe()
        assert payload.encode() not in arrived
    else:
        assert res.stdout == f"sent {28 + len(payload)}\n", res.describe()
        assert payload.encode() in arrived


def test_raw_socket_building_an_allowed_header_sends(sandbox, servers, raw_capable, unusual, run_guarded):
    payload = "hand-built-allowed"
    res = run_guarded(["--allow", ALLOWED_IP], [unusual, "hdrincl", "raw", ALLOWED_IP, ALLOWED_IP, "9999", payload])
    assert res.stdout == f"sent {28 + len(payload)}\n", res.describe()
    assert res.count("send", addr=ALLOWED_IP, decision="allow") == 1, res.describe()
    assert payload.encode() in servers.udp[ALLOWED_IP].settle()


@pytest.mark.parametrize("mode", MODES)
def test_raw_socket_opened_for_tcp_is_checked_as_raw(mode, sandbox, raw_capable, unusual, run_guarded):
    # Its protocol says TCP, but the address of each send is where the packet goes.
    res = run_guarded(["--allow", ALLOWED_IP, *MODES[mode]], [unusual, "rawtcp", OTHER_IP, "raw-tcp-bytes"])
    sends = res.attempts("send", addr=OTHER_IP)
    assert [(s["proto"], s["decision"]) for s in sends] == [("raw", "deny")], res.describe()
    if mode == "block":
        assert res.stdout == f"errno {EACCES}\n", res.describe()
    else:
        assert res.stdout == "sent 13\n", res.describe()


GROUPS = {"4": "239.1.2.3", "6": "ff0e::123", "m4": "239.1.2.4", "m6": "ff0e::124"}


@pytest.mark.parametrize("family", GROUPS)
@pytest.mark.parametrize("mode", MODES)
def test_multicast_join_of_a_non_local_group_is_decided(family, mode, sandbox, unusual, run_guarded):
    # A join sends a membership report naming the group: allowed only by a rule for it.
    group = GROUPS[family]
    res = run_guarded(["--allow", ALLOWED_IP, *MODES[mode]], [unusual, "join", family, group])
    joins = res.attempts("connect", call="setsockopt", addr=group)
    assert [(j["port"], j["decision"]) for j in joins] == [(0, "deny")], res.describe()
    assert res.stdout == (f"join -1 errno {EACCES}\n" if mode == "block" else "join 0 errno 0\n"), res.describe()


@pytest.mark.parametrize("family", GROUPS)
def test_multicast_join_allowed_by_a_rule(family, sandbox, unusual, run_guarded):
    group = GROUPS[family]
    res = run_guarded(["--allow", group], [unusual, "join", family, group])
    assert res.stdout == "join 0 errno 0\n", res.describe()
    assert res.count("connect", call="setsockopt", addr=group, decision="allow") == 1, res.describe()


@pytest.mark.parametrize("family,group", [("4", "224.0.0.251"), ("6", "ff02::fb"), ("m6", "ff02::1:3")])
def test_multicast_join_of_a_link_local_group_passes(family, group, unusual, run_guarded):
    res = run_guarded([], [unusual, "join", family, group])
    assert res.stdout == "join 0 errno 0\n", res.describe()
    assert res.attempts() == [], res.describe()
