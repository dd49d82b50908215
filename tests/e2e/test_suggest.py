"""`egress-run suggest`: an allow file from audit reports that lets the same run pass in block
mode (the round trip), with names rather than addresses, ports kept, loopback as `loopback` or
`loopback:PORT`, sorted and commented; several reports (a CI matrix) give one file."""
from conftest import ALLOWED_IP, OTHER_IP, V6_IP, TcpListener, netprobe
from workflow import rules_of, scenario, subcommand, summary_of


def test_audit_suggest_block_round_trip(sandbox, servers, loopback, run_guarded, egress_bin, tmp_path):
    audit = run_guarded(["--audit"], scenario(loopback.http.url))
    assert audit.returncode == 0, audit.describe()
    assert summary_of(audit.report)["denied"] > 0, "audit mode recorded what block mode would deny"
    allow = tmp_path / "egress.allow"
    out = subcommand(egress_bin, "suggest", "-o", allow, audit.report_path)
    assert out.returncode == 0, out.stderr
    text = allow.read_text()
    rules = rules_of(text)
    # names rather than addresses where the name is known; ports kept; loopback's port is
    # ephemeral (a server on port 0), so the whole of loopback; sorted: loopback, names, IPv4, IPv6
    assert rules == ["loopback", "allowed.test:80", "other.test", f"{OTHER_IP}:9999", f"[{V6_IP}]:80"], text
    assert ALLOWED_IP not in text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert "#" in line and "attempt" in line, f"commented with counts and programs: {line}"
    assert "curl" in next(l for l in text.splitlines() if l.startswith("loopback"))
    assert "python" in next(l for l in text.splitlines() if l.startswith("allowed.test"))

    block = run_guarded(["--allow-file", allow], scenario(loopback.http.url))
    assert block.returncode == 0, block.describe()
    assert summary_of(block.report)["denied"] == 0
    assert summary_of(block.report)["attempts"] == summary_of(audit.report)["attempts"]


def test_fixed_loopback_ports_stay_narrow(sandbox, run_guarded, egress_bin, tmp_path):
    # A fixed port (inside the sandbox's private namespace): loopback:PORT, not all of loopback.
    server = TcpListener("127.0.0.1", 5433)
    try:
        audit = run_guarded(["--audit"], netprobe("connect=127.0.0.1,5433"))
        out = subcommand(egress_bin, "suggest", audit.report_path)
        assert out.returncode == 0, out.stderr
        assert rules_of(out.stdout) == ["loopback:5433"], out.stdout
        allow = tmp_path / "a.allow"
        allow.write_text(out.stdout)
        assert run_guarded(["--allow-file", allow], netprobe("connect=127.0.0.1,5433")).returncode == 0
        # and nothing wider: another loopback port stays denied
        other = run_guarded(["--allow-file", allow], netprobe(f"connect=127.0.0.1,{server.port + 1}"))
        assert other.returncode == 3, other.describe()
    finally:
        server.close()


def test_reports_of_a_matrix_give_one_file(sandbox, servers, loopback, run_guarded, egress_bin, tmp_path):
    job1 = run_guarded(["--audit"], netprobe("http=http://allowed.test/"))
    job2 = run_guarded(["--audit"], netprobe(f"sendto={OTHER_IP},9999,x", "resolve=other.test"))
    allow = tmp_path / "matrix.allow"
    out = subcommand(egress_bin, "suggest", "-o", allow, job1.report_path, job2.report_path)
    assert out.returncode == 0, out.stderr
    assert rules_of(allow.read_text()) == ["allowed.test:80", "other.test", f"{OTHER_IP}:9999"]
    for argv in (netprobe("http=http://allowed.test/"), netprobe(f"sendto={OTHER_IP},9999,x", "resolve=other.test")):
        assert run_guarded(["--allow-file", allow], argv).returncode == 0


def test_rules_already_given_are_kept(sandbox, servers, loopback, run_guarded, egress_bin):
    # The audit run allowed loopback itself: the file still lets the same run pass on its own.
    audit = run_guarded(["--audit", "--allow", "loopback"], scenario(loopback.http.url))
    out = subcommand(egress_bin, "suggest", audit.report_path)
    assert rules_of(out.stdout)[0] == "loopback"
    assert "already given" in out.stdout.splitlines()[[l.split("#")[0].strip() for l in out.stdout.splitlines()].index("loopback")]


def test_a_cut_report_still_suggests_what_it_can(sandbox, servers, loopback, run_guarded, egress_bin, tmp_path):
    audit = run_guarded(["--audit"], scenario(loopback.http.url))
    raw = audit.report_path.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(raw[: len(raw) - len(raw.splitlines()[-1]) // 2 - 1])
    out = subcommand(egress_bin, "suggest", cut)
    assert out.returncode == 1
    assert f"{cut}:" in out.stderr and "cut short" in out.stderr, out.stderr
    assert "allowed.test:80" in rules_of(out.stdout)
    assert "interrupted run" in out.stdout
