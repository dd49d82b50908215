"""A PostgreSQL client for the end-to-end tests, run under egress-run.

    pg_query.py CONNINFO

Connects with psycopg2 to the libpq connection string CONNINFO, runs `SELECT 1` and prints one
JSON line:
    {"ok": true, "value": 1, "libpq": [...], "py_socket_connects": 0}
    {"ok": false, "error": "OperationalError", "msg": ..., "libpq": [...], "py_socket_connects": 0}
`libpq` lists the libpq files mapped into this process and `py_socket_connects` counts the
connects made through Python's socket module (seen by an audit hook): with psycopg2 it must be 0,
which shows that the C library, not Python, made the connection the guard decided on.
psycopg2's errors are caught, so the program exits 0 whatever the guard decided.
"""
import json
import sys

# Set before psycopg2 is imported, so that any Python-level socket connect is seen.
py_socket_connects = 0


def audit(event: str, args: tuple) -> None:
    global py_socket_connects
    if event == "socket.connect":
        py_socket_connects += 1


sys.addaudithook(audit)

import psycopg2  # noqa: E402  (after the hook, on purpose)


def mapped_libpq() -> list[str]:
    """Paths of the libpq shared objects in this process (psycopg2-binary bundles its own)."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "libpq" in line.rsplit("/", 1)[-1]}
    return sorted(paths)


def main(conninfo: str) -> int:
    out: dict = {}
    try:
        conn = psycopg2.connect(conninfo)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                out = {"ok": True, "value": cur.fetchone()[0]}
        finally:
            conn.close()
    except psycopg2.OperationalError as e:
        out = {"ok": False, "error": type(e).__name__, "msg": str(e)}
    out["libpq"] = mapped_libpq()
    out["py_socket_connects"] = py_socket_connects
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
