"""A suite that already knows how to run offline (tests/offline_suite: urllib3-style probes that
skip the network tests on ENETUNREACH/EHOSTUNREACH or EAI_AGAIN and fail on anything else),
wrapped by egress-run. Under `--deny-as offline` it must behave exactly as on a host without a
network (a fresh `unshare -n`, no guard): the same tests pass, the same skip, for the same
reasons. Under the default its network tests fail with EACCES instead of skipping: that is why
--deny-as offline exists."""
import subprocess
import xml.etree.ElementTree as ET

from conftest import (
    OTHER_IP,
    PYTHON,
    REPO,
    RUN_TIMEOUT,
    guarded_env,
    load_report,
    no_network_prefix,
)

NETWORK_TESTS = {"test_network::test_http_get", "test_network::test_tcp_connect",
                 "test_network::test_udp_datagram"}
DNS_TESTS = {"test_network::test_lookup"}
OFFLINE_TESTS = {"test_offline::test_url_parsing", "test_offline::test_loopback_tcp_echo",
                 "test_offline::test_loopback_udp"}
SKIP_NETWORK = "Can't run the test because the network is unreachable"
SKIP_DNS = "Can't run the test because names do not resolve"


def pytest_argv(junit):
    return [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
            "tests/offline_suite"]


def run(argv):
    p = subprocess.run(list(map(str, argv)), cwd=REPO, capture_output=True, text=True,
                       env=guarded_env(), timeout=RUN_TIMEOUT)
    return p, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"


def outcomes(junit):
    """{module::test: (outcome, message)} from pytest's JUnit XML."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        key = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        result = ("passed", "")
        for tag in ("skipped", "failure", "error"):
            el = case.find(tag)
            if el is not None:
                result = (tag, el.get("message", ""))
        out[key] = result
    return out


def counts(results):
    tally = {}
    for outcome, _ in results.values():
        tally[outcome] = tally.get(outcome, 0) + 1
    return tally


def test_offline_suite_skips_under_deny_as_offline_as_on_a_host_without_a_network(
        sandbox, dns_log, egress_bin, tmp_path):
    mark = dns_log.mark()
    report = tmp_path / "offline.jsonl"
    guarded, detail = run([egress_bin, "--allow", "loopback", "--deny-as", "offline",
                           "--exit-status", "command", "--report", report, "--",
                           *pytest_argv(tmp_path / "guarded.xml")])
    assert guarded.returncode == 0, detail
    got = outcomes(tmp_path / "guarded.xml")
    want = {t: ("skipped", SKIP_NETWORK) for t in NETWORK_TESTS}
    want |= {t: ("skipped", SKIP_DNS) for t in DNS_TESTS}
    want |= {t: ("passed", "") for t in OFFLINE_TESTS}
    assert got == want, detail

    bare, bare_detail = run(no_network_prefix() + pytest_argv(tmp_path / "bare.xml"))
    assert bare.returncode == 0, bare_detail
    host = outcomes(tmp_path / "bare.xml")
    assert counts(host) == counts(got) == {"passed": 3, "skipped": 4}, bare_detail
    assert host == got, bare_detail

    # The probes were denials, recorded as such; with --exit-status command pytest's 0 stands.
    lines = load_report(report, 0, "block")
    assert lines[0]["deny_as"] == "offline"
    summary = lines[-1]
    assert summary["command_status"] == 0 and summary["denied"] > 0, summary
    denied = {(d["host"], d["addr"], d["port"]) for d in summary["destinations"]
              if d["decision"] == "deny"}
    assert denied == {(None, OTHER_IP, 80), ("other.test", None, None)}, summary
    assert "other.test" not in dns_log.names_since(mark)


def test_offline_suite_fails_under_the_default(sandbox, egress_bin, tmp_path):
    report = tmp_path / "default.jsonl"
    p, detail = run([egress_bin, "--allow", "loopback", "--report", report, "--",
                     *pytest_argv(tmp_path / "default.xml")])
    assert p.returncode == 1, "pytest's own status (tests failed) passes through\n" + detail
    got = outcomes(tmp_path / "default.xml")
    assert {t for t, (o, _) in got.items() if o == "passed"} == OFFLINE_TESTS, detail
    for t in NETWORK_TESTS:
        assert got[t][0] == "failure" and "[Errno 13] Permission denied" in got[t][1], (t, got[t])
    for t in DNS_TESTS:
        assert got[t][0] == "failure" and "[Errno -4]" in got[t][1], (t, got[t])
    assert load_report(report, 1, "block")[0]["deny_as"] == "eacces"


def test_offline_suite_runs_its_network_tests_where_there_is_a_network(sandbox, servers, tmp_path):
    """The control: unguarded in the sandbox, whose test addresses are local, the probes find a
    network and every test runs (and passes, against the sandbox's servers)."""
    p, detail = run(pytest_argv(tmp_path / "online.xml"))
    assert p.returncode == 0, detail
    got = outcomes(tmp_path / "online.xml")
    assert got == {t: ("passed", "") for t in NETWORK_TESTS | DNS_TESTS | OFFLINE_TESTS}, detail
