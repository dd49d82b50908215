"""An egress-run inside a guarded tree can only narrow: an attempt passes only if every level
allows it (inner first), each run's report records its own tree, and a line says which level
refused the call (`denied_by`: that run's launcher pid) and what every level decided (`chain`)."""
import json

import pytest

from conftest import ALLOWED_IP, OTHER_IP, PYTHON, finish, guarded_env, load_report, spawn

EACCES = 13
A = f"{ALLOWED_IP}:5432"
B = f"{OTHER_IP}:5432"
C = f"{ALLOWED_IP}:80"


def connects(*targets):
    """Python code that connects to each ADDR:PORT and prints 'ok' or the errno, one per line."""
    pairs = [(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in targets]
    return [PYTHON, "-c",
            "import socket\n"
            f"for a, p in {pairs!r}:\n"
            "    s = socket.socket()\n"
            "    try:\n"
            "        s.connect((a, p)); print('ok')\n"
            "    except OSError as e:\n"
            "        print('errno', e.errno)\n"
            "    s.close()\n"]


def nest(egress_bin, tmp_path, levels, cmd):
    """argv of `levels` nested egress-runs (outermost first), each with its rules and report."""
    argv, reports = [], []
    for i, rules in enumerate(levels):
        report = tmp_path / f"level{i}.jsonl"
        reports.append(report)
        argv += [str(egress_bin), "--report", str(report)]
        for r in rules:
            argv += ["--allow", r]
        argv.append("--")
    return argv + cmd, reports


def run_line(lines):
    return lines[0]


def connect_line(lines, target):
    addr, port = target.rsplit(":", 1)
    found = [o for o in lines if o["type"] == "connect" and o["addr"] == addr and o["port"] == int(port)]
    assert len(found) == 1, "\n".join(map(json.dumps, lines))
    return found[0]


def launcher_pids(lines):
    """The pid of every egress-run process in a report (its process lines), in start order."""
    return [o["pid"] for o in lines if o["type"] == "process" and o["exe"].endswith("/egress-run")]


def run_nested(egress_bin, tmp_path, levels, targets):
    argv, reports = nest(egress_bin, tmp_path, levels, connects(*targets))
    p = spawn(argv, env=guarded_env())
    out, err = finish(p)
    return p.returncode, out, err, [load_report(r) for r in reports]


def test_outer_allows_a_inner_allows_b_both_denied(sandbox, servers, egress_bin, tmp_path):
    before = {ip: servers.tcp[ip].count() for ip in (ALLOWED_IP, OTHER_IP)}
    code, out, err, (outer, inner) = run_nested(egress_bin, tmp_path, [[A], [B]], [A, B])
    assert out == f"errno {EACCES}\nerrno {EACCES}\n", err
    assert {ip: servers.tcp[ip].count() for ip in before} == before, "a refused connect got through"
    outer_pid, inner_pid = run_line(outer)["launcher_pid"], run_line(inner)["launcher_pid"]
    assert launcher_pids(outer) == [inner_pid], "the inner launcher is a guarded process of the outer run"
    # A: the outer run allowed it, the inner refused it; B: the other way round.
    a_in, b_in = connect_line(inner, A), connect_line(inner, B)
    a_out, b_out = connect_line(outer, A), connect_line(outer, B)
    assert (a_in["decision"], a_in["denied_by"]) == ("deny", inner_pid)
    assert (b_in["decision"], b_in["denied_by"]) == ("allow", outer_pid)
    assert (a_out["decision"], a_out["denied_by"]) == ("allow", inner_pid)
    assert (b_out["decision"], b_out["denied_by"]) == ("deny", outer_pid)
    for line in (a_in, a_out):
        assert line["chain"] == [{"run": inner_pid, "decision": "deny", "enforced": True},
                                 {"run": outer_pid, "decision": "allow", "enforced": True}]
    # Each run counts its own denials: both exit 3 (the inner one's status passes through).
    assert code == 3, err
    assert (run_line(outer)["mode"], outer[-1]["denied"], inner[-1]["denied"]) == ("block", 1, 1)


def test_inner_narrows_what_the_outer_allows(sandbox, servers, egress_bin, tmp_path):
    before = servers.tcp[OTHER_IP].count()
    code, out, err, (outer, inner) = run_nested(egress_bin, tmp_path, [[A, B], [A]], [A, B])
    assert out == f"ok\nerrno {EACCES}\n", err
    assert servers.tcp[OTHER_IP].count() == before
    inner_pid = run_line(inner)["launcher_pid"]
    for lines, decision in ((inner, "deny"), (outer, "allow")):
        b = connect_line(lines, B)
        assert (b["decision"], b["denied_by"]) == (decision, inner_pid), "\n".join(map(json.dumps, lines))
        a = connect_line(lines, A)
        assert a["decision"] == "allow" and "denied_by" not in a
    assert outer[-1]["denied"] == 0 and inner[-1]["denied"] == 1
    # The inner launcher is a guarded process of the outer run, and its start-up made no
    # attempt and no noise: the one denial line on stderr is the inner run's, for B.
    assert not [o for o in outer if o["type"] in ("connect", "send", "resolve") and o["pid"] == inner_pid]
    assert [l for l in err.splitlines() if "denied " in l] == [
        l for l in err.splitlines() if l.startswith(f"egress-run: denied connect to {OTHER_IP}:5432")], err
    assert len([l for l in err.splitlines() if "denied " in l]) == 1, err


def test_three_levels(sandbox, servers, egress_bin, tmp_path):
    code, out, err, (top, middle, inner) = run_nested(
        egress_bin, tmp_path, [[A, B, C], [A, B], [A]], [A, B, C])
    assert out == f"ok\nerrno {EACCES}\nerrno {EACCES}\n", err
    pids = [run_line(r)["launcher_pid"] for r in (inner, middle, top)]
    for lines in (top, middle, inner):
        assert "denied_by" not in connect_line(lines, A)
        assert connect_line(lines, B)["denied_by"] == pids[0]
        c = connect_line(lines, C)
        assert c["denied_by"] == pids[0]  # the innermost refusing level is named
        assert [(x["run"], x["decision"]) for x in c["chain"]] == \
            [(pids[0], "deny"), (pids[1], "deny"), (pids[2], "allow")]
    assert [r[-1]["denied"] for r in (top, middle, inner)] == [0, 1, 2]


def test_inner_audit_cannot_pass_the_outer_block(sandbox, servers, egress_bin, tmp_path):
    before = servers.tcp[OTHER_IP].count()
    outer_r, inner_r = tmp_path / "o.jsonl", tmp_path / "i.jsonl"
    argv = [str(egress_bin), "--report", str(outer_r), "--allow", A, "--",
            str(egress_bin), "--audit", "--report", str(inner_r), "--", *connects(A, B)]
    p = spawn(argv, env=guarded_env())
    out, err = finish(p)
    assert out == f"ok\nerrno {EACCES}\n", err
    assert servers.tcp[OTHER_IP].count() == before
    outer, inner = load_report(outer_r), load_report(inner_r, mode="audit")
    b = connect_line(inner, B)
    assert (b["decision"], b["enforced"], b["denied_by"]) == ("deny", False, run_line(outer)["launcher_pid"])


@pytest.mark.parametrize("how", ["scrubbed", "outer level dropped"])
def test_a_child_keeps_every_level(how, sandbox, servers, egress_bin, tmp_path):
    """A grandchild started with an empty environment, or with the outer level cut from the
    locator, is still held to both levels (the exec hooks put the whole chain back)."""
    inner_child = connects(A, B)
    if how == "scrubbed":
        code = f"import subprocess; subprocess.run({inner_child!r}, env={{}})"
    else:
        code = ("import os, subprocess\n"
                "env = dict(os.environ)\n"
                "env['EGRESS_RUN_POLICY'] = env['EGRESS_RUN_POLICY'].split(';')[0]\n"
                f"subprocess.run({inner_child!r}, env=env)\n")
    before = servers.tcp[OTHER_IP].count()
    argv, reports = nest(egress_bin, tmp_path, [[A], [A, B]], [PYTHON, "-c", code])
    p = spawn(argv, env=guarded_env())
    out, err = finish(p)
    assert out == f"ok\nerrno {EACCES}\n", err
    assert servers.tcp[OTHER_IP].count() == before
    outer, inner = (load_report(r) for r in reports)
    assert connect_line(inner, B)["denied_by"] == run_line(outer)["launcher_pid"]
