"""Every resolver entry point is a lookup. res_* (and their __res_* and res_n* forms) of a name no
rule allows send nothing to the namespace's DNS server in block mode and are recorded in audit mode;
reverse lookups answer "no PTR record" (or the numeric form) without a query; a DNS question a
program sends itself (node's c-ares) is a datagram to the resolver, denied unless a rule allows it,
and the report names what it asked."""
import shutil
import subprocess

import pytest

from conftest import OTHER_IP, PROGS, RESOLVER_IP

NO_RECOVERY = 3
HOST_NOT_FOUND = 1
MODES = {"block": [], "audit": ["--audit"]}
QUERIES = {"query": "res_query", "search": "res_search", "querydomain": "res_querydomain",
           "send": "res_send", "nquery": "res_nquery", "nsearch": "res_nsearch", "nsend": "res_nsend"}


@pytest.fixture(scope="module")
def resolvers(build_dir):
    out = build_dir / "resolvers"
    r = subprocess.run(["gcc", "-O1", "-Wall", "-o", str(out), str(PROGS / "resolvers.c"), "-lresolv"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"gcc failed:\n{r.stderr}")
    return out


@pytest.mark.parametrize("op", QUERIES)
@pytest.mark.parametrize("mode", MODES)
def test_res_family_secret_name(op, mode, sandbox, dns_log, resolvers, run_guarded):
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test", *MODES[mode]], [resolvers, op, "secret.other.test"])
    looked = res.attempts("resolve", host="secret.other.test")
    assert [(r["call"], r["decision"]) for r in looked] == [(QUERIES[op], "deny")], res.describe()
    if mode == "block":
        assert res.stdout == f"fail h_errno={NO_RECOVERY}\n", res.describe()
        assert "secret.other.test" not in dns_log.names_since(mark), "a refused res_* query reached the resolver"
        assert res.returncode == 3, res.describe()
    else:
        assert res.stdout.startswith("ok "), res.describe()
        assert "secret.other.test" in dns_log.names_since(mark)
        assert res.returncode == 0, res.describe()


@pytest.mark.parametrize("op", QUERIES)
def test_res_family_allowed_name(op, sandbox, resolvers, run_guarded):
    res = run_guarded(["--allow", "*.other.test"], [resolvers, op, "secret.other.test"])
    assert res.stdout.startswith("ok "), res.describe()
    looked = res.attempts("resolve", host="secret.other.test")
    assert [(r["decision"], r["rule"]) for r in looked] == [("allow", "*.other.test")], res.describe()


@pytest.mark.parametrize("op", ["ghba", "ghbar", "gni"])
@pytest.mark.parametrize("mode", MODES)
def test_reverse_lookup_refused_without_a_query(op, mode, sandbox, dns_log, resolvers, run_guarded):
    ptr = "20.100.51.198.in-addr.arpa"
    mark = dns_log.mark()
    res = run_guarded(MODES[mode], [resolvers, op, OTHER_IP])
    looked = res.attempts("resolve", host=ptr)
    assert [r["decision"] for r in looked] == ["deny"], res.describe()
    if mode == "block":
        want = {"ghba": f"fail rc=0 h_errno={HOST_NOT_FOUND}", "ghbar": f"fail rc=2 h_errno={HOST_NOT_FOUND}",
                "gni": f"ok {OTHER_IP}"}[op]
        assert res.stdout.strip() == want, res.describe()
        assert ptr not in dns_log.names_since(mark), "a refused reverse lookup reached the resolver"
    else:
        assert ptr in dns_log.names_since(mark), res.describe()


def test_getnameinfo_name_required_fails(sandbox, resolvers, run_guarded):
    res = run_guarded([], [resolvers, "gni", OTHER_IP, "req"])
    assert res.stdout.strip() == "fail rc=-2", res.describe()  # EAI_NONAME


def test_reverse_lookup_of_a_hosts_entry_is_local(sandbox, dns_log, resolvers, run_guarded):
    mark = dns_log.mark()
    res = run_guarded([], [resolvers, "ghba", "127.0.0.1"])
    assert res.stdout.strip() == "ok localhost", res.describe()
    assert res.attempts("resolve") == [] and res.returncode == 0, res.describe()
    assert dns_log.names_since(mark) == []


NODE_RESOLVE = """
const dns = require('dns');
dns.resolve4(process.argv[2], (err, addrs) => {
  console.log(err ? 'error ' + err.code : 'ok ' + addrs.join(','));
});
"""


@pytest.mark.parametrize("mode", MODES)
def test_node_c_ares_queries_are_datagrams_to_the_resolver(mode, sandbox, dns_log, run_guarded, tmp_path):
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    script = tmp_path / "resolve.js"
    script.write_text(NODE_RESOLVE)
    mark = dns_log.mark()
    res = run_guarded(["--allow", "other.test", *MODES[mode]], ["node", script, "secret.other.test"])
    sends = [s for s in res.lines("send") + res.lines("connect")
             if s["addr"] == RESOLVER_IP and s["port"] == 53]
    assert sends and all(s["decision"] == "deny" for s in sends), res.describe()
    if mode == "block":
        assert res.stdout.startswith("error "), res.describe()
        assert "secret.other.test" not in dns_log.names_since(mark)
    else:
        assert res.stdout == f"ok {OTHER_IP}\n", res.describe()
        # The connect carries no question; the send on the connected socket does.
        named = [s for s in res.lines("send") if s["host"] == "secret.other.test"]
        assert named and named[0]["addr"] == RESOLVER_IP and named[0]["port"] == 53, res.describe()


def test_node_c_ares_allowed_by_a_resolver_rule(sandbox, run_guarded, tmp_path):
    if not shutil.which("node"):
        pytest.skip("node is not installed")
    script = tmp_path / "resolve.js"
    script.write_text(NODE_RESOLVE)
    res = run_guarded(["--allow", f"{RESOLVER_IP}:53"], ["node", script, "secret.other.test"])
    assert res.stdout == f"ok {OTHER_IP}\n", res.describe()
    assert res.returncode == 0, res.describe()


@pytest.fixture(scope="module")
def gai_async(build_dir):
    out = build_dir / "gai_async"
    r = subprocess.run(["gcc", "-O1", "-Wall", "-o", str(out), str(PROGS / "gai_async.c"), "-lanl"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"gcc failed:\n{r.stderr}")
    return out


@pytest.mark.parametrize("mode", MODES)
def test_getaddrinfo_a_refused_name_sends_no_query(mode, sandbox, dns_log, gai_async, run_guarded):
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test", *MODES[mode]], [gai_async, "secret.other.test"])
    looked = res.attempts("resolve", host="secret.other.test")
    assert [(r["call"], r["decision"]) for r in looked] == [("getaddrinfo_a", "deny")], res.describe()
    if mode == "block":
        assert res.stdout == "fail rc=-11 errno=13\n", res.describe()  # EAI_SYSTEM, EACCES
        assert "secret.other.test" not in dns_log.names_since(mark)
    else:
        assert res.stdout == f"ok {OTHER_IP}\n", res.describe()


def test_getaddrinfo_a_allowed_name(sandbox, gai_async, run_guarded):
    res = run_guarded(["--allow", "allowed.test"], [gai_async, "allowed.test"])
    assert res.stdout == "ok 203.0.113.10\n", res.describe()
    assert res.count("resolve", host="allowed.test", decision="allow") == 1, res.describe()
