"""A plugin dlopen'ed with RTLD_DEEPBIND binds its own connect straight to libc's, past the guard,
unless the dlopen hook clears the flag. Loopback only."""
import platform
import subprocess

import pytest

from conftest import PROGS

EACCES = 13


@pytest.fixture(scope="module")
def deepbind(build_dir):
    if platform.machine() != "x86_64":
        pytest.skip("the dlopen hook is implemented for x86-64 only")
    lib = build_dir / "libdeep.so"
    main = build_dir / "deepmain"
    for argv in (["gcc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(PROGS / "deeplib.c")],
                 ["gcc", "-O1", "-o", str(main), str(PROGS / "deepmain.c"), "-ldl"]):
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"gcc failed:\n{r.stderr}")
    return main, lib


@pytest.mark.parametrize("mode", ["block", "audit"])
def test_deepbind_plugin_is_still_guarded(mode, deepbind, loopback, run_guarded):
    main, lib = deepbind
    port = loopback.tcp1.port
    res = run_guarded([] if mode == "block" else ["--audit"], [main, lib, port])
    assert res.stdout == (f"errno {EACCES}\n" if mode == "block" else "connected\n"), res.describe()
    conns = res.attempts("connect", addr="127.0.0.1", port=port)
    assert [c["decision"] for c in conns] == ["deny"], res.describe()


def test_deepbind_plugin_allowed_by_rule(deepbind, loopback, run_guarded):
    main, lib = deepbind
    port = loopback.tcp1.port
    res = run_guarded(["--allow", f"loopback:{port}"], [main, lib, port])
    assert res.stdout == "connected\n" and res.returncode == 0, res.describe()
