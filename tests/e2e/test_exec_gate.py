"""The exec gate's harder cases: programs the library cannot enter must be found however they
are started: a relative program spawned after a posix_spawn file action changed the child's
working directory, `#!` chains several interpreters deep, execute-only files (which cannot be
read to check them), and Go programs without a build-id note. Loopback only: nothing here sends
anywhere."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import PROGS, finish, guarded_env, layered_lines, load_report, spawn, unguarded_lines

EACCES = 13
HELLO = '#include <stdio.h>\nint main(void){puts("unguarded ran");return 0;}\n'


def _cc(build_dir, name, flags):
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    src = build_dir / f"{name}.c"
    src.write_text(HELLO)
    out = build_dir / name
    r = subprocess.run(["gcc", *flags, "-o", str(out), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"gcc {' '.join(flags)} cannot build here: {r.stderr.strip()[:200]}")
    return out


@pytest.fixture(scope="module")
def static_prog(build_dir):
    return _cc(build_dir, "gate-static", ["-static", "-O1"])


@pytest.fixture(scope="module")
def dynamic_prog(build_dir):
    return _cc(build_dir, "gate-dynamic", ["-O1"])


# ---- posix_spawn after a file action that changes the child's working directory


@pytest.fixture(scope="module")
def spawn_chdir(compile_c):
    return compile_c(PROGS / "spawn_chdir.c", "spawn_chdir")


@pytest.mark.parametrize("mode", ["block", "audit"])
@pytest.mark.parametrize("how", ["chdir", "fchdir", "chdir-p"])
def test_relative_program_after_a_chdir_action_runs_under_the_kernel_layer(how, mode, spawn_chdir, static_prog,
                                                                            run_guarded):
    # The parent's directory has no such file: only the child's directory has it. Found there,
    # it is spawned through the trampoline (which makes the same chdir) under the kernel layer.
    args = [] if mode == "block" else ["--audit"]
    res = run_guarded(args, [spawn_chdir, how, static_prog.parent, static_prog.name], cwd="/")
    assert res.stdout == "unguarded ran\nchild ran 0\n", res.describe()
    assert unguarded_lines(res) == [] and res.returncode == 0, res.describe()
    lines = layered_lines(res)
    assert len(lines) == 1 and "statically linked" in lines[0]["reason"], res.describe()
    assert lines[0]["exe"].endswith("gate-static"), res.describe()


@pytest.mark.parametrize("how", ["chdir", "fchdir", "chdir-p"])
def test_relative_program_after_a_chdir_action_is_refused_without_the_layer(how, spawn_chdir, static_prog,
                                                                             egress_bin, tmp_path):
    # Under an outer --seccomp run the inner run's layer is unavailable: the spawn is refused
    # at once, saying why.
    inner = tmp_path / "inner.jsonl"
    argv = [egress_bin, "--seccomp", "--audit", "--",
            egress_bin, "--report", inner, "--", spawn_chdir, how, static_prog.parent, static_prog.name]
    p = spawn(argv, env=guarded_env(), cwd="/")
    out, err = finish(p)
    assert out == f"spawn refused {EACCES}\n" and p.returncode == 3, (p.returncode, out, err)
    [line] = [o for o in load_report(inner) if o["type"] == "process" and o["guarded"] is False]
    assert line["refused"] is True and "statically linked" in line["reason"], line
    assert "another seccomp listener" in line["reason"], line


@pytest.mark.parametrize("how", ["chdir", "fchdir", "chdir-p"])
def test_guardable_relative_program_after_a_chdir_action_runs(how, spawn_chdir, dynamic_prog, run_guarded):
    res = run_guarded([], [spawn_chdir, how, dynamic_prog.parent, dynamic_prog.name], cwd="/")
    assert res.stdout == "unguarded ran\nchild ran 0\n", res.describe()
    assert unguarded_lines(res) == [] and res.returncode == 0, res.describe()


def test_child_directory_that_cannot_be_determined_fails_closed(spawn_chdir, dynamic_prog, run_guarded):
    # fchdir to a descriptor that only the child's file actions open: the gate cannot know the
    # directory, so block mode refuses rather than guess.
    res = run_guarded([], [spawn_chdir, "open-fchdir", dynamic_prog.parent, dynamic_prog.name], cwd="/")
    assert res.stdout == f"spawn refused {EACCES}\n", res.describe()
    lines = unguarded_lines(res)
    assert len(lines) == 1 and "working directory" in lines[0]["reason"] and lines[0]["refused"], res.describe()


# ---- #! chains


@pytest.fixture(scope="module")
def script_chain(build_dir, static_prog):
    """chain-a -> #!chain-b -> #!chain-c -> #!static program: three scripts deep."""
    c = build_dir / "chain-c"
    c.write_text(f"#!{static_prog}\n")
    b = build_dir / "chain-b"
    b.write_text(f"#!{c}\n")
    a = build_dir / "chain-a"
    a.write_text(f"#!{b} -x\n")
    for s in (a, b, c):
        s.chmod(0o755)
    return a


def test_script_chain_command_runs_under_the_kernel_layer(script_chain, run_guarded):
    res = run_guarded([], [script_chain])
    assert res.returncode == 0 and res.stdout == "unguarded ran\n", res.describe()
    lines = layered_lines(res)
    assert len(lines) == 1 and "statically linked" in lines[0]["reason"], res.describe()
    assert unguarded_lines(res) == [], res.describe()


def test_script_chain_in_the_tree_runs_under_the_kernel_layer(script_chain, run_guarded):
    res = run_guarded([], ["sh", "-c", f"{script_chain}; echo sh=$?"])
    assert res.stdout == "unguarded ran\nsh=0\n", res.describe()
    assert unguarded_lines(res) == [] and len(layered_lines(res)) == 1, res.describe()


def test_script_chain_runs_in_audit_mode(script_chain, run_guarded):
    res = run_guarded(["--audit"], [script_chain])
    assert res.returncode == 0 and res.stdout == "unguarded ran\n", res.describe()
    lines = layered_lines(res)
    assert len(lines) == 1 and "statically linked" in lines[0]["reason"], res.describe()


# ---- execute-only files (mode 0111): checked as an unprivileged user, since root reads anything

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def shared_dir():
    """A directory the unprivileged user can use (pytest's own temp dirs are root's only)."""
    d = Path(tempfile.mkdtemp(prefix="egress-exec-gate-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def exec_only(shared_dir, static_prog):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv(1) to run a check as an unprivileged user")
    prog = shared_dir / "exec-only"
    shutil.copyfile(static_prog, prog)
    prog.chmod(0o111)
    return prog


def run_as_nobody(egress_bin, shared_dir, args, cmd):
    report = shared_dir / "report.jsonl"
    argv = [*NOBODY, str(egress_bin), *args, "--report", str(report), "--", *map(str, cmd)]
    p = spawn(argv, env=guarded_env(), cwd=shared_dir)
    out, err = finish(p)
    mode = "audit" if "--audit" in args else "block"
    lines = load_report(report, p.returncode, mode) if report.exists() else []
    return p.returncode, out, err, [x for x in lines if x.get("type") == "process" and x["guarded"] is False]


def test_execute_only_command_is_refused(egress_bin, shared_dir, exec_only):
    rc, out, err, lines = run_as_nobody(egress_bin, shared_dir, [], [exec_only])
    assert rc == 126 and "unguarded ran" not in out, (rc, out, err)
    assert "cannot be read to check it" in err, err
    assert len(lines) == 1 and "cannot be read to check it" in lines[0]["reason"] and lines[0]["refused"], lines


def test_execute_only_command_runs_in_audit_mode(egress_bin, shared_dir, exec_only):
    rc, out, err, lines = run_as_nobody(egress_bin, shared_dir, ["--audit"], [exec_only])
    assert rc == 0 and out == "unguarded ran\n", (rc, out, err)
    assert len(lines) == 1 and "cannot be read to check it" in lines[0]["reason"] and not lines[0]["refused"], lines


def test_execute_only_program_in_the_tree_is_refused(egress_bin, shared_dir, exec_only):
    rc, out, err, lines = run_as_nobody(egress_bin, shared_dir, [], ["sh", "-c", f"{exec_only}; echo sh=$?"])
    assert "unguarded ran" not in out and "sh=126" in out, (rc, out, err)
    assert len(lines) == 1 and "cannot be read to check it" in lines[0]["reason"] and lines[0]["refused"], lines
    assert rc == 3, (rc, out, err)


# ---- Go programs without a build-id note


@pytest.fixture(scope="module")
def go_without_buildid(build_dir):
    if not shutil.which("go"):
        pytest.skip("go is not installed (Debian package golang-go)")
    out = build_dir / "godial-no-buildid"
    env = {**os.environ, "HOME": str(build_dir), "GOCACHE": str(build_dir / "gocache"),
           "GOPATH": str(build_dir / "gopath"), "GOFLAGS": "", "GOPROXY": "off", "CGO_ENABLED": "1"}
    r = subprocess.run(["go", "build", "-ldflags=-buildid=", "-o", str(out), str(PROGS / "godial.go")],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        pytest.skip(f"go build failed here: {r.stderr[:300]}")
    data = out.read_bytes()
    assert b"ld-linux" in data[:4096], "not the cgo-dynamic build this case needs"
    if shutil.which("readelf"):
        notes = subprocess.run(["readelf", "-n", str(out)], capture_output=True, text=True).stdout
        assert "GO BUILDID" not in notes and "Go" not in notes.split(), "the build still has a Go note"
    return out


def test_go_program_without_a_buildid_note_is_found(go_without_buildid, loopback, run_guarded):
    # Found by its build information section: it runs under the kernel layer, which denies
    # its connect.
    res = run_guarded([], [go_without_buildid, loopback.tcp1.port])
    assert res.returncode == 3 and res.stdout == "dial error\n", res.describe()
    lines = layered_lines(res)
    assert len(lines) == 1 and "Go program" in lines[0]["reason"], res.describe()
    assert [a["layer"] for a in res.attempts("connect")] == ["kernel"], res.describe()
