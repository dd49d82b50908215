"""Tests that need no network (loopback is part of every machine)."""
import socket
import urllib.parse


def test_url_parsing():
    u = urllib.parse.urlsplit("http://example.test:8080/a?b=c")
    assert (u.hostname, u.port, u.path, u.query) == ("example.test", 8080, "/a", "b=c")


def test_loopback_tcp_echo():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=10) as c:
            conn, _ = srv.accept()
            with conn:
                c.sendall(b"ping")
                assert conn.recv(4) == b"ping"


def test_loopback_udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        b.bind(("127.0.0.1", 0))
        a.sendto(b"datagram", b.getsockname())
        b.settimeout(10)
        assert b.recvfrom(100)[0] == b"datagram"
