"""egress-run in front of a real PostgreSQL server, with psycopg2 as the client.

psycopg2 connects through libpq, a C library: the connect the guard decides on is made by C code,
not by Python's socket module (progs/pg_query.py checks that with an audit hook).

The server (Debian's `postgresql` binaries) runs inside the sandbox's network namespace, one per
module, as a user other than root (postgres refuses to run as root), listening on
203.0.113.10:PORT and on a Unix socket in a temp dir, with `log_connections=on`: its log is how
the tests see whether a connection reached it at all.
"""
import dataclasses
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

from conftest import ALLOWED_IP, PROGS, PYTHON, RUN_TIMEOUT, WAIT_TIMEOUT, Result, require_sandbox, token

DB_USER = "egress"  # the superuser initdb creates; trust authentication, no password
READY = "database system is ready to accept connections"
# The server's log_connections lines; "[local]" is a Unix-socket client.
RECEIVED = re.compile(r"connection received: host=(\S+)")


# --------------------------------------------------------------------------------------------
# What the server needs: binaries, the client library, a user that is not root


def _postgres_bindir() -> Optional[Path]:
    """The newest /usr/lib/postgresql/*/bin holding `postgres` and `initdb` (Debian's layout)."""
    found = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if (d / "postgres").is_file() and (d / "initdb").is_file():
            try:
                found.append((float(d.parent.name), d))
            except ValueError:
                continue
    return max(found)[1] if found else None


@dataclasses.dataclass(frozen=True)
class Unprivileged:
    """How to run a command as a user that is not root: `prefix + argv`."""

    how: str
    prefix: list[str]
    # Owner to give the server's directories (None: the dropped user is this uid in disguise).
    uid: Optional[int] = None
    gid: Optional[int] = None


def _drop_candidates() -> list[Unprivileged]:
    if os.geteuid() != 0:
        return [Unprivileged("already not root", [])]
    candidates = []
    # The system user Debian's package creates. setpriv changes uid only where this process
    # really is root (not in the user namespace scripts/sandbox.sh makes for a non-root run).
    try:
        pg = pwd.getpwnam("postgres")
    except KeyError:
        pg = None
    if pg is not None and pg.pw_uid != 0 and shutil.which("setpriv"):
        candidates.append(Unprivileged(
            f"setpriv to the 'postgres' user (uid {pg.pw_uid})",
            ["setpriv", f"--reuid={pg.pw_uid}", f"--regid={pg.pw_gid}", "--clear-groups", "--"],
            pg.pw_uid, pg.pw_gid))
    # Otherwise a nested user namespace in which this (root) uid appears as 1000: the files it
    # makes are still ours, but postgres sees a non-root euid. Needs util-linux >= 2.38.
    if shutil.which("unshare"):
        candidates.append(Unprivileged(
            "a nested user namespace (unshare --map-user=1000)",
            ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--"]))
    return candidates


def _works(u: Unprivileged) -> bool:
    try:
        r = subprocess.run([*u.prefix, "id", "-u"], capture_output=True, text=True, timeout=WAIT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and r.stdout.strip().isdigit() and int(r.stdout) != 0


@pytest.fixture(scope="module")
def pg_bindir() -> Path:
    d = _postgres_bindir()
    if d is None:
        pytest.skip("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin; "
                    "Debian package `postgresql`)")
    return d


@pytest.fixture(scope="module")
def psycopg2_available() -> None:
    # The guarded program runs with this same interpreter (conftest.PYTHON).
    try:
        import psycopg2  # noqa: F401
    except ImportError as e:
        pytest.skip(f"psycopg2 is not importable by {PYTHON} ({e}); pip install psycopg2-binary")


@pytest.fixture(scope="module")
def unprivileged() -> Unprivileged:
    tried = _drop_candidates()
    for u in tried:
        if _works(u):
            return u
    pytest.skip("no way to run postgres as a user other than root here (tried: "
                + ("; ".join(u.how for u in tried) or "nothing applies") + ")")


# --------------------------------------------------------------------------------------------
# The server


@dataclasses.dataclass
class PgServer:
    port: int
    sockdir: Path
    log_path: Path
    proc: subprocess.Popen

    def log_mark(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, mark: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")

    def conninfo(self, host: str, app: str) -> str:
        # sslmode/gssencmode disable: one plain TCP connect, no TLS or Kerberos negotiation.
        # connect_timeout is a hang guard only.
        return (f"host={host} port={self.port} dbname=postgres user={DB_USER} "
                f"application_name={app} sslmode=disable gssencmode=disable connect_timeout=30")

    def tcp(self, app: str) -> str:
        return self.conninfo(ALLOWED_IP, app)

    def unix(self, app: str) -> str:
        return self.conninfo(str(self.sockdir), app)


def _free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # postgres: "fast" shutdown
        try:
            proc.wait(timeout=WAIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def pg_server(pg_bindir: Path, psycopg2_available: None, unprivileged: Unprivileged) -> Iterator[PgServer]:
    # It listens on a test address: only inside the sandbox's namespace.
    require_sandbox()
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, out of the dropped user's reach.
    # /tmp also keeps the socket path short (sun_path: 108 bytes).
    base = Path(tempfile.mkdtemp(prefix="egress-pg-", dir="/tmp"))
    data, sockdir, log_path = base / "data", base / "sock", base / "server.log"
    for d in (data, sockdir):
        d.mkdir(mode=0o700)
    if unprivileged.uid is not None:
        for d in (base, data, sockdir):
            os.chown(d, unprivileged.uid, unprivileged.gid)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
    proc = None
    try:
        r = subprocess.run(
            [*unprivileged.prefix, str(pg_bindir / "initdb"), "-D", str(data), "-U", DB_USER,
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            cwd=base, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=RUN_TIMEOUT)
        if r.returncode != 0:
            pytest.fail(f"initdb failed ({unprivileged.how}):\n{r.stdout}\n{r.stderr}")
        # initdb's pg_hba.conf trusts 127.0.0.1 only; the clients here come from the test address.
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all all {ALLOWED_IP}/32 trust\n")
        port = _free_port(ALLOWED_IP)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*unprivileged.prefix, str(pg_bindir / "postgres"), "-D", str(data),
                 "-c", f"listen_addresses={ALLOWED_IP}", "-c", f"port={port}",
                 "-c", f"unix_socket_directories={sockdir}",
                 "-c", "log_connections=on",
                 # No reverse lookups of clients, no files of its own: everything on stderr.
                 "-c", "log_hostname=off", "-c", "logging_collector=off",
                 "-c", "ssl=off", "-c", "fsync=off", "-c", "max_connections=20"],
                cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        server = PgServer(port, sockdir, log_path, proc)
        deadline = time.monotonic() + RUN_TIMEOUT  # hang guard only
        while READY not in server.log_since(0):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"postgres did not start ({unprivileged.how}; exit {proc.poll()}):\n"
                            + server.log_since(0))
            time.sleep(0.1)
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Helpers


def pg_query(conninfo: str) -> list[str]:
    return [PYTHON, str(PROGS / "pg_query.py"), conninfo]


def outcome(res: Result) -> dict:
    """The one JSON line progs/pg_query.py printed."""
    outs = res.outputs()
    assert len(outs) == 1, res.describe()
    out = outs[0]
    # The connect was libpq's: its library is loaded and Python's socket module made none.
    assert out["libpq"] and out["py_socket_connects"] == 0, res.describe()
    return out


def received_from(log: str) -> list[str]:
    """Client hosts of the "connection received" lines in a piece of the server log."""
    return RECEIVED.findall(log)


def checkpoint(server: PgServer, mark: int) -> str:
    """Connect through the Unix socket from here (unguarded); return the log from `mark` on.

    Once this connection is authorized, the server has logged it; anything that reached the
    server earlier has been logged too (its own "connection received" comes first)."""
    import psycopg2

    app = token()
    conn = psycopg2.connect(server.unix(app))
    conn.close()
    log = server.log_since(mark)
    assert f"application_name={app}" in log, f"the server log lacks the checkpoint connection:\n{log}"
    return log


# --------------------------------------------------------------------------------------------
# Cases


def test_postgres_allowed_tcp_query(sandbox, pg_server: PgServer, run_guarded) -> None:
    app = token()
    mark = pg_server.log_mark()
    rule = f"{ALLOWED_IP}:{pg_server.port}"
    res = run_guarded(["--allow", rule], pg_query(pg_server.tcp(app)))
    assert res.returncode == 0, res.describe()
    out = outcome(res)
    assert out["ok"] and out["value"] == 1, res.describe()
    conns = res.attempts("connect", addr=ALLOWED_IP, port=pg_server.port)
    assert [(c["decision"], c["rule"], c["proto"], c["count"]) for c in conns] == [("allow", rule, "tcp", 1)], \
        res.describe()
    assert res.summary["denied"] == 0, res.describe()
    # The positive control for the denied case: an allowed connection is logged.
    log = pg_server.log_since(mark)
    assert ALLOWED_IP in received_from(log) and f"application_name={app}" in log, log


def test_postgres_denied_without_rule(sandbox, pg_server: PgServer, run_guarded) -> None:
    app = token()
    mark = pg_server.log_mark()
    res = run_guarded([], pg_query(pg_server.tcp(app)))
    # First what matters most: nothing reached the server.
    log = checkpoint(pg_server, mark)
    assert ALLOWED_IP not in received_from(log) and f"application_name={app}" not in log, \
        f"a denied connection reached the server:\n{log}\n{res.describe()}"
    out = outcome(res)
    assert not out["ok"] and out["error"] == "OperationalError", res.describe()
    assert "permission denied" in out["msg"].lower(), res.describe()
    conns = res.attempts("connect", addr=ALLOWED_IP, port=pg_server.port)
    assert conns and {(c["decision"], c["rule"]) for c in conns} == {("deny", None)}, res.describe()
    # CONTRACT "Exit status": the program exited 0 but an attempt was denied.
    assert res.returncode == 3, res.describe()


def test_postgres_unix_socket_needs_no_rule(sandbox, pg_server: PgServer, run_guarded) -> None:
    app = token()
    mark = pg_server.log_mark()
    res = run_guarded([], pg_query(pg_server.unix(app)))
    assert res.returncode == 0, res.describe()
    out = outcome(res)
    assert out["ok"] and out["value"] == 1, res.describe()
    # A Unix socket is not egress: nothing denied, no connect to a network address.
    assert res.summary["denied"] == 0, res.describe()
    assert not res.attempts("connect"), res.describe()
    log = pg_server.log_since(mark)
    assert received_from(log) == ["[local]"] and f"application_name={app}" in log, log
