"""Names the guard lets resolve "locally" must really stay local: glibc (hosts: files dns) has
no special case for `*.localhost` or `localhost.`, and asks DNS for a name /etc/hosts lists only
for another family. Such names are answered as loopback (RFC 6761) or decided as lookups, so
no query leaves unrecorded."""
import socket

import pytest

from conftest import ALLOWED_IP, PROGS, py

EAI_FAIL = -4
MODES = {"block": [], "audit": ["--audit"]}


def gai(name, family):
    fam = {"unspec": "socket.AF_UNSPEC", "v4": "socket.AF_INET", "v6": "socket.AF_INET6"}[family]
    return py("import socket\n"
              "try:\n"
              f"    r = socket.getaddrinfo({name!r}, 80, {fam}, socket.SOCK_STREAM)\n"
              "    print('ok', sorted({a[4][0] for a in r}))\n"
              "except socket.gaierror as e:\n"
              "    print('fail', e.errno)\n")


@pytest.mark.parametrize("name", ["secret.localhost", "localhost.", "a.b.LOCALHOST"])
@pytest.mark.parametrize("family", ["unspec", "v4", "v6"])
def test_localhost_names_answer_loopback_without_a_query(name, family, sandbox, dns_log, run_guarded):
    mark = dns_log.mark()
    res = run_guarded([], gai(name, family))
    assert res.stdout.startswith("ok "), res.describe()
    addrs = eval(res.stdout[3:])  # a list literal printed by the program
    assert addrs and all(ip in ("127.0.0.1", "::1") for ip in addrs), res.describe()
    assert not dns_log.names_since(mark), f"a query left: {dns_log.names_since(mark)}"
    assert res.returncode == 0 and not res.attempts("resolve"), res.describe()


def test_localhost_names_with_gethostbyname(sandbox, dns_log, run_guarded, compile_c):
    libcentry = compile_c(PROGS / "libcentry.c", "libcentry")
    mark = dns_log.mark()
    for op in ("ghbn", "ghbn2", "ghbnr", "ghbn2r"):
        res = run_guarded([], [libcentry, op, "db.localhost"])
        assert res.stdout == "ok 127.0.0.1\n", res.describe()
    assert not dns_log.names_since(mark)


@pytest.mark.parametrize("mode", MODES)
def test_hosts_name_looked_up_for_a_family_it_lacks_is_a_lookup(mode, sandbox, dns_log, run_guarded):
    """hostsfile-v4.test is in the sandbox's /etc/hosts for IPv4 only: asked for IPv6, glibc
    goes on to DNS, so the guard decides it as the DNS lookup it is."""
    mark = dns_log.mark()
    res = run_guarded(MODES[mode], gai("hostsfile-v4.test", "v6"))
    looked = res.attempts("resolve", host="hostsfile-v4.test")
    assert [(r["call"], r["decision"]) for r in looked] == [("getaddrinfo", "deny")], res.describe()
    if mode == "block":
        assert res.stdout == f"fail {EAI_FAIL}\n", res.describe()
        assert "hostsfile-v4.test" not in dns_log.names_since(mark), "a refused lookup reached the resolver"
    else:
        assert "hostsfile-v4.test" in dns_log.names_since(mark)


@pytest.mark.parametrize("family", ["unspec", "v4"])
def test_hosts_name_for_its_own_family_stays_local(family, sandbox, dns_log, run_guarded):
    mark = dns_log.mark()
    res = run_guarded([], gai("hostsfile-v4.test", family))
    assert res.stdout == f"ok ['{ALLOWED_IP}']\n", res.describe()
    assert not res.attempts("resolve") and not dns_log.names_since(mark), res.describe()


def test_a_hosts_name_with_a_trailing_dot_is_a_lookup(sandbox, dns_log, run_guarded):
    """glibc's files source compares names as given: `hostsfile-v4.test.` misses /etc/hosts."""
    mark = dns_log.mark()
    res = run_guarded([], gai("hostsfile-v4.test.", "v4"))
    assert res.stdout == f"fail {EAI_FAIL}\n", res.describe()
    assert "hostsfile-v4.test" not in dns_log.names_since(mark)
