"""The pytest plugin (entry point ``pytest11``): per-test egress scopes under egress-run.

``pytest --egress`` re-runs the session under egress-run once. In a process egress-run guards
(however it was started) every test runs in a scope of its own on the test's thread: the run's
rules, plus the rules of its ``@pytest.mark.egress(allow=[...])`` marker, plus loopback when it
asks for the ``egress_test_loopback`` fixture. A test during which an attempt was denied fails,
naming the destinations, unless marked ``expect_denied=True``. See docs/scopes.md.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Generator, List, Optional

import pytest

from . import _abi, _shape, describe

_DEPTH = pytest.StashKey[int]()
_SEEN = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("egress", "egress-run: deny network egress the tests do not declare")
    group.addoption(
        "--egress",
        action="store_true",
        default=False,
        help="run the session under egress-run (re-runs pytest once under the guard)",
    )
    group.addoption(
        "--egress-allow",
        action="append",
        default=[],
        metavar="RULE",
        help="an egress-run rule the whole session may reach (repeatable)",
    )
    group.addoption(
        "--egress-audit",
        action="store_true",
        default=False,
        help="record egress without refusing it",
    )
    group.addoption(
        "--egress-report", default=None, metavar="PATH", help="write egress-run's report to PATH"
    )
    group.addoption(
        "--egress-grantable",
        action="append",
        default=None,
        metavar="RULE",
        help="a rule tests may be granted (fixtures, markers, egress_guard); default: loopback",
    )


def _launcher() -> str:
    beside = Path(sys.executable).parent / "egress-run"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("egress-run")
    if found is None:
        raise pytest.UsageError(
            "--egress: egress-run is not on PATH; install it (pip install egress-run, or "
            "make install) or run: egress-run -- python -m pytest ..."
        )
    return found


def _rerun_command(config: pytest.Config) -> List[str]:
    opt = config.known_args_namespace
    cmd = [_launcher()]
    for rule in opt.egress_allow:
        cmd += ["--allow", rule]
    for rule in opt.egress_grantable if opt.egress_grantable is not None else ["loopback"]:
        cmd += ["--grantable", rule]
    if opt.egress_audit:
        cmd.append("--audit")
    if opt.egress_report:
        cmd += ["--report", opt.egress_report]
    orig = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return [*cmd, "--", sys.executable, *orig[1:]]


# A wrapper that runs first: before the capture plugin redirects descriptors 1 and 2 and
# before any conftest is imported.
@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: Any, args: List[str]
) -> Generator[None, Any, None]:
    if early_config.known_args_namespace.egress and not _abi.guarded():
        _rerun(early_config)
    yield


def _rerun(early_config: pytest.Config) -> None:
    if tuple(early_config.invocation_params.args) != tuple(sys.argv[1:]):
        raise pytest.UsageError(
            "--egress cannot re-run a session started by pytest.main() or an IDE runner; "
            "run it under the guard instead: egress-run --grantable loopback -- python -m pytest ..."
        )
    cmd = _rerun_command(early_config)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "egress(allow=[RULE, ...], expect_denied=False): rules this test may reach; "
        "expect_denied: denied attempts do not fail it",
    )


def _active() -> bool:
    return _abi.guarded()


def _marker(item: pytest.Item) -> Dict[str, Any]:
    allow: List[str] = []
    expect_denied = False
    for m in item.iter_markers("egress"):
        rules = m.kwargs.get("allow", m.args[0] if m.args else ())
        if isinstance(rules, str):
            rules = [rules]
        allow.extend(str(r) for r in rules)
        expect_denied = expect_denied or bool(m.kwargs.get("expect_denied", False))
    return {"allow": allow, "expect_denied": expect_denied}


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, None]:
    if _active():
        _abi.set_test(item.nodeid)
        item.stash[_SEEN] = 0
        rules = list(_marker(item)["allow"])
        if "egress_test_loopback" in getattr(item, "fixturenames", ()):
            rules.append("loopback")
        try:
            depth = _abi.enter(rules, _abi.FLAG_BLOCK | _abi.FLAG_WITH_RUN_RULES)
        except ValueError as e:
            _abi.set_test(None)
            raise pytest.UsageError(f"{item.nodeid}: {e}") from None
        item.stash[_DEPTH] = depth
    yield


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Optional[pytest.Item]) -> Generator[None, Any, None]:
    yield
    depth = item.stash.get(_DEPTH, None)
    if depth is not None and _active():
        del item.stash[_DEPTH]
        _abi.leave(depth)


def _new_denials(item: pytest.Item) -> List[Dict[str, Any]]:
    attempts = _shape(_abi.test_attempts(), True)
    denied = [a for a in attempts if a.get("decision") == "deny"]
    seen = item.stash.get(_SEEN, 0)
    item.stash[_SEEN] = len(denied)
    return denied[seen:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    if not _active() or _DEPTH not in item.stash and call.when != "teardown":
        return
    report = outcome.get_result()
    denied = _new_denials(item)
    if call.when == "teardown":
        _abi.set_test(None)
    if not denied or _marker(item)["expect_denied"] or _abi.audit_mode():
        return
    lines = [f"  {describe(a)} (x{a.get('count', 1)})" for a in denied]
    text = "egress denied during the test:\n" + "\n".join(lines)
    if report.outcome != "failed":
        report.outcome = "failed"
        report.longrepr = text
    else:
        report.sections.append(("egress-run", text))


@pytest.fixture
def egress_test_loopback() -> None:
    """The test's thread may reach loopback (a capability of this test's thread only: other
    threads, later tests and child processes do not get it)."""
    return None


@pytest.fixture
def egress_attempts() -> Callable[[], List[Dict[str, Any]]]:
    """A function returning the attempts this test has made so far in this process."""

    def read() -> List[Dict[str, Any]]:
        return _shape(_abi.test_attempts(), True)

    if not _active():
        raise RuntimeError(_abi.NOT_GUARDED)
    return read
