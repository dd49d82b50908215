"""The pytest plugin: `pytest --egress` re-runs the session under egress-run once; each test
runs in a scope of its own (run rules + marker rules + loopback with `egress_test_loopback`);
a test during which an attempt was denied fails unless marked `expect_denied=True`; report
lines name their test. Also the wheel: installed into a fresh venv it gives `egress-run`, the
package and the plugin (docs/scopes.md). Loopback only."""
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import PYTHON, REPO, load_report

SUITE = textwrap.dedent('''
    import ctypes, socket, subprocess, sys, threading
    import pytest
    from egress_run import egress_guard, EgressViolation

    @pytest.fixture(scope="module")
    def server():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]
        s.close()

    def reach(port):
        c = socket.socket()
        try:
            c.connect(("127.0.0.1", port))
            return True
        except PermissionError:
            return False
        finally:
            c.close()

    def reach_native(port):
        libc = ctypes.CDLL(None)
        fd = libc.socket(2, 1, 0)
        sa = (ctypes.c_ubyte * 16)(2, 0, port >> 8, port & 255, 127, 0, 0, 1)
        ok = libc.connect(fd, sa, 16) == 0
        libc.close(fd)
        return ok

    def in_thread(f, *a):
        out = []
        t = threading.Thread(target=lambda: out.append(f(*a)))
        t.start()
        t.join()
        return out[0]

    @pytest.mark.egress(expect_denied=True)
    def test_fixture_is_thread_local(server, egress_test_loopback):
        assert reach(server) and reach_native(server)
        assert not in_thread(reach, server)
        assert not in_thread(reach_native, server)

    @pytest.mark.egress(expect_denied=True)
    def test_next_test_cannot(server):
        assert not reach(server) and not reach_native(server)

    def test_swallowed_denial_fails(server):
        try:
            socket.create_connection(("127.0.0.1", server))
        except OSError:
            pass

    @pytest.fixture
    def connects_in_setup(server):
        try:
            socket.create_connection(("127.0.0.1", server))
        except OSError:
            pass
        yield

    def test_fixture_setup_counts(connects_in_setup):
        pass

    @pytest.mark.egress(allow=["127.0.0.1"])
    def test_marker_allows(server):
        assert reach(server)

    def test_attempts(server, egress_test_loopback, egress_attempts):
        assert egress_attempts() == []
        assert reach(server)
        [a] = egress_attempts()
        assert (a["type"], a["addr"], a["port"], a["decision"]) == ("connect", "127.0.0.1", server, "allow")

    @pytest.mark.egress(expect_denied=True)
    def test_child_lines_name_the_test(server):
        code = f"import socket; socket.socket().connect_ex(('127.0.0.1', {server}))"
        subprocess.run(["env", "-i", "sh", "-c", f"{sys.executable} -c \\"{code}\\""])

    @pytest.mark.egress(expect_denied=True)
    def test_guard_inside_a_test(server, egress_test_loopback):
        with pytest.raises(EgressViolation):
            with egress_guard([]):
                assert not reach(server)
        with egress_guard([f"127.0.0.1:{server}"]):
            assert reach(server)
''')

EXPECT = {
    "test_fixture_is_thread_local": "PASSED",
    "test_next_test_cannot": "PASSED",
    "test_swallowed_denial_fails": "FAILED",
    "test_fixture_setup_counts": "ERROR",
    "test_marker_allows": "PASSED",
    "test_attempts": "PASSED",
    "test_child_lines_name_the_test": "PASSED",
    "test_guard_inside_a_test": "PASSED",
}


def write_suite(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_example.py").write_text(SUITE)
    return suite


def outcomes(stdout):
    got = {}
    for m in re.finditer(r"^(PASSED|FAILED|ERROR) \S*::(\w+)", stdout, re.M):
        got.setdefault(m.group(2), m.group(1))
    return got


def env_with(path_first, pythonpath=None):
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("LD_PRELOAD", None)
    env.pop("PYTEST_ADDOPTS", None)
    env["PATH"] = f"{path_first}:{env.get('PATH', '/usr/bin:/bin')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # Keep the caller's PYTHONPATH after ours (e.g. where pytest-xdist was installed).
    paths = [p for p in (pythonpath, os.environ.get("PYTHONPATH")) if p]
    if paths:
        env["PYTHONPATH"] = ":".join(paths)
    else:
        env.pop("PYTHONPATH", None)
    return env


def check_session(p, report_path, suite):
    assert outcomes(p.stdout) == EXPECT, p.stdout + p.stderr
    assert re.search(r"egress denied during the test:\n\s+connect 127\.0\.0\.1:\d+", p.stdout), p.stdout
    lines = load_report(report_path)
    runs = [l for l in lines if l["type"] == "run"]
    assert len(runs) == 1 and "nested_in" not in runs[0], "re-ran exactly once"
    assert "--egress" in runs[0]["argv"]
    procs = [l for l in lines if l["type"] == "process"]
    assert not any(l["exe"].endswith("egress-run") for l in procs), "the guarded session did not re-run"
    by_test = {}
    for l in lines:
        if l["type"] == "connect":
            by_test.setdefault(l.get("test", ""), set()).add((l["decision"], l["pid"] == procs[0]["pid"]))
    node = "test_example.py::test_child_lines_name_the_test"
    assert ("deny", False) in by_test.get(node, set()), by_test
    assert ("allow", True) in by_test["test_example.py::test_attempts"], by_test
    assert by_test["test_example.py::test_swallowed_denial_fails"] == {("deny", True)}


def test_pytest_egress_reruns_the_session_once_under_the_guard(tmp_path, egress_bin):
    suite = write_suite(tmp_path)
    report = tmp_path / "report.jsonl"
    p = subprocess.run(
        [PYTHON, "-m", "pytest", "-p", "egress_run.plugin", "-p", "no:cacheprovider", "-rA",
         "--egress", "--egress-report", str(report), "test_example.py"],
        cwd=suite, capture_output=True, text=True, timeout=300,
        env=env_with(egress_bin.parent, str(REPO / "python")))
    assert p.returncode == 1, p.stdout + p.stderr
    check_session(p, report, suite)


def test_pytest_main_with_egress_is_refused_clearly(tmp_path, egress_bin):
    suite = write_suite(tmp_path)
    code = "import pytest, sys; sys.exit(pytest.main(['-p', 'egress_run.plugin', '--egress', 'test_example.py']))"
    p = subprocess.run([PYTHON, "-c", code], cwd=suite, capture_output=True, text=True, timeout=300,
                       env=env_with(egress_bin.parent, str(REPO / "python")))
    assert p.returncode == 4, p.stdout + p.stderr
    assert "pytest.main()" in p.stderr and "egress-run" in p.stderr, p.stderr


def test_grants_outside_the_grantable_set_are_refused(tmp_path, egress_bin):
    suite = write_suite(tmp_path)
    p = subprocess.run(
        [PYTHON, "-m", "pytest", "-p", "egress_run.plugin", "-p", "no:cacheprovider", "-rA",
         "--egress", "--egress-grantable", "127.0.0.2", "test_example.py::test_attempts"],
        cwd=suite, capture_output=True, text=True, timeout=300,
        env=env_with(egress_bin.parent, str(REPO / "python")))
    assert p.returncode != 0
    assert "'loopback' is outside" in p.stdout + p.stderr, p.stdout + p.stderr


def test_the_wheel_installs_the_launcher_the_library_and_the_plugin(tmp_path, egress_bin):
    if egress_bin != REPO / "target" / "release" / "egress-run":
        pytest.skip("the wheel is built from target/release")
    built = subprocess.run([PYTHON, str(REPO / "scripts" / "build_wheel.py")],
                           capture_output=True, text=True, cwd=REPO)
    assert built.returncode == 0, built.stderr
    wheel = REPO / built.stdout.strip()
    assert re.fullmatch(r"egress_run-[0-9.]+-py3-none-(many)?linux_\w+\.whl", wheel.name)
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index",
                          str(wheel)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    assert (venv / "bin" / "egress-run").is_file()
    # The launcher finds its library inside the installed wheel.
    p = subprocess.run([venv / "bin" / "egress-run", "--", venv / "bin" / "python", "-c",
                        "import egress_run; print(egress_run.guarded())"],
                       capture_output=True, text=True, env=env_with("/nonexistent"))
    assert p.returncode == 0 and p.stdout.strip() == "True", p.stderr
    # The plugin comes through its entry point: no -p, no PYTHONPATH; egress-run from the venv.
    suite = write_suite(tmp_path)
    report = tmp_path / "report.jsonl"
    p = subprocess.run([venv / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider", "-rA",
                        "--egress", "--egress-report", str(report), "test_example.py"],
                       cwd=suite, capture_output=True, text=True, timeout=300,
                       env=env_with(tmp_path / "nothing-here"))
    assert p.returncode == 1, p.stdout + p.stderr
    check_session(p, report, suite)


def test_xdist_workers_are_guarded_and_do_not_re_run(tmp_path, egress_bin):
    p = subprocess.run([PYTHON, "-c", "import xdist"], capture_output=True,
                       env=env_with(egress_bin.parent))
    if p.returncode != 0:
        pytest.skip("pytest-xdist is not installed")
    suite = write_suite(tmp_path)
    report = tmp_path / "report.jsonl"
    p = subprocess.run(
        [PYTHON, "-m", "pytest", "-p", "egress_run.plugin", "-p", "no:cacheprovider", "-rA",
         "-n", "2", "--egress", "--egress-report", str(report), "test_example.py"],
        cwd=suite, capture_output=True, text=True, timeout=300,
        env=env_with(egress_bin.parent, str(REPO / "python")))
    assert p.returncode == 1, p.stdout + p.stderr
    assert outcomes(p.stdout) == EXPECT, p.stdout + p.stderr
    lines = load_report(report)
    assert len([l for l in lines if l["type"] == "run"]) == 1
    procs = [l for l in lines if l["type"] == "process"]
    assert not any(l["exe"].endswith("egress-run") for l in procs), "no worker re-ran the session"
    main = procs[0]["pid"]
    tested = {(l["pid"], l.get("test")) for l in lines if l["type"] == "connect"}
    workers = {pid for pid, _ in tested if pid != main}
    assert workers and all(t for pid, t in tested if pid in workers), tested
    child = [l for l in lines if l["type"] == "connect"
             and l.get("test") == "test_example.py::test_child_lines_name_the_test"]
    assert any(l["decision"] == "deny" for l in child), lines
