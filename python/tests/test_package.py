"""Unit tests of the egress_run package outside a guarded process (the end-to-end tests in
tests/e2e/test_scopes.py and test_pytest_plugin.py run it under the guard)."""
import subprocess
import sys
from pathlib import Path

import pytest

import egress_run
from egress_run import EgressViolation, GuardReport, _abi, _shape, describe, egress_guard

HERE = Path(__file__).resolve().parent


def test_outside_the_guard_egress_guard_raises_runtime_error_saying_how():
    assert not egress_run.guarded()
    with pytest.raises(RuntimeError, match=r"not guarded by egress-run.*egress-run"):
        with egress_guard(["loopback"]):
            pass


def test_egress_violation_is_a_permission_error_naming_each_attempt():
    attempts = [
        {"type": "connect", "addr": "127.0.0.1", "port": 5432, "proto": "tcp", "host": None},
        {"type": "resolve", "host": "other.test"},
        {"type": "connect", "addr": "203.0.113.10", "port": 443, "host": "allowed.test"},
    ]
    v = EgressViolation(attempts)
    assert isinstance(v, PermissionError)
    assert v.attempts == attempts
    text = str(v)
    assert "connect 127.0.0.1:5432 (tcp)" in text
    assert "resolve other.test" in text
    assert "allowed.test (203.0.113.10):443" in text


def test_describe_handles_missing_fields():
    assert describe({}) == "connect ?"
    assert describe({"type": "send", "addr": "::1", "port": 53, "proto": "udp"}) == "send ::1:53 (udp)"


def test_shape_reports_a_recording_scope_by_its_own_rules():
    raw = [
        {"type": "connect", "decision": "allow", "scope_decision": "deny"},
        {"type": "lost", "count": 3},
    ]
    assert _shape(raw, block=False) == [{"type": "connect", "decision": "deny"}]
    assert _shape(raw, block=True) == [{"type": "connect", "decision": "allow"}]
    assert GuardReport(_shape(raw, False)).denied == [{"type": "connect", "decision": "deny"}]


def test_a_rule_with_a_newline_is_refused_before_the_library(monkeypatch):
    monkeypatch.setattr(_abi, "_require", lambda: object())
    with pytest.raises(ValueError, match="one line"):
        _abi.enter(["loopback\n203.0.113.7"], 1)


def test_the_package_is_typed_and_has_no_runtime_dependencies():
    pkg = HERE.parent / "egress_run"
    assert (pkg / "py.typed").is_file()
    text = (HERE.parent / "pyproject.toml").read_text()
    assert "dependencies = []" in text
    assert 'egress_run = "egress_run.plugin"' in text


def test_the_plugin_without_the_guard_is_inert_but_egress_attempts_says_why(tmp_path):
    (tmp_path / "test_a.py").write_text(
        "def test_loopback(egress_test_loopback):\n    pass\n"
        "def test_attempts(egress_attempts):\n    pass\n"
    )
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "egress_run.plugin", "-p", "no:cacheprovider",
         "-q", "-rA", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
        env={"PYTHONPATH": str(HERE.parent), "PATH": "/usr/bin:/bin"},
    )
    assert "PASSED" in p.stdout and "test_loopback" in p.stdout, p.stdout
    assert "not guarded by egress-run" in p.stdout, p.stdout
