"""--deny-as eacces|offline (CONTRACT "More options"): how a denial looks to the program.

`offline` must look like a host without a network: the C entry points and Python's socket
module give, call for call, what they give in a fresh network namespace with no route and no
reachable resolver (`unshare -n`, no guard), which is what a suite's "skip when offline" checks
see. The default stays EACCES / EAI_FAIL. Whatever the setting, the decisions, the report, the
stderr lines and the exit status are the same, and a process that cannot obtain its policy
(fail closed) uses the default. The setting travels in the sealed policy only.
"""
import errno
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import OTHER_IP, PROGS, RUN_TIMEOUT, TcpListener, no_network_prefix, py
from test_fail_closed import (
    MODE_BLOCK,
    FakeLauncher,
    encode_policy,
    locator,
    memfd,
    run_child,
)

NAME = "other.test"  # resolves in the sandbox; every lookup of it here is denied
DENY = {"default": [], "eacces": ["--deny-as", "eacces"], "offline": ["--deny-as", "offline"]}
SETTING = {"default": "eacces", "eacces": "eacces", "offline": "offline"}

NO_RECOVERY, TRY_AGAIN, HOST_NOT_FOUND = 3, 2, 1
EAI_FAIL, EAI_AGAIN, EAI_NONAME, EAI_SYSTEM = -4, -3, -2, -11

# What progs/refusals.c prints for each call, by setting (docs/design.md, "How a denial looks").
C_EXPECT = {
    "eacces": {
        "connect": f"rc=-1 errno={errno.EACCES}",
        "sendto": f"rc=-1 errno={errno.EACCES}",
        "getaddrinfo": f"rc={EAI_FAIL}",
        "gethostbyname": f"found=0 h_errno={NO_RECOVERY}",
        "gethostbyname2": f"found=0 h_errno={NO_RECOVERY}",
        "gethostbyname_r": f"rc={errno.EACCES} found=0 herr={NO_RECOVERY} h_errno={NO_RECOVERY}",
        "gethostbyname2_r": f"rc={errno.EACCES} found=0 herr={NO_RECOVERY} h_errno={NO_RECOVERY}",
        "res_query": f"rc=-1 h_errno={NO_RECOVERY}",
        "res_search": f"rc=-1 h_errno={NO_RECOVERY}",
        "gethostbyaddr": f"found=0 h_errno={HOST_NOT_FOUND}",
        "gethostbyaddr_r": f"rc={errno.ENOENT} found=0 herr={HOST_NOT_FOUND} h_errno={HOST_NOT_FOUND}",
        "getnameinfo": f"rc=0 host={OTHER_IP}",
        "getnameinfo_namereqd": f"rc={EAI_NONAME}",
        "getaddrinfo_a_wait": f"rc={EAI_SYSTEM} errno={errno.EACCES} status=0",
        "getaddrinfo_a_nowait": f"errno={errno.EACCES} status=0",
    },
    "offline": {
        "connect": f"rc=-1 errno={errno.ENETUNREACH}",
        "sendto": f"rc=-1 errno={errno.ENETUNREACH}",
        "getaddrinfo": f"rc={EAI_AGAIN}",
        "gethostbyname": f"found=0 h_errno={TRY_AGAIN}",
        "gethostbyname2": f"found=0 h_errno={TRY_AGAIN}",
        "gethostbyname_r": f"rc={errno.EAGAIN} found=0 herr={TRY_AGAIN} h_errno={TRY_AGAIN}",
        "gethostbyname2_r": f"rc={errno.EAGAIN} found=0 herr={TRY_AGAIN} h_errno={TRY_AGAIN}",
        "res_query": f"rc=-1 h_errno={TRY_AGAIN}",
        "res_search": f"rc=-1 h_errno={TRY_AGAIN}",
        "gethostbyaddr": f"found=0 h_errno={TRY_AGAIN}",
        "gethostbyaddr_r": f"rc=0 found=0 herr={TRY_AGAIN} h_errno={TRY_AGAIN}",
        "getnameinfo": f"rc={EAI_AGAIN} host=-",
        "getnameinfo_namereqd": f"rc={EAI_AGAIN}",
        "getaddrinfo_a_wait": f"rc=0 errno=0 status={EAI_AGAIN}",
        "getaddrinfo_a_nowait": f"errno=0 status={EAI_AGAIN}",
    },
}

# Python's socket module: (exception class, errno) or "ok".
PY_CODE = f"""
import json, socket
def attempt(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return [type(e).__name__, e.errno]
def connect():
    with socket.socket() as s:
        s.connect(({OTHER_IP!r}, 80))
def sendto():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", ({OTHER_IP!r}, 9999))
print(json.dumps({{
    "connect": attempt(connect),
    "sendto": attempt(sendto),
    "getaddrinfo": attempt(lambda: socket.getaddrinfo({NAME!r}, 80)),
    "gethostbyname": attempt(lambda: socket.gethostbyname({NAME!r})),
    "gethostbyname_ex": attempt(lambda: socket.gethostbyname_ex({NAME!r})),
    "gethostbyaddr": attempt(lambda: socket.gethostbyaddr({OTHER_IP!r})),
    "getnameinfo": attempt(lambda: socket.getnameinfo(({OTHER_IP!r}, 80), 0)),
}}))
"""

PY_EXPECT = {
    "eacces": {
        "connect": ["PermissionError", errno.EACCES],
        "sendto": ["PermissionError", errno.EACCES],
        "getaddrinfo": ["gaierror", EAI_FAIL],
        "gethostbyname": ["gaierror", EAI_FAIL],
        "gethostbyname_ex": ["gaierror", EAI_FAIL],  # CPython asks getaddrinfo first
        "gethostbyaddr": ["herror", HOST_NOT_FOUND],
        "getnameinfo": "ok",
    },
    "offline": {
        "connect": ["OSError", errno.ENETUNREACH],
        "sendto": ["OSError", errno.ENETUNREACH],
        "getaddrinfo": ["gaierror", EAI_AGAIN],
        "gethostbyname": ["gaierror", EAI_AGAIN],
        "gethostbyname_ex": ["gaierror", EAI_AGAIN],
        "gethostbyaddr": ["herror", TRY_AGAIN],
        "getnameinfo": ["gaierror", EAI_AGAIN],
    },
}


@pytest.fixture(scope="module")
def refusals(compile_c):
    return compile_c(PROGS / "refusals.c", "refusals")


def c_args(prog):
    return [prog, OTHER_IP, 80, 9999, NAME]


def c_lines(stdout):
    """progs/refusals.c output -> {call: rest of line}."""
    return dict(line.split(" ", 1) for line in stdout.splitlines())


def run_offline_host(argv):
    """Runs argv unguarded in a fresh network namespace; returns its stdout."""
    p = subprocess.run(no_network_prefix() + list(map(str, argv)), capture_output=True, text=True,
                       timeout=RUN_TIMEOUT)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p.stdout


# --------------------------------------------------------------------------------------------
# What the program sees


@pytest.mark.parametrize("deny", DENY)
def test_c_entry_points_are_refused_as_chosen(deny, sandbox, dns_log, refusals, run_guarded):
    mark = dns_log.mark()
    res = run_guarded(DENY[deny], c_args(refusals))
    assert c_lines(res.stdout) == C_EXPECT[SETTING[deny]], res.describe()
    assert res.returncode == 3, res.describe()
    assert res.run_line["deny_as"] == SETTING[deny], res.describe()
    # Every call was a denial, none reached anything.
    assert res.attempts() and all(a["decision"] == "deny" for a in res.attempts()), res.describe()
    calls = {a["call"] for a in res.lines("resolve")}
    assert {"getaddrinfo", "gethostbyname", "gethostbyname_r", "res_query", "gethostbyaddr",
            "getnameinfo", "getaddrinfo_a"} <= calls, res.describe()
    assert NAME not in dns_log.names_since(mark), "a refused lookup reached the resolver"


def test_c_entry_points_offline_are_those_of_a_host_without_a_network(sandbox, refusals,
                                                                       run_guarded):
    host = run_offline_host(c_args(refusals))
    assert c_lines(host) == C_EXPECT["offline"], "glibc without a network answers otherwise:\n" + host
    res = run_guarded(DENY["offline"], c_args(refusals))
    assert res.stdout == host, res.describe()


@pytest.mark.parametrize("deny", DENY)
def test_python_sees_the_chosen_errors(deny, sandbox, run_guarded):
    res = run_guarded(DENY[deny], py(PY_CODE))
    assert json.loads(res.stdout) == PY_EXPECT[SETTING[deny]], res.describe()
    assert res.returncode == 3, res.describe()


def test_python_offline_is_what_it_sees_on_a_host_without_a_network(sandbox, run_guarded):
    host = json.loads(run_offline_host(py(PY_CODE)))
    assert host == PY_EXPECT["offline"]
    res = run_guarded(DENY["offline"], py(PY_CODE))
    assert json.loads(res.stdout) == host, res.describe()


# --------------------------------------------------------------------------------------------
# Everything else is the same


def _normalised(res):
    """The report and stderr with what differs between two runs of one program taken out:
    pids, times, the report's path, and the run line's deny_as and launcher_pid."""
    lines = []
    for o in res.report:
        o = {k: v for k, v in o.items() if k not in ("pid", "ppid", "started", "duration_ms")}
        if o["type"] == "run":
            o.pop("deny_as", None)
            o.pop("launcher_pid", None)
        lines.append(o)
    err = re.sub(r"\[pid \d+\]", "[pid N]", res.stderr).replace(str(res.report_path), "REPORT")
    return lines, err


def test_report_stderr_and_exit_status_do_not_depend_on_it(sandbox, refusals, run_guarded):
    runs = {deny: run_guarded(DENY[deny], c_args(refusals)) for deny in DENY}
    for deny, res in runs.items():
        assert res.returncode == 3, res.describe()
        assert res.run_line["deny_as"] == SETTING[deny], res.describe()
        assert "denied connect to" in res.stderr, res.describe()
    base_lines, base_err = _normalised(runs["default"])
    for deny in ("eacces", "offline"):
        lines, err = _normalised(runs[deny])
        assert lines == base_lines, runs[deny].describe()
        assert err == base_err, runs[deny].describe()
    summary = runs["offline"].summary
    assert summary["denied"] == summary["attempts"] > 0 and summary["command_status"] == 0


def test_audit_mode_refuses_nothing_whatever_the_setting(sandbox, servers, run_guarded):
    res = run_guarded(["--audit", "--deny-as", "offline"], py(PY_CODE))
    seen = json.loads(res.stdout)
    assert seen["connect"] == "ok" and seen["getaddrinfo"] == "ok", res.describe()
    assert res.returncode == 0, res.describe()


# --------------------------------------------------------------------------------------------
# Bad values, fail closed, refused execs


@pytest.mark.parametrize("value", ["nope", "EACCES", "offline,eacces", "enetunreach"])
def test_bad_value_exits_125_naming_it(value, run_guarded, tmp_path):
    marker = tmp_path / "ran"
    res = run_guarded(["--deny-as", value], ["touch", marker], report=False)
    assert res.returncode == 125, res.describe()
    assert res.stderr == (f"egress-run: invalid value '{value}' for '--deny-as <HOW>'; "
                          "give one of: eacces, offline\n"), res.describe()
    assert not marker.exists(), "COMMAND ran after a bad option"


def test_missing_value_exits_125(run_guarded):
    res = run_guarded(["--deny-as"], [], report=False, dashdash=False)
    assert res.returncode == 125, res.describe()
    assert res.stderr == ("egress-run: a value is required for '--deny-as <HOW>' but none was "
                          "supplied; give one of: eacces, offline\n"), res.describe()


def test_help_lists_it(egress_bin):
    out = subprocess.run([egress_bin, "--help"], capture_output=True, text=True).stdout
    assert "--deny-as <HOW>" in out and "offline" in out and "ENETUNREACH" in out, out


@pytest.fixture
def listener():
    t = TcpListener("127.0.0.1")
    yield t
    t.close()


@pytest.mark.parametrize("sealed", [True, False])
def test_a_process_without_its_policy_denies_as_eacces(sealed, preload_lib, listener):
    """The test plays the launcher (see test_fail_closed.py) with a policy that says
    offline and allows nothing: sealed, the refusal is ENETUNREACH (the control); unsealed, the
    process cannot trust it, fails closed, and uses the default EACCES."""
    fd = memfd(encode_policy(MODE_BLOCK, os.getpid(), rules=(), deny_as="offline"),
               **({} if sealed else {"seals": 0}))
    st = os.fstat(fd)
    launcher = FakeLauncher(st.st_ino)
    try:
        out, p = run_child(preload_lib, listener.port, locator(fd, st), [fd])
        events = launcher.events()
    finally:
        launcher.close()
        os.close(fd)
    want = errno.ENETUNREACH if sealed else errno.EACCES
    assert out["errno"] == want, (out, events, p.stderr)
    assert listener.count() == 0, "the connect reached the listener"
    procs = [e for e in events if e["type"] == "process"]
    assert len(procs) == 1 and ("policy_error" in procs[0]) is not sealed, events


@pytest.fixture(scope="module")
def unguardable_prog(build_dir):
    # A 32-bit program: neither the library nor the kernel layer can guard it (a static one
    # runs under the kernel layer).
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    src = build_dir / "deny-as-m32.c"
    src.write_text('#include <stdio.h>\nint main(void){puts("ran");return 0;}\n')
    out = build_dir / "deny-as-m32"
    r = subprocess.run(["gcc", "-m32", "-O1", "-o", str(out), str(src)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"gcc -m32 cannot build here: {r.stderr.strip()[:200]}")
    return out


def test_refused_exec_keeps_eacces_when_offline(unguardable_prog, run_guarded):
    """Refusing to run a program the guard cannot enter is not a network denial."""
    code = ("import subprocess, sys\n"
            "try:\n"
            "    subprocess.run([sys.argv[1]])\n"
            "    print('ran')\n"
            "except OSError as e:\n"
            "    print(e.errno)\n")
    res = run_guarded(DENY["offline"], py(code) + [unguardable_prog])
    assert res.stdout == f"{errno.EACCES}\n", res.describe()
    assert res.returncode == 3, res.describe()


def test_the_setting_is_not_in_the_environment(sandbox, run_guarded):
    """Nothing in a guarded process's environment carries it: the sealed policy does."""
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    envs = {deny: json.loads(run_guarded(DENY[deny], py(code)).stdout) for deny in ("eacces", "offline")}
    assert not [v for v in envs["offline"].values() if "offline" in v.lower()], envs["offline"]
    strip = lambda e: {k: v for k, v in e.items() if k != "EGRESS_RUN_POLICY"}
    assert strip(envs["eacces"]) == strip(envs["offline"])
