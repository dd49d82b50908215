"""A small project test suite, run *under* egress-run by tests/e2e/test_pysuite.py.

The loopback tests start their own servers. test_remote.py reaches http://other.test/, a name
that exists only inside scripts/sandbox.sh's private network namespace; outside it that test
skips, so running this suite by hand never sends a query to the host's resolver.
"""
import http.server
import os
import socket
import socketserver
import threading

import pytest


def in_sandbox():
    return os.environ.get("EGRESS_SANDBOX") == "1" and [n for _, n in socket.if_nameindex()] == ["lo"]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)  # no getfqdn()
        self.server_name, self.server_port = self.server_address[:2]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from loopback"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="session")
def local_http():
    srv = _Server(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def sandbox_only():
    if not in_sandbox():
        pytest.skip("reaches a test name that exists only inside scripts/sandbox.sh")
