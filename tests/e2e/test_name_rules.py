"""Name rules: lookups through libc, the addresses they return, and what reaches the resolver."""
import shlex

import pytest

from conftest import ALLOWED_IP, OTHER_IP, netprobe, token

EAI_FAIL = -4
EACCES = 13
MODES = {"block": [], "audit": ["--audit"]}


@pytest.mark.parametrize("mode", MODES)
def test_python_urllib_to_allowed_name(mode, sandbox, servers, dns_log, run_guarded):
    tok = token()
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test:80", *MODES[mode]],
                      netprobe(f"http=http://allowed.test/{tok}"))
    out = res.outputs()
    assert res.returncode == 0, res.describe()
    assert out[0]["ok"] and out[0]["body"] == f"ok from {ALLOWED_IP}", res.describe()
    assert f"/{tok}" in servers.http[ALLOWED_IP].paths()

    resolves = res.attempts("resolve", host="allowed.test")
    assert resolves and all(r["decision"] == "allow" and r["rule"] == "allowed.test:80" for r in resolves), res.describe()
    conn = res.attempts("connect", addr=ALLOWED_IP, port=80)
    assert len(conn) == 1, res.describe()
    assert conn[0]["proto"] == "tcp"
    assert conn[0]["host"] == "allowed.test"
    assert conn[0]["decision"] == "allow" and conn[0]["rule"] == "allowed.test:80"
    assert conn[0]["enforced"] is (mode == "block")
    assert res.summary["denied"] == 0
    assert "allowed.test" in dns_log.names_since(mark)


def test_unmatched_name_is_refused_without_a_query(sandbox, servers, dns_log, run_guarded):
    tok = token()
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test:80"],
                      netprobe("resolve=allowed.test", "resolve=other.test", "gethostbyname=other.test",
                               f"http=http://other.test/{tok}"))
    out = res.outputs()
    assert len(out) == 4, res.describe()
    # the allowed lookup works (and proves the DNS log records queries in this very run)
    assert out[0]["ok"] and out[0]["addrs"] == [ALLOWED_IP], res.describe()
    # every lookup of other.test fails with EAI_FAIL ("Non-recoverable failure")
    for o in out[1:]:
        assert not o["ok"] and o["error"] == "gaierror" and o["errno"] == EAI_FAIL, res.describe()
    assert res.returncode == 3, res.describe()

    denied = res.attempts("resolve", host="other.test")
    assert denied and all(d["decision"] == "deny" and d["rule"] is None and d["enforced"] is True
                          for d in denied), res.describe()
    assert res.count("resolve", host="other.test") == 3, res.describe()
    assert not res.attempts("connect", addr=OTHER_IP), res.describe()

    names = dns_log.names_since(mark)
    assert "allowed.test" in names
    assert not [n for n in names if n == "other.test" or n.endswith(".other.test")], names
    assert f"/{tok}" not in servers.http[OTHER_IP].paths()


@pytest.mark.parametrize("audit", [["--audit"], ["--mode", "audit"]], ids=["--audit", "--mode=audit"])
def test_audit_lets_the_lookup_proceed(audit, sandbox, servers, dns_log, run_guarded):
    tok = token()
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test:80", *audit], netprobe(f"http=http://other.test/{tok}"))
    out = res.outputs()
    assert res.returncode == 0, res.describe()
    assert out[0]["ok"] and out[0]["body"] == f"ok from {OTHER_IP}", res.describe()
    assert "other.test" in dns_log.names_since(mark)
    assert f"/{tok}" in servers.http[OTHER_IP].paths()

    assert res.run_line["mode"] == "audit"
    resolves = res.attempts("resolve", host="other.test")
    assert resolves and all(r["decision"] == "deny" and r["enforced"] is False and r["rule"] is None
                            for r in resolves), res.describe()
    conn = res.attempts("connect", addr=OTHER_IP, port=80)
    assert len(conn) == 1, res.describe()
    assert conn[0]["decision"] == "deny" and conn[0]["enforced"] is False
    assert conn[0]["host"] == "other.test", "the address came from a lookup in this process"
    assert res.summary["denied"] >= 2


@pytest.mark.parametrize("mode", MODES)
def test_name_rule_allows_only_its_ports(mode, sandbox, servers, run_guarded):
    res = run_guarded(["--allow", "allowed.test:80", *MODES[mode]],
                      netprobe("resolve=allowed.test", f"connect={ALLOWED_IP},80", f"connect={ALLOWED_IP},5432"))
    out = res.outputs()
    assert out[0]["ok"] and out[1]["ok"], res.describe()
    a80 = res.attempts("connect", addr=ALLOWED_IP, port=80)
    a5432 = res.attempts("connect", addr=ALLOWED_IP, port=5432)
    assert [c["decision"] for c in a80] == ["allow"] and a80[0]["rule"] == "allowed.test:80", res.describe()
    assert [c["decision"] for c in a5432] == ["deny"], res.describe()
    if mode == "block":
        assert not out[2]["ok"] and out[2]["errno"] == EACCES, res.describe()
        assert res.returncode == 3
    else:
        assert out[2]["ok"], res.describe()
        assert res.returncode == 0


def test_address_learned_by_another_process_is_not_allowed(sandbox, servers, run_guarded):
    """A name rule never matches an address by itself: an exec'd program starts with nothing learned."""
    inner = netprobe(f"connect={ALLOWED_IP},80")
    res = run_guarded(["--allow", "allowed.test:80"],
                      ["sh", "-c", f"{shlex.join(netprobe('resolve=allowed.test'))} && exec {shlex.join(inner)}"])
    out = res.outputs()
    assert out[0]["ok"], res.describe()
    assert not out[1]["ok"] and out[1]["errno"] == EACCES, res.describe()
    assert res.returncode == 3
    assert [c["decision"] for c in res.attempts("connect", addr=ALLOWED_IP, port=80)] == ["deny"]


@pytest.mark.parametrize("mode", MODES)
def test_wildcard_matches_names_below_only(mode, sandbox, servers, dns_log, run_guarded):
    tok = token()
    mark = dns_log.mark()
    res = run_guarded(["--allow", "*.other.test", *MODES[mode]],
                      netprobe(f"http=http://secret.other.test/{tok}", "resolve=other.test"))
    out = res.outputs()
    assert out[0]["ok"] and out[0]["body"] == f"ok from {OTHER_IP}", res.describe()
    conn = res.attempts("connect", addr=OTHER_IP, port=80)
    assert len(conn) == 1 and conn[0]["decision"] == "allow" and conn[0]["rule"] == "*.other.test", res.describe()
    assert conn[0]["host"] == "secret.other.test"
    assert [r["decision"] for r in res.attempts("resolve", host="other.test")] == ["deny"], res.describe()
    names = dns_log.names_since(mark)
    assert "secret.other.test" in names
    if mode == "block":
        assert not out[1]["ok"] and out[1]["errno"] == EAI_FAIL
        assert "other.test" not in names
        assert res.returncode == 3
    else:
        assert out[1]["ok"]
        assert "other.test" in names
        assert res.returncode == 0


def test_names_match_case_insensitively_and_ignore_a_trailing_dot(sandbox, servers, run_guarded):
    res = run_guarded(["--allow", "ALLOWED.test."], netprobe("resolve=Allowed.TEST", "resolve=allowed.test."))
    out = res.outputs()
    assert all(o["ok"] and o["addrs"] == [ALLOWED_IP] for o in out), res.describe()
    assert res.returncode == 0, res.describe()
    r = res.attempts("resolve")
    assert r and all(x["decision"] == "allow" and x["rule"] == "ALLOWED.test." for x in r), res.describe()
