"""The project's own use case: a pytest suite run under egress-run with loopback allowed."""
import subprocess

from conftest import OTHER_IP, PYTHON, REPO, guarded_env, load_report


def run_suite(egress_bin, tmp_path, *mode):
    report = tmp_path / "pysuite.jsonl"
    p = subprocess.run([egress_bin, "--allow", "loopback", *mode, "--report", report, "--",
                        PYTHON, "-m", "pytest", "-q", "tests/pysuite", "-p", "no:cacheprovider"],
                       cwd=REPO, capture_output=True, text=True, env=guarded_env(), timeout=300)
    lines = load_report(report, p.returncode, "audit" if mode else "block")
    return p, lines


def test_pytest_suite_reaching_beyond_loopback_fails(sandbox, servers, dns_log, egress_bin, tmp_path):
    mark = dns_log.mark()
    p, lines = run_suite(egress_bin, tmp_path)
    detail = f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert p.returncode != 0, detail
    assert p.returncode == 1, "pytest's own status (tests failed) passes through\n" + detail
    assert "1 failed, 4 passed" in p.stdout, detail
    denied = [o for o in lines if o["type"] == "resolve" and o["host"] == "other.test"]
    assert denied and all(o["decision"] == "deny" and o["enforced"] is True for o in denied), detail
    summary = lines[-1]
    assert any(d["host"] == "other.test" and d["decision"] == "deny" for d in summary["destinations"])
    # the loopback tests' traffic was allowed, and recorded
    loop = [o for o in lines if o["type"] in ("connect", "send") and o["addr"] == "127.0.0.1"]
    assert loop and all(o["decision"] == "allow" and o["rule"] == "loopback" for o in loop)
    assert "other.test" not in dns_log.names_since(mark)


def test_pytest_suite_in_audit_mode_passes_and_records(sandbox, servers, egress_bin, tmp_path):
    p, lines = run_suite(egress_bin, tmp_path, "--audit")
    detail = f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert p.returncode == 0, detail
    assert "5 passed" in p.stdout, detail
    resolves = [o for o in lines if o["type"] == "resolve" and o["host"] == "other.test"]
    assert resolves and all(o["decision"] == "deny" and o["enforced"] is False for o in resolves)
    conns = [o for o in lines if o["type"] == "connect" and o["addr"] == OTHER_IP and o["port"] == 80]
    assert conns and all(o["decision"] == "deny" for o in conns)
