"""egress-run's Python side: per-thread egress scopes and a pytest plugin.

``egress_guard`` narrows (or, within what the run declared grantable, widens) what the
calling thread may reach, for Python code and native code alike, because the guard library
egress-run preloads decides every connect, send and lookup. See docs/scopes.md.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List

from . import _abi

__all__ = ["EgressViolation", "GuardReport", "egress_guard", "guarded", "describe"]
__version__ = "0.1.0"

# In a guarded process, report lines of Python code name it (`py_caller`).
from . import _pycaller  # noqa: E402

_pycaller.install()


def guarded() -> bool:
    """True when this process runs under egress-run (its guard library is loaded)."""
    return _abi.guarded()


def describe(attempt: Dict[str, Any]) -> str:
    """One attempt as `kind host/addr:port`."""
    where = attempt.get("host") or attempt.get("addr") or "?"
    if attempt.get("addr") and attempt.get("host"):
        where = f"{attempt['host']} ({attempt['addr']})"
    port = attempt.get("port")
    if port is not None:
        where = f"{where}:{port}"
    proto = attempt.get("proto")
    kind = attempt.get("type", "connect")
    return f"{kind} {where}" + (f" ({proto})" if proto else "")


class EgressViolation(PermissionError):
    """Attempts a blocking scope denied, also the ones the code caught."""

    def __init__(self, attempts: List[Dict[str, Any]]) -> None:
        self.attempts = attempts
        names = ", ".join(describe(a) for a in attempts)
        super().__init__(f"egress denied: {names}")


@dataclass
class GuardReport:
    """What the thread attempted inside an `egress_guard`: dicts shaped like report lines."""

    attempts: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def denied(self) -> List[Dict[str, Any]]:
        return [a for a in self.attempts if a.get("decision") == "deny"]


def _shape(raw: List[Dict[str, Any]], block: bool) -> List[Dict[str, Any]]:
    out = []
    for a in raw:
        if a.get("type") == "lost":
            continue
        a = dict(a)
        scope_decision = a.pop("scope_decision", a.get("decision"))
        if not block:
            # A recording scope reports what its rules would have decided.
            a["decision"] = scope_decision
        out.append(a)
    return out


@contextmanager
def egress_guard(
    allow_hosts: Iterable[str] = (), *, block: bool = True
) -> Iterator[GuardReport]:
    """Limits the calling thread to `allow_hosts` (egress-run rules) while inside.

    The rules are bounded by the run's rules plus its grantable set; a rule outside that
    bound raises ValueError naming it. With ``block=True`` a denied attempt fails at once
    and leaving raises EgressViolation for every denied attempt, even one the code caught.
    With ``block=False`` nothing beyond what the run refuses is refused; the report records
    what the rules would deny. Other threads and child processes are not affected.
    """
    if isinstance(allow_hosts, str):
        allow_hosts = (allow_hosts,)
    rules = [str(r) for r in allow_hosts]
    depth = _abi.enter(rules, _abi.FLAG_BLOCK if block else 0)
    report = GuardReport()
    thread = threading.get_ident()
    failed = True
    try:
        yield report
        failed = False
    finally:
        if threading.get_ident() == thread:
            report.attempts = _shape(_abi.scope_attempts(depth), block)
            _abi.leave(depth)
    if block and not failed and not _abi.audit_mode():
        denied = report.denied
        if denied:
            raise EgressViolation(denied)
