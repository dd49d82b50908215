import socket
import urllib.request


def _get(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as r:
        return r.status, r.read()


def test_http_get(local_http):
    assert _get(local_http) == (200, b"hello from loopback")


def test_http_get_twice(local_http):
    assert _get(local_http + "a")[0] == 200
    assert _get(local_http + "b")[0] == 200


def test_tcp_echo_over_loopback():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=30) as c:
            conn, _ = srv.accept()
            with conn:
                c.sendall(b"ping")
                assert conn.recv(4) == b"ping"


def test_udp_over_loopback():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        b.bind(("127.0.0.1", 0))
        a.sendto(b"datagram", b.getsockname())
        b.settimeout(30)
        assert b.recvfrom(100)[0] == b"datagram"
