"""Exit statuses: COMMAND's own, death by COMMAND's signal (128+N in the summary), 3, 125, 126, 127, and --exit-status command."""
import os
import signal

import pytest

from conftest import netprobe, py

MODES = {"block": [], "audit": ["--audit"]}


def summary_status(res):
    return res.summary.get("command_status", "absent")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", [0, 1, 2, 3, 42, 125, 126, 127, 255])
def test_command_status_passes_through(code, mode, run_guarded):
    res = run_guarded(MODES[mode], py(f"import sys; sys.exit({code})"))
    assert res.returncode == code, res.describe()
    assert res.summary["exit_code"] == code
    assert summary_status(res) in (code, "absent")
    assert res.summary["attempts"] == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1, signal.SIGABRT],
                         ids=lambda s: signal.Signals(s).name)
def test_killed_by_signal(sig, mode, run_guarded):
    code = ("import os, resource, signal\n"
            "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
            f"signal.signal({int(sig)}, signal.SIG_DFL) if {int(sig)} != signal.SIGKILL else None\n"
            f"os.kill(os.getpid(), {int(sig)})\n")
    res = run_guarded(MODES[mode], py(code))
    # CONTRACT Additions "Signals and exit status": egress-run dies of the same signal (the
    # first stage's exit 128+N is replaced); the summary still says 128+N.
    assert res.returncode == -sig, res.describe()
    assert res.summary["exit_code"] == 128 + sig
    assert summary_status(res) in (128 + sig, "absent")


@pytest.mark.parametrize("mode", MODES)
def test_command_not_found(mode, tmp_path, run_guarded):
    res = run_guarded(MODES[mode], ["egress-run-test-no-such-command"], env={"PATH": os.environ["PATH"]})
    assert res.returncode == 127, res.describe()
    assert "egress-run-test-no-such-command" in res.stderr
    assert res.summary["exit_code"] == 127
    assert summary_status(res) in (None, "absent")


@pytest.mark.parametrize("mode", MODES)
def test_command_path_not_found(mode, tmp_path, run_guarded):
    res = run_guarded(MODES[mode], [tmp_path / "nonexistent"])
    assert res.returncode == 127, res.describe()


@pytest.mark.parametrize("mode", MODES)
def test_command_not_executable(mode, tmp_path, run_guarded):
    f = tmp_path / "not-executable"
    f.write_text("#!/bin/sh\ntouch should-not-exist\n")
    f.chmod(0o644)
    res = run_guarded(MODES[mode], [f], cwd=tmp_path)
    assert res.returncode == 126, res.describe()
    assert not (tmp_path / "should-not-exist").exists()
    assert res.summary["exit_code"] == 126


def test_command_is_a_directory(tmp_path, run_guarded):
    res = run_guarded([], [tmp_path])
    assert res.returncode == 126, res.describe()


def test_command_looked_up_in_path(tmp_path, run_guarded):
    d = tmp_path / "bin"
    d.mkdir()
    (d / "egress-test-tool").write_text("#!/bin/sh\nexit 9\n")
    (d / "egress-test-tool").chmod(0o755)
    res = run_guarded([], ["egress-test-tool"], env={"PATH": f"{d}:{os.environ['PATH']}"})
    assert res.returncode == 9, res.describe()


@pytest.mark.parametrize("where", ["missing-dir", "is-a-dir"])
def test_report_not_writable(where, tmp_path, run_guarded):
    marker = tmp_path / "started"
    path = tmp_path / "no" / "such" / "dir" / "r.jsonl" if where == "missing-dir" else tmp_path
    res = run_guarded(["--report", path], py(f"open({str(marker)!r}, 'w')"), report=False)
    assert res.returncode == 125, res.describe()
    assert res.stderr.startswith("egress-run: "), res.describe()
    assert not marker.exists(), "COMMAND was started although the report cannot be written"


def test_library_missing_is_125(egress_bin, tmp_path):
    """A copy of egress-run without its library next to it must refuse to run."""
    import shutil
    lone = tmp_path / "lone" / "egress-run"
    lone.parent.mkdir()
    shutil.copy2(egress_bin, lone)
    marker = tmp_path / "started"
    import subprocess
    p = subprocess.run([lone, "--", *py(f"open({str(marker)!r}, 'w')")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 125, (p.returncode, p.stderr)
    assert not marker.exists()


def test_denial_with_exit_0_is_3_in_block_mode(loopback, run_guarded):
    res = run_guarded([], netprobe(f"connect=127.0.0.1,{loopback.tcp1.port}"))
    assert res.returncode == 3, res.describe()
    assert res.summary["exit_code"] == 3
    assert summary_status(res) in (0, "absent")


def test_denial_with_exit_0_and_exit_status_command_is_0(loopback, run_guarded):
    res = run_guarded(["--exit-status", "command"], netprobe(f"connect=127.0.0.1,{loopback.tcp1.port}"))
    assert res.returncode == 0, res.describe()
    assert res.summary["denied"] == 1
    assert res.attempts("connect", decision="deny")


def test_denial_with_nonzero_exit_keeps_the_command_status(loopback, run_guarded):
    res = run_guarded([], netprobe(f"connect=127.0.0.1,{loopback.tcp1.port}", exit_code=5))
    assert res.returncode == 5, res.describe()
    assert res.outputs()[0]["errno"] == 13 and res.attempts("connect", decision="deny"), res.describe()
    assert res.summary.get("command_status", 5) == 5
    res = run_guarded(["--exit-status", "command"], netprobe(f"connect=127.0.0.1,{loopback.tcp1.port}", exit_code=5))
    assert res.returncode == 5, res.describe()


def test_denial_in_audit_mode_is_0(loopback, run_guarded):
    res = run_guarded(["--audit"], netprobe(f"connect=127.0.0.1,{loopback.tcp1.port}"))
    assert res.returncode == 0, res.describe()
    assert res.summary["denied"] == 1


def test_bad_option_is_125(tmp_path, run_guarded):
    marker = tmp_path / "started"
    res = run_guarded(["--no-such-option"], py(f"open({str(marker)!r}, 'w')"), report=False)
    assert res.returncode == 125, res.describe()
    assert not marker.exists()
    res = run_guarded(["--mode", "permissive"], py(f"open({str(marker)!r}, 'w')"), report=False)
    assert res.returncode == 125, res.describe()
    assert not marker.exists()


def test_options_after_command_belong_to_it(run_guarded):
    res = run_guarded([], py("import sys; print(sys.argv[1:])") + ["--allow", "x", "--audit"], dashdash=False)
    assert res.returncode == 0, res.describe()
    assert res.stdout.strip() == "['--allow', 'x', '--audit']"
    assert res.run_line["mode"] == "block"
