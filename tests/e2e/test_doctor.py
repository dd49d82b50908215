"""`egress-run doctor` on this machine, and with a broken install (library missing, or of
another version); `--version` names the library's version."""
import shutil

from workflow import subcommand


def test_doctor_says_the_guard_works_here(egress_bin):
    out = subcommand(egress_bin, "doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    checks = {l.split()[1]: l.split()[0] for l in lines[1:] if l[:4] in ("ok  ", "warn", "FAIL")}
    assert checks["library"] == "ok" and checks["preload"] == "ok", out.stdout
    assert {"kernel", "userns"} <= set(checks), out.stdout
    assert "refused (EACCES)" in out.stdout, "the guarded probe's connect was refused"
    assert "WAIT_KILLABLE_RECV" in out.stdout and "pidfd_getfd" in out.stdout and "ADDFD" in out.stdout
    assert lines[-1] == "verdict: egress-run can guard programs here"


def test_doctor_fails_without_the_library(egress_bin, tmp_path):
    lonely = tmp_path / "egress-run"
    shutil.copy(egress_bin, lonely)
    out = subcommand(lonely, "doctor")
    assert out.returncode == 1, out.stdout
    assert "FAIL  library" in out.stdout and "missing" in out.stdout, out.stdout
    assert "-> reinstall egress-run" in out.stdout, "says what to do"
    assert "cannot guard" in out.stdout.splitlines()[-1]


def test_doctor_fails_with_a_library_of_another_version(egress_bin, preload_lib, tmp_path):
    shutil.copy(egress_bin, tmp_path / "egress-run")
    data = preload_lib.read_bytes()
    mark = b"EGRESS_RUN_LIBRARY_VERSION="
    at = data.index(mark) + len(mark)
    end = data.index(b"\0", at)
    other = b"9" * (end - at)
    (tmp_path / preload_lib.name).write_bytes(data[:at] + other + data[end:])
    out = subcommand(tmp_path / "egress-run", "doctor")
    assert out.returncode == 1, out.stdout
    assert f"is version {other.decode()}" in out.stdout, out.stdout
    version = subcommand(tmp_path / "egress-run", "--version").stdout
    assert f"library {other.decode()}" in version


def test_version_names_the_library(egress_bin, preload_lib):
    out = subcommand(egress_bin, "--version")
    assert out.returncode == 0
    first, second = out.stdout.splitlines()
    assert first.startswith("egress-run ")
    version = first.split()[1]
    assert second == f"library {version} ({preload_lib})", out.stdout


def test_a_program_named_doctor_needs_double_dash(run_guarded, tmp_path):
    res = run_guarded(["--allow", "loopback"], ["doctor"], report=False, dashdash=False)
    assert res.returncode == 125 and "egress-run -- doctor" in res.stderr, res.describe()
