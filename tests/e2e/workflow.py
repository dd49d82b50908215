"""Helpers for the CI-workflow tests (report, suggest, --baseline, doctor): a scenario that
reaches names, addresses, IPv6 and loopback from two programs, and running the subcommands."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import ALLOWED_IP, OTHER_IP, PROGS, PYTHON, V6_IP, guarded_env


def scenario(loopback_url: str, *extra: str) -> list[str]:
    """argv: Python fetches http://allowed.test/ (a lookup and a connect with the name), sends
    two datagrams to OTHER_IP:9999, looks up other.test, fetches [V6_IP]:80; before it curl, a
    second program, fetches `loopback_url`. Every step must succeed (exit 1 otherwise)."""
    probe = " ".join([
        PYTHON, str(PROGS / "netprobe.py"),
        "http=http://allowed.test/",
        f"sendto={OTHER_IP},9999,a", f"sendto={OTHER_IP},9999,b",
        "resolve=other.test",
        f"http=http://[{V6_IP}]/",
        *extra,
    ])
    check = PYTHON + " -c 'import json,sys; sys.exit(any(not json.loads(l)[\"ok\"] for l in sys.stdin))'"
    return ["sh", "-c", f"curl -sS -o /dev/null --noproxy '*' {loopback_url} && {probe} | {check}"]


def subcommand(egress_bin: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(egress_bin), *map(str, args)], capture_output=True, text=True,
                          env=guarded_env(env), timeout=120)


def rules_of(allow_file: str) -> list[str]:
    """The rules of an allow file, in order, without comments."""
    return [l.split("#", 1)[0].strip() for l in allow_file.splitlines() if l.split("#", 1)[0].strip()]


def summary_of(report: list[dict]) -> dict:
    return next(l for l in report if l["type"] == "summary")


def dest_set(dests: list[dict]) -> set[tuple]:
    return {(d["host"], d["addr"], d["port"], d["proto"], d["decision"], d["count"]) for d in dests}


__all__ = ["scenario", "subcommand", "rules_of", "summary_of", "dest_set", "ALLOWED_IP", "json"]
