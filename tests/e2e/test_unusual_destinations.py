"""Destinations the kernel reads differently from what they look like: a family-0 (AF_UNSPEC)
address that an IPv4 datagram socket sends to as IPv4, and the disconnect that a family-0
connect still is."""
import socket
import time

import pytest

from conftest import ALLOWED_IP, OTHER_IP, PROGS, RESOLVER_IP

EACCES = 13
MODES = {"block": [], "audit": ["--audit"]}
SEND_CALLS = {"sendto": "sendto", "sendmsg": "sendmsg", "sendmmsg": "sendmmsg", "syscall": "syscall"}


@pytest.fixture(scope="module")
def unusual(compile_c):
    return compile_c(PROGS / "unusual.c", "unusual")


@pytest.mark.parametrize("via", SEND_CALLS)
@pytest.mark.parametrize("mode", MODES)
def test_family_zero_send_is_decided_as_ipv4(via, mode, sandbox, servers, unusual, run_guarded):
    payload = f"family-zero-{via}-{mode}"
    res = run_guarded(["--allow", f"{ALLOWED_IP}:9999", *MODES[mode]],
                      [unusual, "send0", via, OTHER_IP, "9999", payload])
    sends = res.attempts("send", addr=OTHER_IP, port=9999)
    assert [(s["call"], s["decision"], s["proto"]) for s in sends] == [(SEND_CALLS[via], "deny", "udp")], \
        res.describe()
    arrived = servers.udp[OTHER_IP].settle()
    if mode == "block":
        assert res.stdout == f"errno {EACCES}\n", res.describe()
        assert payload.encode() not in arrived
    else:
        assert res.stdout == f"sent {len(payload)}\n", res.describe()
        assert payload.encode() in arrived


def test_family_zero_send_to_an_allowed_address_goes(sandbox, servers, unusual, run_guarded):
    payload = "family-zero-allowed"
    res = run_guarded(["--allow", f"{ALLOWED_IP}:9999"], [unusual, "send0", "sendto", ALLOWED_IP, "9999", payload])
    assert res.stdout == f"sent {len(payload)}\n", res.describe()
    assert res.count("send", addr=ALLOWED_IP, port=9999, decision="allow") == 1, res.describe()
    assert payload.encode() in servers.udp[ALLOWED_IP].settle()


def test_family_zero_dns_question_does_not_reach_the_resolver(sandbox, dns_log, unusual, run_guarded):
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test"], [unusual, "dns0", RESOLVER_IP, "leak.other.test"])
    assert res.stdout == f"errno {EACCES}\n", res.describe()
    sends = res.attempts("send", addr=RESOLVER_IP, port=53)
    assert [(s["decision"], s["host"]) for s in sends] == [("deny", "leak.other.test")], res.describe()
    settle_dns(dns_log, mark)
    assert "leak.other.test" not in dns_log.names_since(mark)


def settle_dns(dns_log, mark):
    """Ask the resolver (unguarded) and wait until its log shows it: the resolver has handled
    everything sent to it before."""
    socket.getaddrinfo("allowed.test", 80, socket.AF_INET)
    deadline = time.monotonic() + 30
    while "allowed.test" not in dns_log.names_since(mark) and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize("allowed", [True, False])
def test_family_zero_connect_still_disconnects(allowed, unusual, loopback, run_guarded):
    # A full-length family-0 connect dissolves a UDP association (the kernel reads AF_UNSPEC
    # as a disconnect whatever follows): not egress, untouched, unrecorded. The send after it
    # has no destination.
    port = loopback.udp.port
    res = run_guarded(["--allow", f"loopback:{port}"] if allowed else [],
                      [unusual, "unspec0", "127.0.0.1", port, "after-disconnect"])
    first = "connect 0 errno 0" if allowed else f"connect -1 errno {EACCES}"
    out = res.stdout.strip()
    assert out.startswith(f"{first}; unspec 0 errno 0; send -1 errno "), res.describe()
    assert [c["addr"] for c in res.lines("connect")] == ["127.0.0.1"], res.describe()
    assert b"after-disconnect" not in loopback.udp.settle()


HOST_NOT_FOUND = 1
# (family, len, address, the PTR name glibc asks for): glibc reads the first 4 (16) bytes of
# a longer buffer; it unmaps an IPv4-mapped IPv6 address only when len is exactly 16.
LONG_REVERSE = {
    "v4-len8": ("4", "8", OTHER_IP, "20.100.51.198.in-addr.arpa"),
    "v4-len16": ("4", "16", OTHER_IP, "20.100.51.198.in-addr.arpa"),
    "v6-len20": ("6", "20", "2001:db8::10",
                 "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
    "mapped-len20": ("6", "20", "::ffff:198.51.100.20",
                     "4.1.4.6.3.3.6.c.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"),
}


@pytest.mark.parametrize("case", LONG_REVERSE)
@pytest.mark.parametrize("op", ["ghba", "ghbar"])
@pytest.mark.parametrize("mode", MODES)
def test_reverse_lookup_of_a_longer_buffer_is_decided(case, op, mode, sandbox, dns_log, unusual, run_guarded):
    family, length, addr, ptr = LONG_REVERSE[case]
    mark = dns_log.mark()
    res = run_guarded(MODES[mode], [unusual, op, family, length, addr])
    looked = res.attempts("resolve", host=ptr)
    assert [r["decision"] for r in looked] == ["deny"], res.describe()
    settle_dns(dns_log, mark)
    if mode == "block":
        want = {"ghba": f"fail h_errno={HOST_NOT_FOUND}", "ghbar": f"fail rc=2 h_errno={HOST_NOT_FOUND}"}[op]
        assert res.stdout.strip() == want, res.describe()
        assert ptr not in dns_log.names_since(mark), "a refused reverse lookup reached the resolver"
    else:
        assert ptr in dns_log.names_since(mark), res.describe()
