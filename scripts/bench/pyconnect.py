"""Python workload: COUNT socket.create_connection(("127.0.0.1", port)) to a loopback listener.

    python3 pyconnect.py COUNT [--pytest-socket]

The listener is a socket of this process, bound to 127.0.0.1 and accepted (and closed) by a
thread. Each client socket gets SO_LINGER {1,0} before close, as in connect.c, so the ports do
not run out in TIME_WAIT.

pytest_socket is imported in every variant, so all of them pay the same start-up (pytest is
loaded in any test run anyway) and the difference between them is the per-connect cost. With
--pytest-socket, `socket_allow_hosts(["127.0.0.1"])` is applied before the loop: that is what
pytest-socket's `pytest_runtest_setup` does for each test under `pytest --allow-hosts=127.0.0.1`
(it replaces socket.socket.connect with its checking wrapper).

Writes its own CPU time and peak RSS to $BENCH_RUSAGE_OUT at exit, like the C workloads.
"""

import atexit
import os
import resource
import socket
import struct
import sys
import threading

try:
    import pytest_socket
except ImportError:
    pytest_socket = None


def write_rusage():
    path = os.environ.get("BENCH_RUSAGE_OUT")
    if not path:
        return
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(path, "w") as f:
        f.write(f"{me.ru_utime + kids.ru_utime:.6f} {me.ru_stime + kids.ru_stime:.6f} "
                f"{me.ru_maxrss}\n")


def accept_forever(listener):
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # the listener was closed: we are done
        conn.close()


def main():
    args = sys.argv[1:]
    use_pytest_socket = "--pytest-socket" in args
    args = [a for a in args if a != "--pytest-socket"]
    if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
        sys.exit("usage: pyconnect.py COUNT [--pytest-socket]")
    n = int(args[0])
    atexit.register(write_rusage)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    threading.Thread(target=accept_forever, args=(listener,), daemon=True).start()

    if use_pytest_socket:
        if pytest_socket is None:
            sys.exit("pyconnect.py: pytest_socket is not installed")
        pytest_socket.socket_allow_hosts(["127.0.0.1"])

    linger = struct.pack("ii", 1, 0)
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.close()


if __name__ == "__main__":
    main()
