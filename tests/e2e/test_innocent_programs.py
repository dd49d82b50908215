"""Innocent programs must not notice the guard (HAZARDS "Innocent programs the guard can break"):

- secure execution is decided by credentials, as the kernel does, not by mode bits: root running a
  root-owned setuid program keeps LD_PRELOAD, so it runs guarded; a setuid program owned by
  another user is still refused;
- `ld.so` run directly (what `ldd` does) loads the program it is given, preload first: it is as
  guardable as that program.
(AddressSanitizer builds: test_sanitizers.py.)

Loopback only: every connect goes to a listener on 127.0.0.1."""
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import PROGS, RUN_CHILD, RUN_CHILD_SCRUBBED, assert_guarded_connect, py, unguarded_lines

EACCES = 13
LOADER = Path("/lib64/ld-linux-x86-64.so.2")


def _build(build_dir, name, flags):
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    out = build_dir / name
    if not out.exists():
        r = subprocess.run(["gcc", "-O1", *flags, "-o", str(out), str(PROGS / "lconnect.c")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"gcc {' '.join(flags)} cannot build here: {r.stderr.strip()[:200]}")
    return out


def _setuid_copy(build_dir, name, owner):
    if os.geteuid() != 0:
        pytest.skip("needs root (to own a setuid file by root and by another user)")
    if os.statvfs(build_dir).f_flag & os.ST_NOSUID:
        pytest.skip(f"{build_dir} is on a nosuid mount: setuid bits are ignored there")
    prog = build_dir / name
    shutil.copy(_build(build_dir, "lconnect", []), prog)
    os.chown(prog, owner, 0)
    prog.chmod(0o755 | stat.S_ISUID)
    return prog


@pytest.fixture(scope="module")
def plain_prog(build_dir):
    return _build(build_dir, "lconnect", [])


@pytest.fixture(scope="module")
def static_prog(build_dir):
    return _build(build_dir, "lconnect-static", ["-static"])


@pytest.fixture(scope="module")
def setuid_root(build_dir):
    return _setuid_copy(build_dir, "lconnect-setuid-root", 0)


@pytest.fixture(scope="module")
def setuid_nobody(build_dir):
    return _setuid_copy(build_dir, "lconnect-setuid-nobody", 65534)


# ---- secure execution, decided by credentials


def test_setuid_root_program_run_by_root_is_guarded(setuid_root, loopback, run_guarded):
    res = run_guarded(["--allow", "loopback"], [setuid_root, loopback.tcp1.port])
    assert_guarded_connect(res, loopback.tcp1.port, setuid_root)


def test_setuid_root_program_deep_in_the_tree_is_guarded(setuid_root, loopback, run_guarded):
    res = run_guarded(["--allow", "loopback"], py(RUN_CHILD) + [setuid_root, loopback.tcp1.port])
    assert "connect 0 status 0" in res.stdout, res.describe()
    assert_guarded_connect(res, loopback.tcp1.port, setuid_root)


def test_setuid_program_of_another_user_is_still_refused(setuid_nobody, run_guarded):
    # Root running a program owned by uid 65534 with the setuid bit: the effective uid changes,
    # the kernel asks for secure execution, the loader ignores LD_PRELOAD.
    res = run_guarded([], [setuid_nobody, "1"])
    assert res.returncode == 126, res.describe()
    lines = unguarded_lines(res)
    assert len(lines) == 1 and "setuid" in lines[0]["reason"] and lines[0]["refused"], res.describe()
    res = run_guarded([], py(RUN_CHILD) + [setuid_nobody, "1"])
    assert f"status 126" in res.stdout or "Permission denied" in res.stdout + res.stderr, res.describe()
    assert len(unguarded_lines(res)) == 1 and res.returncode != 0, res.describe()


# ---- the loader run directly


def test_ldd_lists_the_libraries(run_guarded):
    if not shutil.which("ldd"):
        pytest.skip("ldd is not installed")
    res = run_guarded([], ["ldd", "/bin/true"])
    assert res.returncode == 0, res.describe()
    assert "libc.so.6" in res.stdout and "not a dynamic executable" not in res.stdout, res.describe()
    assert [p for p in unguarded_lines(res) if p["refused"]] == [], res.describe()


@pytest.mark.parametrize("how", ["command", "child"])
def test_loader_list_mode(how, run_guarded):
    if not LOADER.exists():
        pytest.skip(f"{LOADER} is not this machine's loader")
    cmd = [LOADER, "--list", "/bin/true"]
    res = run_guarded([], cmd if how == "command" else py(RUN_CHILD) + cmd)
    assert res.returncode == 0, res.describe()
    assert "libc.so.6" in res.stdout, res.describe()
    assert [p for p in unguarded_lines(res) if p["refused"]] == [], res.describe()


@pytest.mark.parametrize("how", ["command", "child", "scrubbed-child"])
def test_loader_run_directly_runs_the_program_guarded(how, plain_prog, loopback, run_guarded):
    if not LOADER.exists():
        pytest.skip(f"{LOADER} is not this machine's loader")
    cmd = [LOADER, plain_prog, loopback.tcp1.port]
    wrap = {"command": [], "child": py(RUN_CHILD), "scrubbed-child": py(RUN_CHILD_SCRUBBED)}[how]
    res = run_guarded(["--allow", "loopback"], wrap + cmd)
    assert_guarded_connect(res, loopback.tcp1.port)


def test_loader_running_a_static_program_is_checked_by_the_kernel_layer(static_prog, run_guarded):
    # ld.so run on a static program: judged by that program, which runs under the kernel
    # layer: its connect is denied there.
    if not LOADER.exists():
        pytest.skip(f"{LOADER} is not this machine's loader")
    res = run_guarded([], [LOADER, static_prog, "1"])
    assert res.stdout == "connect 13\n", res.describe()
    lines = [p for p in res.lines("process") if p.get("layer") == "kernel"]
    assert len(lines) == 1 and "statically linked" in lines[0]["reason"], res.describe()
    assert [(a["decision"], a["layer"]) for a in res.attempts("connect")] == [("deny", "kernel")], res.describe()