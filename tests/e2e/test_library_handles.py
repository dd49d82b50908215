"""Functions found through the dynamic loader (`dlsym`/`dlvsym` on a library handle,
RTLD_DEFAULT, RTLD_NEXT) are guarded like direct calls: FFI layers (Python ctypes, cffi, .NET,
LuaJIT) reach libc's `connect` through `dlopen("libc.so.6")` + `dlsym`, which searches that
object, not the preload. A user's own preload that chains with `dlsym(RTLD_NEXT, ...)` keeps
working."""
import subprocess

import pytest

from conftest import ALLOWED_IP, OTHER_IP, PROGS, PYTHON

EACCES = 13
EAI_FAIL = -4
NO_RECOVERY = 3
MODES = {"block": [], "audit": ["--audit"]}
CTYPES = [PYTHON, str(PROGS / "ctypes_libc.py")]


@pytest.fixture(scope="module")
def dlsym_calls(build_dir):
    """progs/dlsym_calls.c, linked with libdlsym_next.so (RTLD_NEXT from a later library)."""
    lib = build_dir / "libdlsym_next.so"
    exe = build_dir / "dlsym_calls"
    for cmd in (["gcc", "-shared", "-fPIC", "-O1", "-o", lib, PROGS / "dlsym_next_lib.c"],
                ["gcc", "-O1", "-Wall", "-o", exe, PROGS / "dlsym_calls.c", f"-L{build_dir}", "-ldlsym_next",
                 f"-Wl,-rpath,{build_dir}"]):
        r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return exe


@pytest.fixture(scope="module")
def user_wrap(build_dir):
    lib = build_dir / "libuser_wrap.so"
    r = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(lib), str(PROGS / "user_wrap.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return lib


@pytest.fixture(scope="module")
def wrapped_after_guard(build_dir, dlsym_calls, user_wrap):
    """dlsym_calls linked with libuser_wrap.so: a connect wrapper loaded after the guard
    (a dependency, not a preload), so the guard's own connect chains to it."""
    exe = build_dir / "dlsym_calls_wrapped"
    r = subprocess.run(["gcc", "-O1", "-o", str(exe), str(PROGS / "dlsym_calls.c"), f"-L{build_dir}",
                        "-Wl,--no-as-needed", "-luser_wrap", "-ldlsym_next", f"-Wl,-rpath,{build_dir}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def denied_connect(res, call="connect"):
    return [(a["call"], a["decision"]) for a in res.attempts("connect", addr=OTHER_IP, port=5432)] == [(call, "deny")]


@pytest.mark.parametrize("mode", MODES)
def test_ctypes_connect_through_libc_handle(mode, sandbox, servers, run_guarded):
    before = servers.tcp[OTHER_IP].count()
    res = run_guarded(["--allow", ALLOWED_IP, *MODES[mode]], [*CTYPES, "connect", OTHER_IP, "5432"])
    assert denied_connect(res), res.describe()
    if mode == "block":
        assert res.stdout == f"errno {EACCES}\n", res.describe()
        assert servers.tcp[OTHER_IP].count() == before, "a refused connect reached the listener"
        assert res.returncode == 3, res.describe()
    else:
        assert res.stdout == "ok\n", res.describe()
        assert res.returncode == 0, res.describe()


@pytest.mark.parametrize("call", ["sendto", "sendmsg"])
@pytest.mark.parametrize("mode", MODES)
def test_ctypes_send_through_libc_handle(call, mode, sandbox, servers, run_guarded):
    payload = f"ctypes-{call}-{mode}"
    res = run_guarded(["--allow", ALLOWED_IP, *MODES[mode]], [*CTYPES, call, OTHER_IP, "9999", payload])
    sends = res.attempts("send", addr=OTHER_IP, port=9999)
    assert [(s["call"], s["decision"]) for s in sends] == [(call, "deny")], res.describe()
    arrived = servers.udp[OTHER_IP].settle()
    if mode == "block":
        assert res.stdout == f"errno {EACCES}\n", res.describe()
        assert payload.encode() not in arrived, "a refused datagram was delivered"
    else:
        assert res.stdout == f"sent {len(payload)}\n", res.describe()
        assert payload.encode() in arrived


LOOKUPS = {
    "getaddrinfo": (f"fail rc={EAI_FAIL}", f"ok {OTHER_IP}"),
    "gethostbyname": (f"fail h_errno={NO_RECOVERY}", f"ok {OTHER_IP}"),
    "res_query": (f"fail h_errno={NO_RECOVERY}", None),
    "res_search": (f"fail h_errno={NO_RECOVERY}", None),
}


@pytest.mark.parametrize("call", LOOKUPS)
@pytest.mark.parametrize("mode", MODES)
def test_ctypes_lookup_through_library_handle(call, mode, sandbox, dns_log, run_guarded):
    mark = dns_log.mark()
    res = run_guarded(["--allow", "allowed.test", *MODES[mode]], [*CTYPES, call, "other.test"])
    looked = res.attempts("resolve", host="other.test")
    assert [(r["call"], r["decision"]) for r in looked] == [(call, "deny")], res.describe()
    refused, allowed = LOOKUPS[call]
    if mode == "block":
        assert res.stdout == refused + "\n", res.describe()
        assert "other.test" not in dns_log.names_since(mark), "a refused lookup reached the resolver"
    else:
        if allowed:
            assert res.stdout == allowed + "\n", res.describe()
        else:
            assert res.stdout.startswith("ok "), res.describe()
        assert "other.test" in dns_log.names_since(mark)


@pytest.mark.parametrize("how", ["handle", "vsym", "default", "next", "dlsymptr"])
def test_c_program_connect_found_with_dlsym(how, sandbox, servers, dlsym_calls, run_guarded):
    before = servers.tcp[OTHER_IP].count()
    res = run_guarded(["--allow", ALLOWED_IP], [dlsym_calls, how, "connect", OTHER_IP, "5432"])
    assert res.stdout == f"errno {EACCES}\n", res.describe()
    assert denied_connect(res), res.describe()
    assert servers.tcp[OTHER_IP].count() == before, "a refused connect reached the listener"


@pytest.mark.parametrize("how", ["handle", "vsym", "next"])
def test_c_program_sendto_and_lookup_found_with_dlsym(how, sandbox, servers, dns_log, dlsym_calls, run_guarded):
    payload = f"dlsym-{how}"
    mark = dns_log.mark()
    res = run_guarded(["--allow", ALLOWED_IP], [dlsym_calls, how, "sendto", OTHER_IP, "9999", payload])
    assert res.stdout == f"errno {EACCES}\n", res.describe()
    assert payload.encode() not in servers.udp[OTHER_IP].settle()
    res = run_guarded(["--allow", ALLOWED_IP], [dlsym_calls, how, "getaddrinfo", "other.test"])
    assert res.stdout == f"fail rc={EAI_FAIL}\n", res.describe()
    assert "other.test" not in dns_log.names_since(mark)


def test_allowed_functions_found_with_dlsym_still_work(sandbox, servers, dlsym_calls, run_guarded):
    for how in ("handle", "vsym", "default", "next", "dlsymptr"):
        res = run_guarded(["--allow", f"{ALLOWED_IP}:5432"], [dlsym_calls, how, "connect", ALLOWED_IP, "5432"])
        assert res.stdout == "ok\n", res.describe()
        allowed = res.attempts("connect", addr=ALLOWED_IP, port=5432)
        assert [(a["decision"], a["rule"]) for a in allowed] == [("allow", f"{ALLOWED_IP}:5432")], res.describe()
        assert res.returncode == 0


@pytest.mark.parametrize("via", ["next", "handle"])
def test_user_preload_that_chains_keeps_working(via, sandbox, servers, user_wrap, run_guarded):
    """The user's wrapper comes first in LD_PRELOAD; it finds 'the real connect' with
    RTLD_NEXT (gets the guard's) or through a libc handle (gets the guard's too): both its
    wrapping and the guard's check happen, once each, and an allowed connect still works."""
    env = {"LD_PRELOAD": str(user_wrap), "USER_WRAP_VIA_HANDLE": "1" if via == "handle" else "0"}
    code = (f"import socket\n"
            f"for port in (5432, 5432):\n"
            f"    s = socket.socket()\n"
            f"    try: s.connect(('{OTHER_IP}', port)); print('ok')\n"
            f"    except OSError as e: print('errno', e.errno)\n"
            f"s = socket.socket(); s.connect(('{ALLOWED_IP}', 5432)); print('ok')\n")
    before = servers.tcp[OTHER_IP].count()
    res = run_guarded(["--allow", f"{ALLOWED_IP}:5432"], [PYTHON, "-c", code], env=env)
    assert res.stdout == f"errno {EACCES}\nerrno {EACCES}\nok\n", res.describe()
    assert res.stderr.count("user_wrap: connect") == 3, res.describe()
    assert res.count("connect", addr=OTHER_IP, port=5432, decision="deny") == 2, res.describe()
    assert servers.tcp[OTHER_IP].count() == before


# Every function the guard exports, and libc's public aliases of them.
HOOKED_NAMES = """connect __connect sendto sendmsg sendmmsg __sendmmsg send __send socket __socket close
__close close_range dup dup2 __dup2 dup3 getaddrinfo getaddrinfo_a gethostbyname gethostbyname2
gethostbyname_r gethostbyname2_r gethostbyaddr gethostbyaddr_r getnameinfo res_query res_search
res_querydomain res_send res_nquery res_nsearch res_nquerydomain res_nsend __res_query __res_search
__res_querydomain __res_send __res_nquery __res_nsearch __res_nquerydomain __res_nsend execve execv
execvp execvpe execl execlp execle execveat fexecve posix_spawn posix_spawnp system popen wordexp syscall listen bind
setsockopt dlopen dlmopen dlsym dlvsym rcmd rcmd_af rexec rexec_af ruserok ruserok_af iruserok
iruserok_af""".split()


def test_every_hooked_function_resolves_to_the_guard(dlsym_calls, preload_lib, run_guarded):
    """dlsym(libc's handle, NAME) gives the guard's function for every name it hooks that libc
    answers for (no network needed: nothing is called). Names libc does not answer without a
    version (__res_query@GLIBC_2.2.5) stay unanswered."""
    native = subprocess.run([str(dlsym_calls), "where", *HOOKED_NAMES], capture_output=True, text=True)
    natively = dict(line.split() for line in native.stdout.splitlines())
    assert natively["connect"] == "libc.so.6", native.stdout  # the test can tell them apart
    res = run_guarded([], [dlsym_calls, "where", *HOOKED_NAMES])
    where = dict(line.split() for line in res.stdout.splitlines())
    expected = {n: (preload_lib.name if f != "-" else "-") for n, f in natively.items()}
    assert where == expected, res.describe()


@pytest.mark.parametrize("via", ["next", "handle"])
def test_wrapper_loaded_after_the_guard_gets_the_real_function(via, sandbox, servers, wrapped_after_guard,
                                                               run_guarded):
    """The guard's connect chains to a wrapper loaded after it; that wrapper asks for 'the real
    connect' (RTLD_NEXT, or a libc handle) and must get libc's, or the chain would loop back
    into the guard forever. The guard's check happens once, before the wrapper."""
    env = {"USER_WRAP_VIA_HANDLE": "1" if via == "handle" else "0"}
    before = servers.tcp[OTHER_IP].count()
    res = run_guarded(["--allow", f"{ALLOWED_IP}:5432"], [wrapped_after_guard, "direct", "connect", OTHER_IP, "5432"],
                      env=env)
    assert res.stdout == f"errno {EACCES}\n", res.describe()
    assert res.count("connect", addr=OTHER_IP, port=5432, decision="deny") == 1, res.describe()
    assert servers.tcp[OTHER_IP].count() == before
    res = run_guarded(["--allow", f"{ALLOWED_IP}:5432"], [wrapped_after_guard, "direct", "connect", ALLOWED_IP, "5432"],
                      env=env)
    assert res.stdout == "ok\n", res.describe()
    assert res.stderr.count("user_wrap: connect") == 1, res.describe()
