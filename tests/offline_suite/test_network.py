"""Tests that need the network; each skips when the machine is offline."""
import socket
import urllib.request

from netcheck import PROBE_ADDR, PROBE_NAME, requires_dns, requires_network


@requires_network()
def test_http_get():
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{PROBE_ADDR}/", timeout=10) as r:
        assert r.status == 200


@requires_network()
def test_tcp_connect():
    with socket.create_connection((PROBE_ADDR, 80), timeout=10):
        pass


@requires_network()
def test_udp_datagram():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert s.sendto(b"hello", (PROBE_ADDR, 9999)) == 5


@requires_dns()
def test_lookup():
    assert socket.getaddrinfo(PROBE_NAME, 80)
