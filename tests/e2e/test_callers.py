"""Report lines name the code that made the call: `caller`, the shared object (libcurl, libpq,
Python's `_socket` module), and `py_caller`, the Python function outside the standard library
(set by the egress_run package's audit hook). Loopback only: the connects go to a port with no
listener, or to the test's own listener."""
import json
import shutil
import textwrap

import pytest

from conftest import PYTHON, REPO

PKG = {"PYTHONPATH": str(REPO / "python")}


def test_curl_connects_through_libcurl(loopback, run_guarded):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    res = run_guarded(["--allow", "loopback"], ["curl", "-s", "-o", "/dev/null",
                                                f"http://127.0.0.1:{loopback.http.port}/"])
    [line] = res.attempts("connect", port=loopback.http.port)
    assert line["caller"].startswith("libcurl.so"), res.describe()


def test_a_program_calling_libc_itself_has_no_caller(compile_c, loopback, run_guarded):
    prog = compile_c(textwrap.dedent("""
        #include <arpa/inet.h>
        #include <stdlib.h>
        #include <sys/socket.h>
        int main(int argc, char **argv) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {0};
            a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[1]));
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            connect(fd, (struct sockaddr *)&a, sizeof a);
            return 0;
        }
    """), "plain_connect")
    res = run_guarded(["--allow", "loopback"], [prog, loopback.tcp1.port])
    [line] = res.attempts("connect", port=loopback.tcp1.port)
    assert "caller" not in line, res.describe()


def test_python_names_its_socket_module_and_the_function_that_phoned_home(tmp_path, loopback,
                                                                           run_guarded):
    pkg = tmp_path / "thirdparty"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "transport.py").write_text(textwrap.dedent("""
        import socket

        def send_home(port):
            socket.create_connection(("127.0.0.1", port)).close()

        def resolve_home():
            socket.getaddrinfo("localhost", 80)

        def datagram(port):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"x", ("127.0.0.1", port))
    """))
    code = textwrap.dedent(f"""
        import sys, socket
        sys.path.insert(0, {str(tmp_path)!r})
        import egress_run
        from thirdparty import transport
        transport.send_home({loopback.tcp1.port})
        transport.datagram({loopback.udp.port})
        socket.create_connection(("127.0.0.1", {loopback.tcp2.port})).close()
    """)
    res = run_guarded(["--allow", "loopback"], [PYTHON, "-c", code], env=PKG)
    import _socket
    native_socket = _socket.__file__ if hasattr(_socket, "__file__") else None
    [home] = res.attempts("connect", port=loopback.tcp1.port)
    assert home["py_caller"] == "thirdparty.transport:send_home", res.describe()
    [dgram] = res.attempts("send", port=loopback.udp.port)
    assert dgram["py_caller"] == "thirdparty.transport:datagram", res.describe()
    [direct] = res.attempts("connect", port=loopback.tcp2.port)
    assert direct["py_caller"] == "__main__:<module>", res.describe()
    if native_socket:
        assert home["caller"] == native_socket.rsplit("/", 1)[1], res.describe()
    # Without the package loaded nothing names Python code.
    res = run_guarded(["--allow", "loopback"],
                      [PYTHON, "-c", code.replace("import egress_run\n", "")], env=PKG)
    [home] = res.attempts("connect", port=loopback.tcp1.port)
    assert "py_caller" not in home, res.describe()


def test_psycopg2_connects_through_libpq(run_guarded):
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not importable")
    code = textwrap.dedent("""
        import psycopg2
        try:
            psycopg2.connect("host=127.0.0.1 port=1 dbname=x user=x connect_timeout=5")
        except psycopg2.OperationalError:
            pass
    """)
    res = run_guarded(["--allow", "loopback"], [PYTHON, "-c", code])
    [line] = res.attempts("connect", port=1)
    assert line["caller"].startswith("libpq"), res.describe()
