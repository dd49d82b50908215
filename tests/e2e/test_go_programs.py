"""Go programs: Go binaries dial with raw system calls, so the library never sees their
connects, even when they are dynamically linked (cgo). They are detected like static programs
(the Go build-id note) and run under the kernel layer, which decides their connects with the
same rules: denied in block mode, allowed by a rule, recorded in audit mode. Loopback only."""
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


def layered(res):
    return [p for p in res.lines("process") if p.get("layer") == "kernel"]


def unguarded(res):
    return [p for p in res.lines("process") if p["guarded"] is False]


def test_go_program_denied_in_block_mode(go_prog, loopback, run_guarded):
    res = run_guarded([], [go_prog, loopback.tcp1.port])
    assert res.returncode == 3 and res.stdout == "dial error\n", res.describe()
    lines = layered(res)
    assert len(lines) == 1 and "Go program" in lines[0]["reason"] and unguarded(res) == [], res.describe()
    assert [(a["decision"], a["layer"]) for a in res.attempts("connect")] == [("deny", "kernel")], res.describe()


@pytest.mark.parametrize("how", [["--audit"], ["--allow", "loopback"]])
def test_go_program_runs_under_the_kernel_layer(how, go_prog, loopback, run_guarded):
    res = run_guarded(how, [go_prog, loopback.tcp1.port])
    assert res.returncode == 0 and res.stdout == "dialed\n", res.describe()
    lines = layered(res)
    assert len(lines) == 1 and "Go program" in lines[0]["reason"] and unguarded(res) == [], res.describe()
    [line] = res.attempts("connect")
    assert line["layer"] == "kernel" and line["decision"] == ("deny" if how == ["--audit"] else "allow"), res.describe()


def test_go_program_deep_in_the_tree_is_checked(go_prog, loopback, run_guarded):
    code = ("import subprocess, sys\n"
            "subprocess.run([sys.argv[1], sys.argv[2]])\n")
    res = run_guarded([], py(code) + [go_prog, loopback.tcp1.port])
    assert res.stdout == "dial error\n", res.describe()
    assert res.returncode == 3, res.describe()
    assert unguarded(res) == [] and len(layered(res)) == 1, res.describe()
