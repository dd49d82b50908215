"""The launcher, rebuilt to cut its start-up cost (one poll loop, posix_spawnp, batched reads):
what it must still do, whatever its parent left behind."""
import json
import subprocess

from conftest import RUN_TIMEOUT, guarded_env, py


def test_ignored_sigchld_inherited_from_the_parent(egress_bin, tmp_path):
    """An ignored SIGCHLD survives exec; the kernel would then reap COMMAND without telling
    the launcher. It must still return COMMAND's status and write the report."""
    report = tmp_path / "r.jsonl"
    # (A shell's `trap "" CHLD` does not reach exec'd programs in dash: set SIG_IGN directly.)
    parent = ("import os, signal, sys\n"
              "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
              "os.execv(sys.argv[1], sys.argv[1:])")
    argv = py(parent) + [str(egress_bin), "--report", str(report), "--", "sh", "-c", "exit 7"]
    p = subprocess.run(argv, env=guarded_env(None), capture_output=True, text=True,
                       timeout=RUN_TIMEOUT)
    assert p.returncode == 7, (p.returncode, p.stderr)
    summary = json.loads(report.read_text().splitlines()[-1])
    assert (summary["type"], summary["exit_code"]) == ("summary", 7), summary


def test_many_short_processes_are_all_counted(run_guarded):
    """Batched reads: a burst of short-lived processes, each with its own check-in, is
    counted in full (the queue holds only a few datagrams; senders wait, nothing is lost)."""
    code = "import subprocess\nfor _ in range(60): subprocess.run(['/bin/true'])"
    res = run_guarded(["--allow", "loopback"], py(code))
    assert res.returncode == 0, res.describe()
    assert res.summary["processes"] == 61, res.describe()
