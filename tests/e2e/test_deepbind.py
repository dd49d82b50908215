"""A plugin dlopen'ed with RTLD_DEEPBIND binds its own connect straight to libc's, past the guard,
unless the dlopen hook redirects it; and it must keep its own definitions of everything else, as
natively. Loopback only, except the lookup test (sandbox)."""
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


# A plugin that defines a function the program also defines (shared_name), with a dependency of
# its own (libdeepdep.so, DT_NEEDED, found through the plugin's RUNPATH). With RTLD_DEEPBIND the
# plugin must call its own shared_name, as natively, and its network calls must still be guarded:
# through the PLT (JUMP_SLOT), through connect's address (GLOB_DAT), in the dependency.


@pytest.fixture(scope="module")
def plugin(build_dir):
    if platform.machine() != "x86_64":
        pytest.skip("the dlopen hook is implemented for x86-64 only")
    d = build_dir / "deepbind-plugin"
    d.mkdir(exist_ok=True)
    host = d / "deephost"
    builds = (
        ["gcc", "-shared", "-fPIC", "-O1", "-o", str(d / "libdeepdep.so"), str(PROGS / "deepdep.c")],
        ["gcc", "-shared", "-fPIC", "-O1", "-o", str(d / "libdeepplugin.so"), str(PROGS / "deepplugin.c"),
         f"-L{d}", "-ldeepdep", "-Wl,-rpath,$ORIGIN"],
        # -rdynamic: the program exports shared_name, so a plugin without DEEPBIND binds to it.
        # RUNPATH: a bare plugin name is found through the program (dlopen's caller).
        ["gcc", "-O1", "-rdynamic", "-o", str(host), str(PROGS / "deephost.c"), "-ldl",
         f"-Wl,-rpath,{d}", "-Wl,--enable-new-dtags"],
    )
    for argv in builds:
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"gcc failed:\n{r.stderr}")
    return host, d / "libdeepplugin.so"


@pytest.mark.parametrize("binding", ["now", "lazy"])
@pytest.mark.parametrize("name", ["path", "bare"])
def test_deepbind_plugin_keeps_its_own_symbols(binding, name, plugin, run_guarded):
    host, lib = plugin
    argv = [host, lib if name == "path" else lib.name, binding, "shared"]
    native = subprocess.run(list(map(str, argv)), capture_output=True, text=True)
    assert native.stdout == "plugin 2 host 1\n", native
    res = run_guarded(["--allow", "loopback"], argv)
    assert res.returncode == 0 and res.stdout == native.stdout, res.describe()


@pytest.mark.parametrize("binding", ["now", "lazy"])
@pytest.mark.parametrize("mode", ["block", "audit"])
@pytest.mark.parametrize("call", ["connect", "connect_ptr", "dep_connect"])
def test_deepbind_plugin_connects_are_guarded(call, mode, binding, plugin, loopback, run_guarded):
    host, lib = plugin
    port = loopback.tcp1.port
    res = run_guarded([] if mode == "block" else ["--audit"], [host, lib, binding, call, port])
    assert res.stdout == (f"errno {EACCES}\n" if mode == "block" else "ok\n"), res.describe()
    conns = res.attempts("connect", addr="127.0.0.1", port=port)
    assert [c["decision"] for c in conns] == ["deny"], res.describe()


@pytest.mark.parametrize("mode", ["block", "audit"])
def test_deepbind_plugin_sendto_is_guarded(mode, plugin, loopback, run_guarded):
    host, lib = plugin
    port = loopback.udp.port
    res = run_guarded([] if mode == "block" else ["--audit"], [host, lib, "lazy", "sendto", port])
    assert res.stdout == (f"errno {EACCES}\n" if mode == "block" else "ok\n"), res.describe()
    sends = res.attempts("send", addr="127.0.0.1", port=port)
    assert [s["decision"] for s in sends] == ["deny"], res.describe()


@pytest.mark.parametrize("mode", ["block", "audit"])
def test_deepbind_plugin_lookups_are_guarded(mode, plugin, sandbox, run_guarded):
    host, lib = plugin
    res = run_guarded([] if mode == "block" else ["--audit"], [host, lib, "now", "gai", "other.test"])
    eai_fail = -4
    assert res.stdout == (f"gai {eai_fail}\n" if mode == "block" else "gai 0\n"), res.describe()
    lookups = res.attempts("resolve", host="other.test")
    assert [r["decision"] for r in lookups][:1] == ["deny"], res.describe()
