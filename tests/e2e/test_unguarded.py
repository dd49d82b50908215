"""Unguarded programs (CONTRACT "Unguarded programs"): programs the library cannot enter are found
before they run, as COMMAND and deep in the tree. Static and musl programs run under the kernel
layer instead (CONTRACT Additions, "The kernel layer"; their network calls: test_kernel_layer.py).
The others (setuid, 32-bit) are refused in block mode (126, or EACCES from the inner exec), run
and reported in audit mode or with --allow-unguarded. Loopback-only: nothing here sends
anywhere."""
import os
import shutil
import stat
import subprocess

import pytest

from conftest import PYTHON, layered_lines, py, unguarded_lines

EACCES = 13
HELLO = '#include <stdio.h>\nint main(void){puts("unguarded ran");return 0;}\n'


def _cc(build_dir, name, flags, cc="gcc"):
    if not shutil.which(cc):
        pytest.skip(f"{cc} is not installed")
    src = build_dir / f"{name}.c"
    src.write_text(HELLO)
    out = build_dir / name
    r = subprocess.run([cc, *flags, "-o", str(out), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"{cc} {' '.join(flags)} cannot build here: {r.stderr.strip()[:200]}")
    return out


@pytest.fixture(scope="module")
def static_prog(build_dir):
    return _cc(build_dir, "hello-static", ["-static", "-O1"])


@pytest.fixture(scope="module")
def setuid_prog(build_dir):
    # Secure execution needs the effective uid to change: a setuid file owned by someone else
    # (root running a root-owned setuid program keeps LD_PRELOAD: test_innocent_programs.py).
    prog = _cc(build_dir, "hello-setuid", ["-O1"])
    if os.geteuid() == 0:
        os.chown(prog, 65534, -1)
    elif prog.stat().st_uid == os.geteuid():
        pytest.skip("a setuid file of one's own does not change the effective uid")
    prog.chmod(prog.stat().st_mode | stat.S_ISUID)
    if os.statvfs(prog).f_flag & os.ST_NOSUID:
        pytest.skip(f"{prog.parent} is on a nosuid mount: setuid bits are ignored there")
    return prog


@pytest.fixture(scope="module")
def musl_prog(build_dir):
    return _cc(build_dir, "hello-musl", ["-O1"], cc="musl-gcc")


@pytest.fixture(scope="module")
def m32_prog(build_dir):
    return _cc(build_dir, "hello-m32", ["-m32", "-O1"])


@pytest.fixture(scope="module")
def static_interp_script(build_dir, static_prog):
    script = build_dir / "via-static-interpreter"
    script.write_text(f"#!{static_prog}\n")
    script.chmod(0o755)
    return script


# Programs neither the library nor the kernel layer can guard.
KINDS = {
    "setuid": ("setuid_prog", "setuid"),
    "32-bit": ("m32_prog", "32-bit"),
}

# Programs the library cannot enter that run under the kernel layer.
LAYERED = {
    "static": ("static_prog", "statically linked"),
    "musl": ("musl_prog", "musl"),
    "script-with-static-interpreter": ("static_interp_script", "statically linked"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_unguarded_command_is_refused_in_block_mode(kind, request, run_guarded):
    fixture, why = KINDS[kind]
    prog = request.getfixturevalue(fixture)
    res = run_guarded([], [prog])
    assert res.returncode == 126, res.describe()
    assert "unguarded ran" not in res.stdout, "the refused program ran"
    assert "refused to run" in res.stderr and "--allow-unguarded" in res.stderr, res.describe()
    lines = unguarded_lines(res)
    assert len(lines) == 1 and why in lines[0]["reason"] and lines[0]["refused"] is True, res.describe()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", [["--audit"], ["--allow-unguarded"]])
def test_unguarded_command_runs_and_is_reported(kind, how, request, run_guarded):
    fixture, why = KINDS[kind]
    prog = request.getfixturevalue(fixture)
    res = run_guarded(how, [prog])
    assert res.returncode == 0, res.describe()
    assert res.stdout == "unguarded ran\n", res.describe()
    lines = unguarded_lines(res)
    assert len(lines) == 1 and why in lines[0]["reason"] and lines[0]["refused"] is False, res.describe()
    assert lines[0]["pid"] > 0


CHILD = ("import subprocess, sys\n"
         "try:\n"
         "    r = subprocess.run([sys.argv[1]], capture_output=True, text=True)\n"
         "    print('child ran', r.returncode, r.stdout.strip())\n"
         "except PermissionError as e:\n"
         "    print('child refused', e.errno)\n")


@pytest.mark.parametrize("kind", LAYERED)
@pytest.mark.parametrize("how", [[], ["--audit"], ["--allow-unguarded"]])
def test_static_command_runs_under_the_kernel_layer(kind, how, request, run_guarded):
    fixture, why = LAYERED[kind]
    prog = request.getfixturevalue(fixture)
    res = run_guarded(how, [prog])
    assert res.returncode == 0 and res.stdout == "unguarded ran\n", res.describe()
    assert unguarded_lines(res) == [], res.describe()
    lines = layered_lines(res)
    assert len(lines) == 1 and why in lines[0]["reason"] and lines[0]["guarded"] is True, res.describe()
    assert lines[0]["pid"] > 0


@pytest.mark.parametrize("kind", ["static", "musl"])
@pytest.mark.parametrize("mode", ["block", "audit"])
def test_static_program_deep_in_the_tree_runs_under_the_kernel_layer(mode, kind, request, run_guarded):
    # musl: its loader fails on a glibc library in LD_PRELOAD, so the exec hook removes the
    # library from its environment.
    fixture, why = LAYERED[kind]
    prog = request.getfixturevalue(fixture)
    args = [] if mode == "block" else ["--audit"]
    res = run_guarded(args, py(CHILD) + [prog])
    assert res.stdout == "child ran 0 unguarded ran\n", res.describe()
    assert res.returncode == 0 and unguarded_lines(res) == [], res.describe()
    lines = layered_lines(res)
    assert len(lines) == 1 and lines[0]["exe"] == str(prog) and why in lines[0]["reason"], res.describe()


@pytest.mark.parametrize("mode", ["block", "audit"])
def test_unguarded_program_deep_in_the_tree(mode, m32_prog, run_guarded):
    args = [] if mode == "block" else ["--audit"]
    res = run_guarded(args, py(CHILD) + [m32_prog])
    lines = unguarded_lines(res)
    assert len(lines) == 1 and lines[0]["exe"] == str(m32_prog), res.describe()
    assert "32-bit" in lines[0]["reason"]
    if mode == "block":
        assert res.stdout == f"child refused {EACCES}\n", res.describe()
        assert lines[0]["refused"] is True
        assert res.returncode == 3, res.describe()  # a refusal fails the gate like a denial
    else:
        assert res.stdout == "child ran 0 unguarded ran\n", res.describe()
        assert lines[0]["refused"] is False
        assert res.returncode == 0, res.describe()


def test_static_program_through_a_shell_and_path_search(static_prog, run_guarded):
    # sh finds the program in PATH itself (execve of each candidate), env(1) uses execvp.
    env = {"PATH": f"{static_prog.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    res = run_guarded([], ["sh", "-c", f"{static_prog.name}; echo sh=$?; env {static_prog.name}; echo env=$?"], env=env)
    assert res.stdout == "unguarded ran\nsh=0\nunguarded ran\nenv=0\n", res.describe()
    assert unguarded_lines(res) == [] and len(layered_lines(res)) == 2, res.describe()


def test_unguarded_program_through_a_shell_and_path_search(m32_prog, run_guarded):
    env = {"PATH": f"{m32_prog.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    res = run_guarded([], ["sh", "-c", f"{m32_prog.name}; echo sh=$?; env {m32_prog.name}; echo env=$?"], env=env)
    assert "unguarded ran" not in res.stdout, res.describe()
    assert "sh=126" in res.stdout and "env=126" in res.stdout, res.describe()
    assert len([p for p in unguarded_lines(res) if p["refused"]]) == 2, res.describe()


def test_dynamic_programs_are_not_flagged(run_guarded):
    res = run_guarded([], ["sh", "-c", "true"])
    assert res.returncode == 0 and unguarded_lines(res) == [], res.describe()
