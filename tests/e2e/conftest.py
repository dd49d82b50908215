"""Fixtures for egress-run's end-to-end tests.

Run them with `scripts/sandbox.sh python3 -m pytest tests/e2e -q` (what `make e2e` does). The
sandbox puts the run in a private network namespace whose `lo` carries the test addresses
203.0.113.10, 198.51.100.20, 192.0.2.53 (a test DNS server) and 2001:db8::10, and whose resolver
knows allowed.test, other.test, *.other.test and v6.test. Every test that sends to a
non-loopback address (even one that expects a denial: a bug would leak) uses the `sandbox`
fixture, which skips, saying why, when the run is not in such a namespace. Loopback-only tests
run anywhere.
"""
import dataclasses
import errno
import http.server
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCHEMA_PATH = REPO / "docs" / "report.schema.json"
PROGS = HERE / "progs"
PYTHON = sys.executable

# Addresses of the sandbox (see scripts/sandbox.sh).
ALLOWED_IP = "203.0.113.10"
OTHER_IP = "198.51.100.20"
RESOLVER_IP = "192.0.2.53"
V6_IP = "2001:db8::10"

ATTEMPT_TYPES = ("connect", "send", "resolve")
LINE_TYPES = ("run", "process") + ATTEMPT_TYPES + ("summary",)

# Hang guard only: no test asserts on how long anything takes.
RUN_TIMEOUT = 120
WAIT_TIMEOUT = 30


# --------------------------------------------------------------------------------------------
# The sandbox


def _sandbox_state():
    """(usable, reason, unsafe): whether this process is inside scripts/sandbox.sh's namespace."""
    if os.environ.get("EGRESS_SANDBOX") != "1":
        why = os.environ.get("EGRESS_SANDBOX_UNAVAILABLE")
        if why:
            return False, why, False
        return (False, "not inside the test sandbox (EGRESS_SANDBOX != 1); run "
                "`scripts/sandbox.sh python3 -m pytest tests/e2e`", False)
    # EGRESS_SANDBOX=1 is only a claim: check it before sending anything anywhere.
    links = [name for _, name in socket.if_nameindex()]
    if links != ["lo"]:
        return False, f"EGRESS_SANDBOX=1 but this network namespace has links {links}, not only lo", True
    try:
        resolv = Path("/etc/resolv.conf").read_text()
    except OSError as e:
        return False, f"EGRESS_SANDBOX=1 but /etc/resolv.conf is unreadable: {e}", True
    servers = re.findall(r"^\s*nameserver\s+(\S+)", resolv, re.M)
    if servers != [RESOLVER_IP]:
        return False, f"EGRESS_SANDBOX=1 but /etc/resolv.conf names {servers}, not {RESOLVER_IP}", True
    for ip in (ALLOWED_IP, OTHER_IP, RESOLVER_IP):
        try:
            with socket.socket() as s:
                s.bind((ip, 0))
        except OSError as e:
            return False, f"EGRESS_SANDBOX=1 but {ip} is not a local address: {e}", True
    log = os.environ.get("EGRESS_DNS_LOG")
    if not log or not Path(log).exists():
        return False, "EGRESS_SANDBOX=1 but EGRESS_DNS_LOG is not set or missing", True
    return True, "", False


SANDBOX_OK, SANDBOX_REASON, SANDBOX_UNSAFE = _sandbox_state()


def require_sandbox():
    if SANDBOX_UNSAFE:
        pytest.fail("refusing a test that needs the sandbox: " + SANDBOX_REASON)
    if not SANDBOX_OK:
        pytest.skip(SANDBOX_REASON)


@pytest.fixture
def sandbox():
    """Use in every test that sends to a non-loopback address or resolves a test name."""
    require_sandbox()
    return {"dir": os.environ["EGRESS_SANDBOX_DIR"], "dns_log": os.environ["EGRESS_DNS_LOG"]}


def pytest_report_header(config):
    if SANDBOX_OK:
        return (f"egress-run e2e: inside the sandbox (resolver: "
                f"{os.environ.get('EGRESS_SANDBOX_RESOLVER', '?')})")
    return f"egress-run e2e: NO sandbox: {SANDBOX_REASON}; tests that need it skip"


# --------------------------------------------------------------------------------------------
# The product


def _bin_path():
    env = os.environ.get("EGRESS_RUN_BIN")
    return Path(env).resolve() if env else REPO / "target" / "release" / "egress-run"


@pytest.fixture(scope="session")
def egress_bin():
    p = _bin_path()
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"egress-run is not built at {p} (run `cargo build --release`, or set EGRESS_RUN_BIN)")
    return p


@pytest.fixture(scope="session")
def preload_lib(egress_bin):
    p = egress_bin.parent / "libegress_preload.so"
    if not p.is_file():
        pytest.fail(f"the guard library is missing: {p}")
    return p


# --------------------------------------------------------------------------------------------
# Servers (threads of this pytest process; unguarded)


class _QuietHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        # HTTPServer.server_bind calls getfqdn() (a PTR lookup); the test servers need no name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port


class HttpServer:
    """Answers every GET with 200 'ok from <addr>' and records (path, client) of each request."""

    def __init__(self, addr, port):
        outer = self
        self.requests = []
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                with outer.lock:
                    outer.requests.append((self.path, self.client_address[0]))
                body = f"ok from {addr}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        cls = type("S", (_QuietHTTPServer,), {"address_family": socket.AF_INET6 if ":" in addr else socket.AF_INET})
        self.server = cls((addr, port), Handler)
        self.addr, self.port = addr, self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self):
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/"

    def paths(self):
        with self.lock:
            return [p for p, _ in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class TcpListener:
    """Accepts connections and closes them at once; records each peer."""

    def __init__(self, addr, port=0):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(128)
        self.addr, self.port = addr, self.sock.getsockname()[1]
        self.accepted = []
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted.append(peer[0])
            conn.close()

    def count(self):
        with self.lock:
            return len(self.accepted)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class UdpSink:
    """Records every datagram (payload, source address) that reaches addr:port."""

    def __init__(self, addr, port=0):
        self.fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        self.sock = socket.socket(self.fam, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((addr, port))
        self.sock.setblocking(False)
        self.addr, self.port = addr, self.sock.getsockname()[1]
        self.received = []
        self.lock = threading.Lock()

    def _drain(self):
        while True:
            try:
                data, src = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            self.received.append((data, src[0]))

    def datagrams(self):
        with self.lock:
            self._drain()
            return list(self.received)

    def payloads(self):
        return [d for d, _ in self.datagrams()]

    def wait_for(self, payload):
        """Wait (hang guard only) until `payload` has arrived; True if it did."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        while time.monotonic() < deadline:
            if payload in self.payloads():
                return True
            time.sleep(0.01)
        return False

    def settle(self):
        """Send a canary from this (unguarded) process and wait for it: every datagram sent
        before now has been delivered too. Returns the payloads received so far."""
        canary = b"canary-" + uuid.uuid4().hex.encode()
        with socket.socket(self.fam, socket.SOCK_DGRAM) as s:
            s.sendto(canary, (self.addr, self.port))
        assert self.wait_for(canary), f"the UDP sink {self.addr}:{self.port} is not receiving"
        return [p for p in self.payloads() if not p.startswith(b"canary-")]

    def close(self):
        self.sock.close()


@dataclasses.dataclass
class SandboxServers:
    http: dict  # addr -> HttpServer (port 80)
    tcp: dict  # addr -> TcpListener (port 5432)
    udp: dict  # addr -> UdpSink (port 9999)


@pytest.fixture(scope="session")
def servers():
    """Servers on the sandbox's test addresses: HTTP :80, TCP :5432, UDP :9999."""
    require_sandbox()
    made = []
    try:
        h = {a: HttpServer(a, 80) for a in (ALLOWED_IP, OTHER_IP, V6_IP)}
        t = {a: TcpListener(a, 5432) for a in (ALLOWED_IP, OTHER_IP)}
        u = {a: UdpSink(a, 9999) for a in (ALLOWED_IP, OTHER_IP, V6_IP)}
        made = list(h.values()) + list(t.values()) + list(u.values())
        yield SandboxServers(h, t, u)
    finally:
        for s in made:
            s.close()


@dataclasses.dataclass
class LoopbackServers:
    http: HttpServer  # 127.0.0.1:ephemeral
    tcp1: TcpListener  # 127.0.0.1:P1
    tcp2: TcpListener  # 127.0.0.1:P2
    tcp_127_0_0_2: TcpListener  # 127.0.0.2:P3
    udp: UdpSink  # 127.0.0.1:ephemeral
    tcp6: "TcpListener | None"  # [::1]:P (None without IPv6)


@pytest.fixture(scope="session")
def loopback():
    """Loopback servers on ephemeral ports; usable inside or outside the sandbox."""
    made = []
    try:
        try:
            tcp6 = TcpListener("::1")
            made.append(tcp6)
        except OSError:
            tcp6 = None
        lb = LoopbackServers(HttpServer("127.0.0.1", 0), TcpListener("127.0.0.1"),
                             TcpListener("127.0.0.1"), TcpListener("127.0.0.2"),
                             UdpSink("127.0.0.1"), tcp6)
        made += [lb.http, lb.tcp1, lb.tcp2, lb.tcp_127_0_0_2, lb.udp]
        yield lb
    finally:
        for s in made:
            s.close()


# --------------------------------------------------------------------------------------------
# The test resolver's query log


class DnsLog:
    _query = re.compile(r"\bquery\[[^\]]*\] (\S+) from ")

    def __init__(self, path):
        self.path = Path(path)

    def mark(self):
        return self.path.stat().st_size

    def names_since(self, mark):
        """Names queried since `mark` (lower case, trailing dot removed), in order."""
        with open(self.path, "rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        return [m.group(1).lower().rstrip(".") for m in self._query.finditer(text)]


@pytest.fixture
def dns_log(sandbox):
    return DnsLog(sandbox["dns_log"])


# --------------------------------------------------------------------------------------------
# Reports


def _schema_validator():
    try:
        import jsonschema
    except ImportError:
        warnings.warn("python jsonschema is not installed: reports are not validated against the schema")
        return None
    if not SCHEMA_PATH.exists():
        warnings.warn(f"{SCHEMA_PATH} is missing: reports are not validated against the schema")
        return None
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    fmt = getattr(cls, "FORMAT_CHECKER", None) or jsonschema.FormatChecker()
    whole = cls(schema, format_checker=fmt)
    per_type = {}
    for t in LINE_TYPES:
        if t in schema.get("$defs", {}):
            s = {k: v for k, v in schema.items() if k != "oneOf"} | {"$ref": f"#/$defs/{t}"}
            per_type[t] = cls(s, format_checker=fmt)

    def validate(obj):
        errs = []
        v = per_type.get(obj.get("type")) if isinstance(obj, dict) else None
        for validator in ([v] if v else []) + [whole]:
            for e in validator.iter_errors(obj):
                errs.append(f"{'/'.join(map(str, e.absolute_path)) or '(line)'}: {e.message}")
            if errs:
                break
        return errs

    return validate


_VALIDATE = None
_VALIDATE_LOADED = False


def schema_errors(obj):
    global _VALIDATE, _VALIDATE_LOADED
    if not _VALIDATE_LOADED:
        _VALIDATE, _VALIDATE_LOADED = _schema_validator(), True
    return _VALIDATE(obj) if _VALIDATE else []


def parse_report(raw, returncode=None, mode=None):
    """Parse and check a report. Returns (lines, problems)."""
    problems = []
    lines = []
    if raw and not raw.endswith(b"\n"):
        problems.append("the report does not end with a newline (torn last line)")
    chunks = raw.split(b"\n")
    for n, text in enumerate(chunks, 1):
        if not text:
            if n != len(chunks):
                problems.append(f"line {n}: empty line")
            continue
        try:
            obj = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            problems.append(f"line {n}: not a JSON object ({e}): {text[:200]!r}")
            continue
        if not isinstance(obj, dict):
            problems.append(f"line {n}: not an object: {text[:200]!r}")
            continue
        for err in schema_errors(obj):
            problems.append(f"line {n} ({obj.get('type')}): schema: {err}")
        lines.append(obj)
    if not lines:
        problems.append("the report is empty")
        return lines, problems
    if lines[0].get("type") != "run":
        problems.append(f"the first line is {lines[0].get('type')!r}, not 'run'")
    if lines[-1].get("type") != "summary":
        problems.append(f"the last line is {lines[-1].get('type')!r}, not 'summary'")
    for i, obj in enumerate(lines):
        if obj.get("type") == "run" and i != 0:
            problems.append(f"a 'run' line at position {i + 1}")
        if obj.get("type") == "summary" and i != len(lines) - 1:
            problems.append(f"a 'summary' line at position {i + 1}")
    attempts = [o for o in lines if o.get("type") in ATTEMPT_TYPES]
    total = sum(o.get("count", 0) for o in attempts)
    denied = sum(o.get("count", 0) for o in attempts if o.get("decision") == "deny")
    summary = lines[-1] if lines[-1].get("type") == "summary" else None
    if summary is not None:
        if summary.get("attempts") != total:
            problems.append(f"summary.attempts is {summary.get('attempts')}, the lines' counts sum to {total}")
        if summary.get("denied") != denied:
            problems.append(f"summary.denied is {summary.get('denied')}, the deny lines' counts sum to {denied}")
        dests = summary.get("destinations") or []
        if sum(d.get("count", 0) for d in dests) != total:
            problems.append(f"summary.destinations counts sum to {sum(d.get('count', 0) for d in dests)}, "
                            f"not to the {total} attempts")
        if sum(d.get("count", 0) for d in dests if d.get("decision") == "deny") != denied:
            problems.append("summary.destinations deny counts do not sum to summary.denied")
        # destinations group the attempts of all processes by (host, addr, port, proto, decision)
        want = {}
        for o in attempts:
            k = (o.get("host"), o.get("addr"), o.get("port"), o.get("proto"), o.get("decision"))
            want[k] = want.get(k, 0) + o.get("count", 0)
        got = {}
        for d in dests:
            k = (d.get("host"), d.get("addr"), d.get("port"), d.get("proto"), d.get("decision"))
            if k in got:
                problems.append(f"summary.destinations lists {k} twice")
            got[k] = got.get(k, 0) + d.get("count", 0)
        if got != want:
            problems.append(f"summary.destinations {got} do not group the attempt lines {want}")
        # Died of signal N (egress-run re-raises COMMAND's death signal): exit_code says 128+N.
        if returncode is not None and returncode < 0:
            returncode = 128 - returncode
        if returncode is not None and summary.get("exit_code") != returncode:
            problems.append(f"summary.exit_code is {summary.get('exit_code')}, egress-run exited {returncode}")
        # pid 0: a program egress-run refused to start; it never was a process.
        pids = {o.get("pid") for o in lines if o.get("type") == "process" and o.get("pid") != 0}
        if summary.get("processes", 0) < len(pids):
            problems.append(f"summary.processes is {summary.get('processes')} but {len(pids)} pids have process lines")
    if mode is not None:
        if lines[0].get("mode") != mode:
            problems.append(f"run.mode is {lines[0].get('mode')!r}, expected {mode!r}")
        for o in attempts:
            if o.get("enforced") is not (mode == "block"):
                problems.append(f"enforced is {o.get('enforced')!r} in {mode} mode: {o}")
    for o in attempts:
        if o.get("decision") == "allow" and not o.get("rule"):
            problems.append(f"an allowed attempt names no rule: {o}")
    return lines, problems


@dataclasses.dataclass
class Result:
    args: list
    returncode: int
    stdout: str
    stderr: str
    report: list
    report_path: "Path | None"

    def lines(self, type_):
        return [o for o in self.report if o.get("type") == type_]

    @property
    def run_line(self):
        return self.report[0] if self.report else None

    @property
    def summary(self):
        s = self.lines("summary")
        return s[-1] if s else None

    def attempts(self, type_=None, **match):
        """Attempt lines of `type_` (connect/send/resolve; None = any) whose fields equal `match`."""
        types = ATTEMPT_TYPES if type_ is None else (type_,)
        return [o for o in self.report if o.get("type") in types
                and all(o.get(k) == v for k, v in match.items())]

    def count(self, type_=None, **match):
        return sum(o["count"] for o in self.attempts(type_, **match))

    def outputs(self):
        """JSON result lines printed by progs/netprobe.py (or any '{'-prefixed stdout line)."""
        return [json.loads(l) for l in self.stdout.splitlines() if l.startswith("{")]

    def describe(self):
        rep = "\n".join(json.dumps(o) for o in self.report)
        return (f"argv: {self.args}\nexit: {self.returncode}\nstdout:\n{self.stdout}\n"
                f"stderr:\n{self.stderr}\nreport:\n{rep}")


def guarded_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("LD_PRELOAD", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_PROXY"] = "*"
    if extra:
        env.update(extra)
    return env


def spawn(argv, **kw):
    """Start egress-run in a session of its own, so that a hang can be cleaned up whole."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(list(map(str, argv)), text=True, start_new_session=True, **kw)


def kill_tree(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def finish(p, timeout=RUN_TIMEOUT):
    """communicate(); on a hang (or an interrupt) kill egress-run's whole session and fail."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(p)
        out, err = p.communicate()
        pytest.fail(f"{p.args} did not finish within {timeout}s (hang guard); killed it\n"
                    f"stdout:\n{out}\nstderr:\n{err}")
    except BaseException:
        kill_tree(p)
        p.communicate()
        raise
    finally:
        # COMMAND's descendants may outlive egress-run: leave nothing behind
        kill_tree(p)


@pytest.fixture
def run_guarded(egress_bin, tmp_path):
    """run_guarded(args, cmd, report=True, check=True, env=None, dashdash=True, **subprocess_kw) -> Result.

    Runs `egress-run ARGS [--report R] -- CMD` (env: extra variables for the environment). With check (default), the report must exist
    (unless egress-run exited 125) and pass the schema and the invariants."""
    counter = [0]

    def run(args, cmd, report=True, check=True, env=None, timeout=RUN_TIMEOUT, dashdash=True, **kw):
        counter[0] += 1
        rpath = tmp_path / f"report-{counter[0]}.jsonl" if report else None
        argv = [str(egress_bin), *map(str, args)]
        if rpath:
            argv += ["--report", str(rpath)]
        argv += (["--"] if dashdash else []) + list(map(str, cmd))
        p = spawn(argv, env=guarded_env(env), **kw)
        stdout, stderr = finish(p, timeout)
        p = subprocess.CompletedProcess(argv, p.returncode, stdout, stderr)
        lines, problems = [], []
        if rpath is not None and rpath.exists():
            sargs = list(map(str, args))
            audit = "--audit" in sargs or any(a == "--mode" and b == "audit" for a, b in zip(sargs, sargs[1:]))
            mode = "audit" if audit else "block"
            lines, problems = parse_report(rpath.read_bytes(), p.returncode, mode)
        elif rpath is not None and p.returncode != 125:
            problems = [f"no report was written to {rpath}"]
        res = Result(argv, p.returncode, p.stdout, p.stderr, lines, rpath)
        if check and problems:
            pytest.fail("report problems:\n  " + "\n  ".join(problems) + "\n" + res.describe())
        return res

    return run


def load_report(path, returncode=None, mode=None):
    """Parse and check a report written by a run the test started itself."""
    lines, problems = parse_report(Path(path).read_bytes(), returncode, mode)
    if problems:
        pytest.fail("report problems:\n  " + "\n  ".join(problems) + "\n" + "\n".join(map(json.dumps, lines)))
    return lines


# --------------------------------------------------------------------------------------------
# Programs run under the guard


def py(code):
    """argv running Python `code` with the interpreter that runs the tests."""
    return [PYTHON, "-c", code]


def netprobe(*actions, exit_code=0):
    """argv running progs/netprobe.py; see that file for the actions."""
    return [PYTHON, str(PROGS / "netprobe.py"), *actions] + ([f"--exit={exit_code}"] if exit_code else [])


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("build")


@pytest.fixture(scope="session")
def compile_c(build_dir):
    """compile_c(source_path_or_text, name) -> path of an executable built with gcc."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    cache = {}

    def build(source, name):
        if name in cache:
            return cache[name]
        src = Path(source) if isinstance(source, Path) else build_dir / f"{name}.c"
        if not isinstance(source, Path):
            src.write_text(source)
        out = build_dir / name
        r = subprocess.run(["gcc", "-O1", "-Wall", "-o", str(out), str(src)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"gcc failed for {src}:\n{r.stderr}")
        cache[name] = out
        return out

    return build


@pytest.fixture(scope="session")
def build_pyext(build_dir):
    """build_pyext(source_path_or_text, modname) -> directory to put on PYTHONPATH."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").exists():
        pytest.skip(f"Python headers are not installed ({include}/Python.h)")
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    cache = {}

    def build(source, modname):
        if modname in cache:
            return cache[modname]
        d = build_dir / f"ext-{modname}"
        d.mkdir(exist_ok=True)
        src = Path(source) if isinstance(source, Path) else d / f"{modname}.c"
        if not isinstance(source, Path):
            src.write_text(source)
        out = d / f"{modname}{suffix}"
        r = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-Wall", f"-I{include}", "-o", str(out), str(src)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"gcc failed for {src}:\n{r.stderr}")
        cache[modname] = d
        return d

    return build


def no_network_prefix():
    """argv prefix that runs a command unguarded in a fresh network namespace with only lo (up):
    a host without a network, to compare `--deny-as offline` with. Inside the sandbox this
    process is root in its user namespace; elsewhere `unshare -rn` may still work."""
    if not shutil.which("unshare"):
        pytest.skip("unshare(1) is not installed")
    why = ""
    for flags in (["-n"], ["-rn"]):
        r = subprocess.run(["unshare", *flags, "true"], capture_output=True, text=True)
        if r.returncode == 0:
            return ["unshare", *flags, "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
        why = r.stderr.strip()[:200]
    pytest.skip(f"cannot make a network namespace here: {why}")


def token():
    """A payload/path no other test uses."""
    return "t-" + uuid.uuid4().hex


# ---- helpers shared by the tests of guarded and unguarded programs


def unguarded_lines(res):
    """The report's `process` lines of programs that ran (or were refused) unguarded."""
    return [p for p in res.lines("process") if p["guarded"] is False]


def layered_lines(res):
    """The report's `process` lines of programs run under the kernel layer."""
    return [p for p in res.lines("process") if p.get("layer") == "kernel"]


def assert_guarded_connect(res, port, exe=None):
    """The run exited 0, nothing ran unguarded, and the program's allowed loopback connect to
    `port` (printed as "connect 0" by progs/lconnect.c) is in the report."""
    assert res.returncode == 0, res.describe()
    assert "connect 0" in res.stdout, res.describe()
    assert unguarded_lines(res) == [], res.describe()
    lines = res.attempts("connect", addr="127.0.0.1", port=port, decision="allow")
    assert lines, "the connect was not recorded: the program ran unguarded\n" + res.describe()
    if exe is not None:
        assert any(l["exe"] == str(exe) for l in lines), res.describe()


# Python code that runs its arguments as a child and prints the child's output and status
# (RUN_CHILD_SCRUBBED: with an empty environment).
RUN_CHILD = ("import subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "print(r.stdout.strip(), 'status', r.returncode)\n"
             "sys.stderr.write(r.stderr)\n")

RUN_CHILD_SCRUBBED = RUN_CHILD.replace("text=True)", "text=True, env={})")
