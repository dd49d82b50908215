"""The coverage record: only a check-in proves a process is guarded. A COMMAND whose loader silently
ignores the library (here: a dynamic program whose PT_INTERP names a stand-in loader that ignores
LD_PRELOAD, which the up-front detection cannot tell from glibc's) never checks in: it is reported
unguarded and a block-mode run exits non-zero."""
import platform
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import PROGS

GLIBC_INTERP = b"/lib64/ld-linux-x86-64.so.2\0"


@pytest.fixture(scope="module")
def ignoring_loader_program(build_dir):
    if platform.machine() != "x86_64":
        pytest.skip("the stand-in loader is written for x86-64")
    # The new interpreter path must fit in place of the old one: keep it short.
    short = Path(tempfile.mkdtemp(prefix="e", dir="/tmp"))
    loader = short / "ld-linux-f"
    r = subprocess.run(["gcc", "-static-pie", "-nostdlib", "-fPIE", "-O1", "-o", str(loader),
                        str(PROGS / "standin_loader.c")], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"gcc cannot build a static-pie here: {r.stderr[:200]}")
    main_src = build_dir / "plain_main.c"
    main_src.write_text('#include <stdio.h>\nint main(void){puts("real main");return 0;}\n')
    main = build_dir / "plain_main"
    subprocess.run(["gcc", "-O1", "-o", str(main), str(main_src)], check=True)
    data = bytearray(main.read_bytes())
    at = data.find(GLIBC_INTERP)
    if at < 0 or len(str(loader)) + 1 > len(GLIBC_INTERP):
        pytest.skip("this toolchain's PT_INTERP is not the usual glibc path")
    new = str(loader).encode() + b"\0"
    data[at:at + len(GLIBC_INTERP)] = new + b"\0" * (len(GLIBC_INTERP) - len(new))
    patched = short / "m"
    patched.write_bytes(bytes(data))
    patched.chmod(0o755)
    yield patched
    for f in short.iterdir():
        f.unlink()
    short.rmdir()


@pytest.mark.parametrize("mode", ["block", "audit", "allow-unguarded"])
def test_command_that_never_checks_in_is_reported_unguarded(mode, ignoring_loader_program, run_guarded):
    args = {"block": [], "audit": ["--audit"], "allow-unguarded": ["--allow-unguarded"]}[mode]
    res = run_guarded(args, [ignoring_loader_program])
    assert res.stdout == "stand-in loader ran\n", res.describe()
    lines = [p for p in res.lines("process") if p["guarded"] is False]
    assert len(lines) == 1 and "never checked in" in lines[0]["reason"], res.describe()
    assert lines[0]["refused"] is False and lines[0]["pid"] > 0
    # Block mode cannot vouch for it: the run fails even though the command exited 0.
    assert res.returncode == (3 if mode == "block" else 0), res.describe()
