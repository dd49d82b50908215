"""A malformed rule stops egress-run before COMMAND starts: exit 125, a message naming the rule."""
import pytest

from conftest import py

BAD_RULES = [
    ("", "empty"),
    ("10.0.0.0/33", "prefix longer than IPv4"),
    ("10.0.0.0/", "empty prefix"),
    ("10.0.0.0/x", "non-numeric prefix"),
    ("2001:db8::/129", "prefix longer than IPv6"),
    ("10.0.0.1/24", "host bits set"),
    ("2001:db8::1/32", "IPv6 host bits set"),
    ("allowed.test:0", "port 0"),
    ("allowed.test:70000", "port out of range"),
    ("1.2.3.4:65536", "port just out of range"),
    ("allowed.test:443-80", "reversed range"),
    ("allowed.test:80-", "range without high end"),
    ("allowed.test:", "missing port"),
    ("allowed.test:http", "port name"),
    ("allowed.test:-1", "negative port"),
    ("*.", "wildcard without a domain"),
    ("**.x", "double star"),
    ("*", "bare star"),
    ("api.*.example.test", "star not first"),
    ("2001:db8:0:0:0:0:0:7:443", "unbracketed IPv6 with a port"),
    ("2001:db8::/32:443", "unbracketed IPv6 network with a port"),
    ("[1.2.3.4]:80", "IPv4 in brackets"),
    ("[2001:db8::7]443", "junk after ]"),
    ("[2001:db8::7", "missing ]"),
    ("[2001:db8::7]:0", "bracketed port 0"),
    ("exa mple.test", "space"),
    ("example..test", "empty label"),
    (".example.test", "leading dot"),
    ("ex!ample.test", "bad character"),
    ("203.0.113.999", "numeric last label"),
    (":80", "no host"),
]


def marker_cmd(marker):
    return py(f"open({str(marker)!r}, 'w').write('started')")


@pytest.mark.parametrize("rule", [r for r, _ in BAD_RULES], ids=[f"{why}:{r!r}" for r, why in BAD_RULES])
def test_bad_rule_on_the_command_line(rule, tmp_path, run_guarded):
    marker = tmp_path / "started"
    res = run_guarded(["--allow", "loopback", "--allow", rule], marker_cmd(marker), report=False)
    assert res.returncode == 125, res.describe()
    assert res.stderr.startswith(f"egress-run: invalid rule '{rule}':"), res.describe()
    assert not marker.exists(), "COMMAND was started despite a bad rule"


def test_bad_rule_with_report_starts_nothing(tmp_path, run_guarded):
    marker = tmp_path / "started"
    res = run_guarded(["--allow", "10.0.0.1/24"], marker_cmd(marker))
    assert res.returncode == 125, res.describe()
    assert not marker.exists()


def test_good_rules_are_accepted(tmp_path, run_guarded):
    marker = tmp_path / "started"
    good = ["loopback", "allowed.test", "Allowed.Test.", "*.other.test", "203.0.113.10", "2001:db8::7",
            "203.0.113.0/24", "2001:db8::/32", "allowed.test:80", "203.0.113.0/24:8000-8099", "[2001:db8::7]:443",
            "[2001:db8::/32]:443", "::ffff:203.0.113.7", "2001:db8::7:443", "loopback:5432", "10.0.0.0/8:1-65535"]
    args = [a for r in good for a in ("--allow", r)]
    res = run_guarded(args, marker_cmd(marker))
    assert res.returncode == 0, res.describe()
    assert marker.exists()
    assert res.run_line["rules"] == good


FILE_BAD = [r for r, _ in BAD_RULES if r and " " not in r]


@pytest.mark.parametrize("rule", FILE_BAD)
def test_bad_rule_in_an_allow_file(rule, tmp_path, run_guarded):
    marker = tmp_path / "started"
    f = tmp_path / "egress.allow"
    f.write_text("# test allow file\n\nloopback\n   allowed.test:80   # trailing comment\n"
                 f"{rule}\n203.0.113.10\n")
    res = run_guarded(["--allow-file", f], marker_cmd(marker), report=False)
    assert res.returncode == 125, res.describe()
    assert res.stderr.startswith("egress-run: "), res.describe()
    assert f"{f}:5" in res.stderr, "the message names the file and the line number"
    assert f"invalid rule '{rule}'" in res.stderr, res.describe()
    assert not marker.exists(), "COMMAND was started despite a bad rule"


def test_allow_file_comments_and_blank_lines(tmp_path, loopback, run_guarded):
    f = tmp_path / "egress.allow"
    f.write_text(f"# only this port\n\n   127.0.0.1:{loopback.tcp1.port}   # the test server\n\n")
    from conftest import netprobe
    res = run_guarded(["--allow-file", f],
                      netprobe(f"connect=127.0.0.1,{loopback.tcp1.port}", f"connect=127.0.0.1,{loopback.tcp2.port}"))
    out = res.outputs()
    assert out[0]["ok"] and not out[1]["ok"], res.describe()
    assert res.returncode == 3
    assert res.run_line["rules"] == [f"127.0.0.1:{loopback.tcp1.port}"]
    assert [c["rule"] for c in res.attempts("connect", decision="allow")] == [f"127.0.0.1:{loopback.tcp1.port}"]


def test_unreadable_allow_file(tmp_path, run_guarded):
    marker = tmp_path / "started"
    res = run_guarded(["--allow-file", tmp_path / "missing.allow"], marker_cmd(marker), report=False)
    assert res.returncode == 125, res.describe()
    assert "missing.allow" in res.stderr
    assert not marker.exists()
