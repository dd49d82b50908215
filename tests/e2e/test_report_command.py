"""`egress-run report`: real reports of the test scenarios as a table, markdown, GitHub workflow
commands and JSON; several files merged; cut, corrupt and interrupted reports; and the stderr
summary of a long run (loopback ports grouped, colour only on a terminal)."""
import json
import os
import pty
import shutil
import subprocess

import pytest

from conftest import OTHER_IP, V6_IP, guarded_env, py
from workflow import dest_set, scenario, subcommand, summary_of


def _blocked_run(run_guarded, servers, loopback):
    """The scenario in block mode with allowed.test:80 and loopback allowed: the UDP datagrams,
    other.test and the IPv6 fetch are denied (the scenario's own check then fails: exit 1)."""
    return run_guarded(["--allow", "allowed.test:80", "--allow", "loopback"], scenario(loopback.http.url))


def test_table_shows_destinations_counts_decisions_programs(sandbox, servers, loopback, run_guarded, egress_bin):
    res = _blocked_run(run_guarded, servers, loopback)
    out = subcommand(egress_bin, "report", res.report_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "block mode" in text
    denied_rows = [l for l in text.splitlines() if l.startswith("DENIED")]
    assert any(f"{OTHER_IP}:9999" in l and " 2 " in l and "--allow 198.51.100.20:9999" in l for l in denied_rows), text
    assert any("other.test" in l and "--allow other.test" in l for l in denied_rows), text
    assert any(f"[{V6_IP}]:80" in l for l in denied_rows), text
    allowed = [l for l in text.splitlines() if l.startswith("allowed")]
    assert any("allowed.test" in l and "allowed.test:80" in l for l in allowed), text
    assert any("curl" in l and "127.0.0.1" in l and "loopback" in l for l in allowed), text
    assert text.index("DENIED") < text.index("\nallowed"), "denied destinations come first"
    # processes grouped by program: one row per program, not per process
    programs = text.split("\nPROGRAM ", 1)[1].splitlines()[1:]
    names = [l.split()[0] for l in programs if l.strip()]
    assert len(names) == len(set(names)), text
    assert "curl" in names and any(n.startswith("python") for n in names), text


def test_markdown_for_a_job_summary(sandbox, servers, loopback, run_guarded, egress_bin):
    res = _blocked_run(run_guarded, servers, loopback)
    out = subcommand(egress_bin, "report", "--format", "markdown", res.report_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("### egress-run: egress denied"), out.stdout
    assert f"| **DENIED** | udp | `{OTHER_IP}:9999` |" in out.stdout, out.stdout
    assert "| --- |" in out.stdout


def test_github_one_error_per_denied_destination(sandbox, servers, loopback, run_guarded, egress_bin):
    res = _blocked_run(run_guarded, servers, loopback)
    denied = [d for d in summary_of(res.report)["destinations"] if d["decision"] == "deny"]
    out = subcommand(egress_bin, "report", "--format", "github", res.report_path)
    assert out.returncode == 0, out.stderr
    errors = [l for l in out.stdout.splitlines() if l.startswith("::error ")]
    assert len(errors) == len(denied), out.stdout
    for line in errors:
        assert "python" in line, f"names the program: {line}"
        assert "--allow " in line, f"names the rule that would allow it: {line}"
    assert any("--allow 198.51.100.20%3A9999" in l or "--allow 198.51.100.20:9999" in l for l in errors)
    assert out.stdout.splitlines()[-1].startswith("::notice ")


def test_github_warns_in_audit_mode(sandbox, servers, loopback, run_guarded, egress_bin):
    res = run_guarded(["--audit", "--allow", "loopback"], scenario(loopback.http.url))
    assert res.returncode == 0, res.describe()
    out = subcommand(egress_bin, "report", "--format", "github", res.report_path)
    assert not [l for l in out.stdout.splitlines() if l.startswith("::error")], out.stdout
    assert len([l for l in out.stdout.splitlines() if l.startswith("::warning")]) >= 4, out.stdout


def test_json_summary_is_recomputed_from_the_lines(sandbox, servers, loopback, run_guarded, egress_bin):
    res = _blocked_run(run_guarded, servers, loopback)
    summary = summary_of(res.report)
    out = subcommand(egress_bin, "report", "--format", "json", res.report_path)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    for k in ("attempts", "denied", "exit_code", "command_status"):
        assert got[k] == summary[k], k
    assert dest_set(got["destinations"]) == dest_set(summary["destinations"])
    # recomputed, not copied: a report whose summary lies is shown with the lines' totals
    lying = [l if l["type"] != "summary" else {**l, "attempts": 1, "denied": 0, "destinations": []}
             for l in res.report]
    path = res.report_path.with_name("lying.jsonl")
    path.write_text("".join(json.dumps(l) + "\n" for l in lying))
    again = json.loads(subcommand(egress_bin, "report", "--format", "json", path).stdout)
    assert again["attempts"] == summary["attempts"] and again["denied"] == summary["denied"]


def test_several_files_merge_into_one_view(sandbox, servers, loopback, run_guarded, egress_bin):
    a = _blocked_run(run_guarded, servers, loopback)
    b = run_guarded([], py(f"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                           f"for _ in range(5):\n"
                           f"    try: s.sendto(b'x', ('{OTHER_IP}', 9999))\n"
                           f"    except OSError: pass\n"))
    out = subcommand(egress_bin, "report", "--format", "json", a.report_path, b.report_path)
    got = json.loads(out.stdout)
    sa, sb = summary_of(a.report), summary_of(b.report)
    assert got["attempts"] == sa["attempts"] + sb["attempts"]
    assert got["denied"] == sa["denied"] + sb["denied"]
    udp = [d for d in got["destinations"] if d["addr"] == OTHER_IP and d["port"] == 9999]
    assert len(udp) == 1 and udp[0]["count"] == 2 + 5, udp
    table = subcommand(egress_bin, "report", a.report_path, b.report_path).stdout
    assert str(a.report_path) in table and str(b.report_path) in table


def test_a_cut_report_names_the_line_and_shows_the_rest(sandbox, servers, loopback, run_guarded, egress_bin):
    res = _blocked_run(run_guarded, servers, loopback)
    raw = res.report_path.read_bytes().splitlines(keepends=True)
    # the summary gone and the last attempt line torn in half
    kept = raw[:-1]
    kept[-1] = kept[-1][: len(kept[-1]) // 2]
    cut = res.report_path.with_name("cut.jsonl")
    cut.write_bytes(b"".join(kept))
    out = subcommand(egress_bin, "report", cut)
    assert out.returncode == 1, out
    assert f"{cut}:{len(kept)}: cut short" in out.stderr, out.stderr
    assert "INTERRUPTED" in out.stdout, "a report without summary is an interrupted run"
    assert f"{OTHER_IP}:9999" in out.stdout, "what was readable is shown"


def test_a_corrupt_line_is_named(sandbox, servers, loopback, run_guarded, egress_bin):
    res = _blocked_run(run_guarded, servers, loopback)
    lines = res.report_path.read_text().splitlines(keepends=True)
    lines[2] = "{\"type\": \"connect\", oops\n"
    bad = res.report_path.with_name("bad.jsonl")
    bad.write_text("".join(lines))
    out = subcommand(egress_bin, "report", "--format", "json", bad)
    assert out.returncode == 1
    assert f"{bad}:3: not a JSON object" in out.stderr, out.stderr
    got = json.loads(out.stdout)
    assert got["files"][0]["problems"][0]["line"] == 3
    assert got["attempts"] > 0


def test_an_interrupted_run_is_shown_as_such(sandbox, servers, loopback, run_guarded, egress_bin):
    res = _blocked_run(run_guarded, servers, loopback)
    lines = res.report_path.read_text().splitlines(keepends=True)
    assert json.loads(lines[-1])["type"] == "summary"
    part = res.report_path.with_name("interrupted.jsonl")
    part.write_text("".join(lines[:-1]))
    out = subcommand(egress_bin, "report", part)
    assert out.returncode == 0, out.stderr
    assert "INTERRUPTED" in out.stdout
    got = json.loads(subcommand(egress_bin, "report", "--format", "json", part).stdout)
    assert got["files"][0]["complete"] is False and got["exit_code"] is None
    gh = subcommand(egress_bin, "report", "--format", "github", part).stdout
    assert "interrupted run" in gh


def test_unreadable_file_is_egress_runs_own_error(egress_bin, tmp_path):
    out = subcommand(egress_bin, "report", tmp_path / "missing.jsonl")
    assert out.returncode == 125
    assert out.stderr.startswith(f"egress-run: cannot read the report {tmp_path / 'missing.jsonl'}"), out.stderr
    out = subcommand(egress_bin, "report")
    assert out.returncode == 125 and "FILE" in out.stderr, out.stderr


# A suite that starts many local servers on ephemeral ports and talks to each.
MANY_SERVERS = """
import socket
socks = []
for _ in range(40):
    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); socks.append(s)
for s in socks:
    c = socket.socket(); c.connect(s.getsockname()); c.close()
"""


def test_many_loopback_ports_are_one_line_per_program_and_port_class(loopback, run_guarded, egress_bin):
    res = run_guarded(["--allow", "loopback"], py(MANY_SERVERS))
    assert res.returncode == 0, res.describe()
    assert res.count("connect", decision="allow") == 40
    ours = [l for l in res.stderr.splitlines() if l.startswith("  ")]
    assert len(ours) == 1, res.stderr
    assert "ephemeral ports (40 ports" in ours[0] and "python" in ours[0] and "x40" in ours[0], ours
    table = subcommand(egress_bin, "report", res.report_path).stdout
    assert "ephemeral ports (40 ports" in table, table


def test_colour_only_on_a_terminal_and_never_with_no_color(loopback, egress_bin, tmp_path):
    port = loopback.tcp1.port
    code = f"import socket\ntry: socket.create_connection(('127.0.0.1', {port}))\nexcept OSError: pass\n"

    def stderr_of(env, tty):
        argv = [str(egress_bin), "--", *py(code)]
        if not tty:
            return subprocess.run(argv, capture_output=True, text=True, env=guarded_env(env)).stderr
        master, slave = pty.openpty()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave,
                             env=guarded_env(env))
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        p.wait()
        os.close(master)
        return b"".join(chunks).decode()

    assert "\x1b[" in stderr_of({}, True)
    assert "\x1b[" not in stderr_of({"NO_COLOR": "1"}, True)
    assert "\x1b[" not in stderr_of({}, False)
    assert "DENIED" in stderr_of({"NO_COLOR": "1"}, True)


def test_unguarded_programs_are_listed(build_dir, run_guarded, egress_bin):
    # A 32-bit program: neither the library nor the kernel layer guards it (static ones now
    # run under the kernel layer).
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    src = build_dir / "report-m32.c"
    src.write_text('#include <stdio.h>\nint main(void){puts("hi");return 0;}\n')
    prog = build_dir / "report-m32"
    built = subprocess.run(["gcc", "-m32", "-O1", "-o", str(prog), str(src)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"gcc -m32 cannot build here: {built.stderr[:200]}")
    res = run_guarded(["--audit"], [prog])
    assert res.returncode == 0, res.describe()
    table = subcommand(egress_bin, "report", res.report_path).stdout
    assert "Programs the guard could not enter:" in table and f"{prog} ran unguarded" in table, table
    md = subcommand(egress_bin, "report", "--format", "markdown", res.report_path).stdout
    assert "ran unguarded" in md
    gh = subcommand(egress_bin, "report", "--format", "github", res.report_path).stdout
    assert any(l.startswith("::warning ") and "unguarded" in l for l in gh.splitlines()), gh
    allow = subcommand(egress_bin, "suggest", res.report_path).stdout
    assert f"# ran unguarded (block mode refuses it without --allow-unguarded): {prog}" in allow, allow
