"""AddressSanitizer builds (HAZARDS "Innocent programs the guard can break"): ASan aborts ("ASan
runtime does not come first in initial library list") when a preloaded library comes before its
runtime. The launcher and the exec hooks put the runtime a program links first in its
LD_PRELOAD (and take it out again for children that do not link it). Loopback only."""
import json
import shutil
import subprocess

import pytest

from conftest import PROGS, PYTHON, RUN_CHILD, RUN_CHILD_SCRUBBED, assert_guarded_connect, py


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


@pytest.fixture(scope="module")
def asan_prog(build_dir):
    prog = _build(build_dir, "lconnect-asan", ["-fsanitize=address"])
    r = subprocess.run([prog, "1"], capture_output=True, text=True)
    if "connect" not in r.stdout:
        pytest.skip(f"an ASan build does not run here: {r.stderr.strip()[:200]}")
    return prog


def test_asan_program_runs_guarded(asan_prog, loopback, run_guarded):
    res = run_guarded(["--allow", "loopback"], [asan_prog, loopback.tcp1.port])
    assert "ASan runtime does not come first" not in res.stderr, res.describe()
    assert_guarded_connect(res, loopback.tcp1.port, asan_prog)


@pytest.mark.parametrize("how", ["child", "scrubbed-child"])
def test_asan_program_started_by_a_guarded_parent(how, asan_prog, loopback, run_guarded):
    wrap = py(RUN_CHILD) if how == "child" else py(RUN_CHILD_SCRUBBED)
    res = run_guarded(["--allow", "loopback"], wrap + [asan_prog, loopback.tcp1.port])
    assert "ASan runtime does not come first" not in res.stderr, res.describe()
    assert "connect 0 status 0" in res.stdout, res.describe()
    assert_guarded_connect(res, loopback.tcp1.port, asan_prog)


EXEC_C = """#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char *heap = malloc(8);
    strcpy(heap, "asan");
    puts(heap);
    free(heap);
    fflush(stdout);
    execv(argv[1], argv + 1);
    perror("execv");
    return 127;
}
"""

SHOW_PRELOAD = "import json, os; print(json.dumps([os.environ.get('LD_PRELOAD'), os.environ.get('EGRESS_RUN_SANITIZER')]))"


@pytest.fixture(scope="module")
def asan_exec(build_dir, asan_prog):
    src = build_dir / "asan-exec.c"
    src.write_text(EXEC_C)
    out = build_dir / "asan-exec"
    subprocess.run(["gcc", "-O1", "-fsanitize=address", "-o", str(out), str(src)], check=True)
    return out


@pytest.mark.parametrize("how", ["command", "child"])
def test_a_child_that_does_not_link_asan_does_not_get_its_runtime(how, asan_exec, asan_prog, preload_lib,
                                                                   loopback, run_guarded):
    # An ASan program execs a plain Python child: the runtime the guard put first for the ASan
    # program is taken out again; the child stays guarded; an ASan grandchild gets it back.
    show = [PYTHON, "-c", SHOW_PRELOAD]
    cmd = [asan_exec, *show]
    wrap = [] if how == "command" else py(RUN_CHILD)
    res = run_guarded([], wrap + cmd)
    assert res.returncode == 0, res.describe()
    out = [l for l in res.stdout.splitlines() if l.startswith("[")][0]
    assert json.loads(out.split(" status")[0]) == [str(preload_lib), None], res.describe()
    # ASan program -> ASan program -> plain: each gets what it needs.
    res = run_guarded(["--allow", "loopback"], wrap + [asan_exec, asan_exec, asan_prog, loopback.tcp1.port])
    assert "connect 0" in res.stdout and res.returncode == 0, res.describe()
    assert res.attempts("connect", addr="127.0.0.1", port=loopback.tcp1.port, decision="allow"), res.describe()


def test_a_musl_child_of_an_asan_program_loses_the_runtime_too(asan_exec, build_dir, run_guarded):
    # A musl program runs (audit mode) with the guard's library removed from its environment;
    # the glibc ASan runtime the guard added for its parent must go as well.
    if not shutil.which("musl-gcc"):
        pytest.skip("musl-gcc is not installed")
    src = build_dir / "hello-musl-asan-child.c"
    src.write_text('#include <stdio.h>\n#include <stdlib.h>\nint main(void){const char *p = getenv("LD_PRELOAD");'
                   'printf("musl ran %s\\n", p ? p : "-");return 0;}\n')
    prog = build_dir / "hello-musl-asan-child"
    r = subprocess.run(["musl-gcc", "-O1", "-o", str(prog), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"musl-gcc cannot build here: {r.stderr.strip()[:200]}")
    res = run_guarded(["--audit"], [asan_exec, prog])
    assert res.returncode == 0 and res.stdout.splitlines() == ["asan", "musl ran -"], res.describe()
