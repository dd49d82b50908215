"""Other clients: curl, a C program, a Python C extension (connects from C), node."""
import shutil

import pytest

from conftest import ALLOWED_IP, OTHER_IP, PROGS, PYTHON, netprobe, token

EACCES = 13
MODES = {"block": [], "audit": ["--audit"]}


def curl(url):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    return ["curl", "-sS", "--noproxy", "*", "--max-time", "60", url]


# ---- curl --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_curl_allowed(mode, sandbox, servers, run_guarded):
    tok = token()
    res = run_guarded(["--allow", "allowed.test:80", *MODES[mode]], curl(f"http://allowed.test/{tok}"))
    assert res.returncode == 0, res.describe()
    assert res.stdout == f"ok from {ALLOWED_IP}"
    assert [r["decision"] for r in res.attempts("resolve", host="allowed.test")][:1] == ["allow"], res.describe()
    conn = res.attempts("connect", addr=ALLOWED_IP, port=80)
    assert len(conn) == 1 and conn[0]["decision"] == "allow" and conn[0]["host"] == "allowed.test", res.describe()
    assert conn[0]["rule"] == "allowed.test:80"


@pytest.mark.parametrize("mode", MODES)
def test_curl_denied_name(mode, sandbox, servers, dns_log, run_guarded):
    tok = token()
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test:80", *MODES[mode]], curl(f"http://other.test/{tok}"))
    resolves = res.attempts("resolve", host="other.test")
    assert resolves and {r["decision"] for r in resolves} == {"deny"}, res.describe()
    if mode == "block":
        assert res.returncode == 6, res.describe()  # curl: could not resolve host
        assert "other.test" not in dns_log.names_since(mark)
        assert f"/{tok}" not in servers.http[OTHER_IP].paths()
    else:
        assert res.returncode == 0, res.describe()
        assert res.stdout == f"ok from {OTHER_IP}"
        assert "other.test" in dns_log.names_since(mark)


@pytest.mark.parametrize("mode", MODES)
def test_curl_denied_connect(mode, sandbox, servers, run_guarded):
    tok = token()
    res = run_guarded(["--allow", "allowed.test:80", *MODES[mode]], curl(f"http://{OTHER_IP}/{tok}"))
    conn = res.attempts("connect", addr=OTHER_IP, port=80)
    assert len(conn) == 1 and conn[0]["decision"] == "deny" and conn[0]["proto"] == "tcp", res.describe()
    if mode == "block":
        assert res.returncode == 7, res.describe()  # curl: could not connect
        assert f"/{tok}" not in servers.http[OTHER_IP].paths()
    else:
        assert res.returncode == 0, res.describe()
        assert res.stdout == f"ok from {OTHER_IP}"


# ---- a C program calling connect() and sendto() -------------------------------------------------


@pytest.fixture(scope="session")
def cnet(compile_c):
    return compile_c(PROGS / "cnet.c", "cnet")


@pytest.mark.parametrize("mode", MODES)
def test_c_program_connect_and_sendto(mode, sandbox, servers, cnet, run_guarded):
    tok = token()
    rules = ["--allow", f"{ALLOWED_IP}:5432", "--allow", f"{ALLOWED_IP}:9999"]
    res = run_guarded([*rules, *MODES[mode]], [cnet, "connect", ALLOWED_IP, "5432"])
    assert res.returncode == 0 and res.stdout == f"connect {ALLOWED_IP} 5432: ok\n", res.describe()
    assert [c["decision"] for c in res.attempts("connect", addr=ALLOWED_IP, port=5432)] == ["allow"]

    res = run_guarded([*rules, *MODES[mode]], [cnet, "sendto", ALLOWED_IP, "9999", tok + "-ok"])
    assert res.returncode == 0 and res.stdout == f"sendto {ALLOWED_IP} 9999: ok\n", res.describe()
    assert servers.udp[ALLOWED_IP].wait_for((tok + "-ok").encode())
    assert [s["decision"] for s in res.attempts("send", addr=ALLOWED_IP, port=9999)] == ["allow"]

    res = run_guarded([*rules, *MODES[mode]], [cnet, "connect", OTHER_IP, "5432"])
    assert [c["decision"] for c in res.attempts("connect", addr=OTHER_IP, port=5432)] == ["deny"], res.describe()
    if mode == "block":
        assert res.stdout == f"connect {OTHER_IP} 5432: errno=13 (Permission denied)\n", res.describe()
        assert res.returncode == 3
    else:
        assert res.stdout == f"connect {OTHER_IP} 5432: ok\n", res.describe()
        assert res.returncode == 0

    res = run_guarded([*rules, *MODES[mode]], [cnet, "sendto", OTHER_IP, "9999", tok + "-denied"])
    assert [s["decision"] for s in res.attempts("send", addr=OTHER_IP, port=9999)] == ["deny"], res.describe()
    arrived = servers.udp[OTHER_IP].settle()
    if mode == "block":
        assert res.stdout == f"sendto {OTHER_IP} 9999: errno=13 (Permission denied)\n", res.describe()
        assert (tok + "-denied").encode() not in arrived
        assert res.returncode == 3
    else:
        assert res.stdout == f"sendto {OTHER_IP} 9999: ok\n", res.describe()
        assert (tok + "-denied").encode() in arrived
        assert res.returncode == 0


# ---- a Python C extension that connects from C ---------------------------------------------------


@pytest.fixture(scope="session")
def cconnect_path(build_pyext):
    return build_pyext(PROGS / "cconnect.c", "cconnect")


def cconnect_cmd(addr, port):
    return [PYTHON, "-c", f"import cconnect; print(cconnect.connect({addr!r}, {port}))"]


def test_python_c_extension_denied_in_block_mode(sandbox, servers, cconnect_path, run_guarded):
    """A guard living in Python (sys.addaudithook, socket monkeypatching) misses this one."""
    env = {"PYTHONPATH": str(cconnect_path)}
    res = run_guarded(["--allow", f"{ALLOWED_IP}:5432"], cconnect_cmd(OTHER_IP, 5432), env=env)
    assert res.stdout.strip() == str(EACCES), res.describe()
    assert res.returncode == 3, res.describe()
    conn = res.attempts("connect", addr=OTHER_IP, port=5432)
    assert len(conn) == 1 and conn[0]["decision"] == "deny" and conn[0]["enforced"] is True, res.describe()

    res = run_guarded(["--allow", f"{ALLOWED_IP}:5432"], cconnect_cmd(ALLOWED_IP, 5432), env=env)
    assert res.stdout.strip() == "0" and res.returncode == 0, res.describe()
    assert [c["decision"] for c in res.attempts("connect", addr=ALLOWED_IP, port=5432)] == ["allow"]


def test_python_c_extension_recorded_in_audit_mode(sandbox, servers, cconnect_path, run_guarded):
    env = {"PYTHONPATH": str(cconnect_path)}
    res = run_guarded(["--audit"], cconnect_cmd(OTHER_IP, 5432), env=env)
    assert res.stdout.strip() == "0", res.describe()  # the connect went through
    assert res.returncode == 0, res.describe()
    conn = res.attempts("connect", addr=OTHER_IP, port=5432)
    assert len(conn) == 1 and conn[0]["decision"] == "deny" and conn[0]["enforced"] is False, res.describe()
    assert conn[0]["proto"] == "tcp"


# ---- node ----------------------------------------------------------------------------------------


def node(host, port):
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    return ["node", str(PROGS / "nodeconnect.js"), host, str(port)]


@pytest.mark.parametrize("mode", MODES)
def test_node_net_connect_allowed(mode, sandbox, servers, run_guarded):
    res = run_guarded(["--allow", f"{ALLOWED_IP}:5432", *MODES[mode]], node(ALLOWED_IP, 5432))
    assert res.stdout == "connected\n" and res.returncode == 0, res.describe()
    conn = res.attempts("connect", addr=ALLOWED_IP, port=5432)
    assert conn and {c["decision"] for c in conn} == {"allow"}, res.describe()


@pytest.mark.parametrize("mode", MODES)
def test_node_net_connect_denied(mode, sandbox, servers, run_guarded):
    res = run_guarded(["--allow", f"{OTHER_IP}:5432", *MODES[mode]], node(ALLOWED_IP, 5432))
    conn = res.attempts("connect", addr=ALLOWED_IP, port=5432)
    assert conn and {c["decision"] for c in conn} == {"deny"}, res.describe()
    if mode == "block":
        assert res.stdout == "error EACCES\n", res.describe()
        assert res.returncode == 3, res.describe()
    else:
        assert res.stdout == "connected\n", res.describe()
        assert res.returncode == 0, res.describe()
