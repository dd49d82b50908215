"""`--baseline FILE` (a report or an allow file): exit 3 only when a destination outside it was
denied, or in audit mode would have been; the summary (stderr and report) marks the new ones."""
from pathlib import Path

from conftest import OTHER_IP, V6_IP, netprobe
from workflow import scenario, subcommand, summary_of

KNOWN = [f"sendto={OTHER_IP},9999,x", "resolve=other.test"]
NEW = f"connect={V6_IP},80"


def _allow_file(tmp_path, *rules):
    p = tmp_path / "baseline.allow"
    p.write_text("# known destinations\n" + "".join(r + "\n" for r in rules))
    return p


def test_block_mode_known_denials_pass(sandbox, servers, run_guarded, tmp_path):
    base = _allow_file(tmp_path, f"{OTHER_IP}:9999", "other.test")
    res = run_guarded(["--baseline", base], netprobe(*KNOWN))
    assert res.returncode == 0, res.describe()
    s = summary_of(res.report)
    assert s["denied"] == 2 and s["new_denied"] == 0, s
    assert not any(d.get("new") for d in s["destinations"])
    # still refused: a baseline never allows anything
    assert '"errno": 13' in res.stdout, res.stdout
    assert res.count("send", decision="deny") == 1


def test_block_mode_a_new_destination_fails(sandbox, servers, run_guarded, tmp_path):
    base = _allow_file(tmp_path, f"{OTHER_IP}:9999", "other.test")
    res = run_guarded(["--baseline", base], netprobe(*KNOWN, NEW))
    assert res.returncode == 3, res.describe()
    s = summary_of(res.report)
    assert s["new_denied"] == 1, s
    new = [d for d in s["destinations"] if d.get("new")]
    assert [(d["addr"], d["port"]) for d in new] == [(V6_IP, 80)], s
    marked = [l for l in res.stderr.splitlines() if l.endswith(" NEW")]
    assert len(marked) == 1 and f"[{V6_IP}]:80" in marked[0], res.stderr
    assert "1 outside the baseline" in res.stderr


def test_without_a_baseline_every_denial_fails(sandbox, servers, run_guarded):
    assert run_guarded([], netprobe(*KNOWN)).returncode == 3


def test_audit_mode_with_a_report_as_baseline(sandbox, servers, loopback, run_guarded, egress_bin):
    first = run_guarded(["--audit"], scenario(loopback.http.url))
    assert first.returncode == 0, first.describe()
    # the same run again: nothing new, exit 0
    again = run_guarded(["--audit", "--baseline", first.report_path], scenario(loopback.http.url))
    assert again.returncode == 0, again.describe()
    assert summary_of(again.report)["new_denied"] == 0
    # one more destination: audit mode refuses nothing but the gate fails
    more = run_guarded(["--audit", "--baseline", first.report_path],
                       scenario(loopback.http.url, "resolve=sub.other.test"))
    assert more.returncode == 3, more.describe()
    s = summary_of(more.report)
    assert [d["host"] for d in s["destinations"] if d.get("new")] == ["sub.other.test"], s
    # report --baseline marks the same
    view = subcommand(egress_bin, "report", "--baseline", first.report_path, more.report_path)
    assert [l.split()[4] for l in view.stdout.splitlines() if "would deny NEW" in l] == ["sub.other.test"], view.stdout


def test_audit_mode_without_baseline_keeps_the_commands_status(sandbox, servers, run_guarded):
    assert run_guarded(["--audit"], netprobe(NEW)).returncode == 0


def test_a_bad_baseline_stops_before_the_command(run_guarded, tmp_path):
    marker = tmp_path / "ran"
    cmd = ["sh", "-c", f"touch {marker}"]
    res = run_guarded(["--baseline", tmp_path / "missing"], cmd, report=False)
    assert res.returncode == 125 and res.stderr.startswith("egress-run: cannot read the baseline"), res.describe()
    bad = _allow_file(tmp_path, "not a rule!")
    res = run_guarded(["--baseline", bad], cmd, report=False)
    assert res.returncode == 125 and "not a rule!" in res.stderr, res.describe()
    assert not Path(marker).exists()
