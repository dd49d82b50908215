"""Programs fork and spawn from small stacks: threads with 16 KiB stacks, signal handlers on an
8 KiB alternate stack (SIGSTKSZ). The guard's hooks on those paths must fit: natively these
succeed, and so they must under the guard. No network is involved."""
import subprocess

import pytest

from conftest import PROGS

CASES = {
    "fork from a 16 KiB thread": ["thread", "fork", "16"],
    "fork from an 8 KiB signal stack": ["altstack", "fork", "8"],
    "posix_spawnp from a 16 KiB thread": ["thread", "spawn", "16"],
    "system() from a 16 KiB thread": ["thread", "system", "16"],
}


@pytest.fixture(scope="module")
def smallstack(compile_c, build_dir):
    exe = build_dir / "smallstack"
    r = subprocess.run(["gcc", "-O1", "-pthread", "-o", str(exe), str(PROGS / "smallstack.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


@pytest.mark.parametrize("case", CASES)
def test_same_as_native(case, smallstack, run_guarded):
    native = subprocess.run([str(smallstack), *CASES[case]], capture_output=True, text=True, timeout=60)
    assert native.returncode == 0 and native.stdout.strip(), native  # the case itself works
    res = run_guarded(["--allow", "loopback"], [smallstack, *CASES[case]])
    assert (res.returncode, res.stdout) == (0, native.stdout), res.describe()
