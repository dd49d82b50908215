"""The user's own LD_PRELOAD (libasan must come first) is kept ahead of the guard's library, in
COMMAND and in a child started with a scrubbed environment. Loopback only."""
import json
import subprocess

import pytest

from conftest import PYTHON, py

SHOW = ("import json, os\n"
        "maps = open('/proc/self/maps').read()\n"
        "print(json.dumps({'preload': os.environ.get('LD_PRELOAD', ''),\n"
        "                  'loaded': [p for p in os.environ.get('LD_PRELOAD', '').split(':') if p in maps]}))\n")


@pytest.fixture(scope="module")
def user_lib(build_dir):
    src = build_dir / "userpre.c"
    src.write_text("int egress_test_user_preload_marker = 1;\n")
    out = build_dir / "libuserpre.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out


def test_user_preload_stays_first(user_lib, preload_lib, run_guarded):
    res = run_guarded([], py(SHOW), env={"LD_PRELOAD": str(user_lib)})
    out = json.loads(res.stdout)
    assert out["preload"] == f"{user_lib}:{preload_lib}", res.describe()
    assert out["loaded"] == [str(user_lib), str(preload_lib)], "both libraries must be loaded"


def test_user_preload_survives_a_scrubbed_child(user_lib, preload_lib, run_guarded):
    # The child keeps the user's LD_PRELOAD in its new environment; the guard adds itself after.
    code = ("import subprocess, sys, os\n"
            f"subprocess.run([sys.executable, '-c', {SHOW!r}], env={{'LD_PRELOAD': os.environ['LD_PRELOAD'].split(':')[0]}})\n")
    res = run_guarded([], py(code), env={"LD_PRELOAD": str(user_lib)})
    out = json.loads(res.stdout)
    assert out["preload"] == f"{user_lib}:{preload_lib}", res.describe()
    assert out["loaded"] == [str(user_lib), str(preload_lib)], res.describe()
