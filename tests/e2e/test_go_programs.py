"""Go programs: Go binaries dial with raw system calls, so the library never sees their
connects, even when they are dynamically linked (cgo). They are detected like static programs
(the Go build-id note): refused in block mode unless --allow-unguarded, reported as unguarded
in audit mode. Loopback only."""
import os
import shutil
import subprocess

import pytest

from conftest import PROGS, py


@pytest.fixture(scope="module", params=["cgo-dynamic", "static"])
def go_prog(request, build_dir):
    if not shutil.which("go"):
        pytest.skip("go is not installed (Debian package golang-go)")
    out = build_dir / f"godial-{request.param}"
    env = {**os.environ, "HOME": str(build_dir), "GOCACHE": str(build_dir / "gocache"),
           "GOPATH": str(build_dir / "gopath"), "GOFLAGS": "", "GOPROXY": "off",
           "CGO_ENABLED": "1" if request.param == "cgo-dynamic" else "0"}
    r = subprocess.run(["go", "build", "-o", str(out), str(PROGS / "godial.go")],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        pytest.skip(f"go build failed here: {r.stderr[:300]}")
    interp = b"ld-linux" in out.read_bytes()[:4096]
    assert interp == (request.param == "cgo-dynamic"), "the build is not the kind this case needs"
    return out


def unguarded(res):
    return [p for p in res.lines("process") if p["guarded"] is False]


def test_go_program_refused_in_block_mode(go_prog, loopback, run_guarded):
    res = run_guarded([], [go_prog, loopback.tcp1.port])
    assert res.returncode == 126 and res.stdout == "", res.describe()
    lines = unguarded(res)
    assert len(lines) == 1 and "Go program" in lines[0]["reason"] and lines[0]["refused"], res.describe()


@pytest.mark.parametrize("how", [["--audit"], ["--allow-unguarded"]])
def test_go_program_runs_unguarded_and_is_reported(how, go_prog, loopback, run_guarded):
    res = run_guarded(how, [go_prog, loopback.tcp1.port])
    assert res.returncode == 0 and res.stdout == "dialed\n", res.describe()
    lines = unguarded(res)
    assert len(lines) == 1 and "Go program" in lines[0]["reason"] and not lines[0]["refused"], res.describe()


def test_go_program_deep_in_the_tree_is_refused(go_prog, loopback, run_guarded):
    code = ("import subprocess, sys\n"
            "try:\n"
            "    subprocess.run([sys.argv[1], sys.argv[2]])\n"
            "except PermissionError as e:\n"
            "    print('refused', e.errno)\n")
    res = run_guarded([], py(code) + [go_prog, loopback.tcp1.port])
    assert res.stdout == "refused 13\n", res.describe()
    assert res.returncode == 3, res.describe()
