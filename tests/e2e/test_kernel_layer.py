"""The kernel layer: programs the library cannot enter (static C, static Go, /sbin/ldconfig) run
under a seccomp filter whose network calls egress-run decides with the same rules, as COMMAND
and deeper in the tree (exec'd, or posix_spawn'd through the launcher as a guarded trampoline). Denied calls fail with the library's errno, allowed ones work, audit
mode records; report lines say `"layer": "kernel"`. The supervisor performs allowed calls
itself with its own copy of the address, so a thread rewriting the address cannot reach a
denied destination; io_uring_setup is refused in block mode; a daemon that outlives the run
gets no network at all."""
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ALLOWED_IP, OTHER_IP, PROGS, RESOLVER_IP, WAIT_TIMEOUT, py

EACCES, ENETUNREACH, EPERM, ENOSYS = 13, 101, 1, 38


def _static(build_dir, name, extra=()):
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed")
    out = build_dir / f"{name}-static"
    r = subprocess.run(["gcc", "-static", "-O1", "-pthread", "-o", str(out), str(PROGS / f"{name}.c"), *extra],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"gcc -static cannot build here: {r.stderr.strip()[:200]}")
    assert b"ld-linux" not in out.read_bytes()[:4096], "not a static program"
    return out


@pytest.fixture(scope="module")
def net_prog(build_dir):
    return _static(build_dir, "kl_net")


@pytest.fixture(scope="module")
def race_prog(build_dir):
    return _static(build_dir, "kl_race")


@pytest.fixture(scope="module")
def uring_prog(build_dir):
    return _static(build_dir, "kl_uring")


@pytest.fixture(scope="module")
def daemon_prog(build_dir):
    return _static(build_dir, "kl_daemon")


def _go(build_dir, name):
    if not shutil.which("go"):
        pytest.skip("go is not installed (Debian package golang-go)")
    out = build_dir / f"{name}-go-static"
    env = {**os.environ, "HOME": str(build_dir), "GOCACHE": str(build_dir / "gocache"),
           "GOPATH": str(build_dir / "gopath"), "GOFLAGS": "-mod=mod", "GOPROXY": "off", "CGO_ENABLED": "0"}
    r = subprocess.run(["go", "build", "-o", str(out), str(PROGS / f"{name}.go")],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        pytest.skip(f"go build failed here: {r.stderr[:300]}")
    return out


@pytest.fixture(scope="module")
def go_dial(build_dir):
    return _go(build_dir, "godial")


@pytest.fixture(scope="module")
def go_dns(build_dir):
    return _go(build_dir, "godns")


def kernel_lines(res, type_=None):
    return [a for a in res.attempts(type_) if a.get("layer") == "kernel"]


def layered(res):
    return [p for p in res.lines("process") if p.get("layer") == "kernel"]


def no_refusal(res):
    return not [p for p in res.lines("process") if p["guarded"] is False]


# --------------------------------------------------------------------------------------------
# A static C program as COMMAND


@pytest.mark.parametrize("op", ["connect", "sendto", "sendmsg", "sendmmsg"])
def test_static_program_denied(op, net_prog, sandbox, servers, run_guarded):
    port = 5432 if op == "connect" else 9999
    res = run_guarded([], [net_prog, op, OTHER_IP, port])
    assert res.stdout.splitlines()[-1] == f"{op} -1 {EACCES}", res.describe()
    assert res.returncode == 3, res.describe()
    lines = kernel_lines(res)
    assert lines and all(a["decision"] == "deny" and a["addr"] == OTHER_IP and a["enforced"] for a in lines), res.describe()
    assert {a["call"] for a in lines} == {op}, res.describe()
    assert len(layered(res)) == 1 and "statically linked" in layered(res)[0]["reason"], res.describe()
    assert layered(res)[0]["guarded"] is True


def test_static_program_denied_as_offline(net_prog, sandbox, servers, run_guarded):
    res = run_guarded(["--deny-as", "offline"], [net_prog, "connect", OTHER_IP, 5432])
    assert res.stdout == f"connect -1 {ENETUNREACH}\n" and res.returncode == 3, res.describe()


@pytest.mark.parametrize("op", ["connect", "sendto", "sendmsg", "sendmmsg"])
def test_static_program_allowed(op, net_prog, sandbox, servers, run_guarded):
    port = 5432 if op == "connect" else 9999
    before = servers.tcp[ALLOWED_IP].count()
    res = run_guarded(["--allow", ALLOWED_IP], [net_prog, op, ALLOWED_IP, port])
    want = {"connect": "connect 0 0", "sendto": "sendto 12 0", "sendmsg": "sendmsg 12 0",
            "sendmmsg": "sendmmsg 2 0"}[op]
    assert res.stdout.splitlines()[-1] == want and res.returncode == 0, res.describe()
    if op == "sendmmsg":
        assert "msg_len 12 12" in res.stdout, res.describe()
    if op == "connect":
        deadline = time.monotonic() + WAIT_TIMEOUT
        while servers.tcp[ALLOWED_IP].count() == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert servers.tcp[ALLOWED_IP].count() > before
    else:
        assert servers.udp[ALLOWED_IP].wait_for(b"kernel-layer"), res.describe()
    lines = kernel_lines(res)
    assert lines and all(a["decision"] == "allow" and a["rule"] == ALLOWED_IP for a in lines), res.describe()


def test_static_program_audited(net_prog, sandbox, servers, run_guarded):
    res = run_guarded(["--audit"], [net_prog, "connect", OTHER_IP, 5432])
    assert res.stdout == "connect 0 0\n" and res.returncode == 0, res.describe()
    [line] = kernel_lines(res, "connect")
    assert line["decision"] == "deny" and line["enforced"] is False and line["proto"] == "tcp", res.describe()


def test_library_lines_say_library(loopback, run_guarded):
    res = run_guarded(["--allow", "loopback"], py(
        f"import socket; socket.create_connection(('127.0.0.1', {loopback.tcp1.port})).close()"))
    assert res.returncode == 0, res.describe()
    assert [a["layer"] for a in res.attempts("connect")] == ["library"], res.describe()


# --------------------------------------------------------------------------------------------
# Go


def test_static_go_program_denied_allowed_audited(go_dial, loopback, run_guarded):
    port = loopback.tcp1.port
    denied = run_guarded([], [go_dial, port])
    assert denied.stdout == "dial error\n" and denied.returncode == 3, denied.describe()
    assert [a["decision"] for a in kernel_lines(denied, "connect")] == ["deny"], denied.describe()
    assert "Go program" in layered(denied)[0]["reason"], denied.describe()
    allowed = run_guarded(["--allow", "loopback"], [go_dial, port])
    assert allowed.stdout == "dialed\n" and allowed.returncode == 0, allowed.describe()
    assert [a["decision"] for a in kernel_lines(allowed, "connect")] == ["allow"], allowed.describe()
    audited = run_guarded(["--audit"], [go_dial, port])
    assert audited.stdout == "dialed\n" and audited.returncode == 0, audited.describe()
    assert [a["enforced"] for a in kernel_lines(audited, "connect")] == [False], audited.describe()


def test_go_lookups_need_the_resolver_address(go_dns, sandbox, servers, run_guarded):
    # Go's own resolver sends UDP to the name server: name rules cannot apply to it.
    by_name = run_guarded(["--allow", "allowed.test"], [go_dns, "allowed.test", 80])
    assert by_name.stdout.startswith("dial error"), by_name.describe()
    assert any(a["addr"] == RESOLVER_IP and a["port"] == 53 and a["decision"] == "deny"
               for a in kernel_lines(by_name)), by_name.describe()
    res = run_guarded(["--allow", f"{RESOLVER_IP}:53", "--allow", f"{ALLOWED_IP}:80"], [go_dns, "allowed.test", 80])
    assert res.stdout == "dialed\n" and res.returncode == 0, res.describe()
    assert any(a["addr"] == ALLOWED_IP and a["decision"] == "allow" for a in kernel_lines(res, "connect")), res.describe()


# --------------------------------------------------------------------------------------------
# Deeper in the tree


def test_find_library_runs_ldconfig_under_the_layer(run_guarded):
    res = run_guarded([], py("import ctypes.util; print(ctypes.util.find_library('c'))"))
    assert res.returncode == 0 and res.stdout.strip() == "libc.so.6", res.describe()
    assert no_refusal(res), res.describe()
    assert any("ldconfig" in p["exe"] for p in layered(res)), res.describe()


@pytest.mark.parametrize("mode", ["block", "allow", "audit"])
def test_static_program_started_by_a_guarded_program(mode, net_prog, sandbox, servers, run_guarded):
    args = {"block": [], "allow": ["--allow", ALLOWED_IP], "audit": ["--audit"]}[mode]
    dest = OTHER_IP if mode != "allow" else ALLOWED_IP
    code = ("import subprocess, sys\n"
            "print(subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout, end='')\n")
    res = run_guarded(args, py(code) + [net_prog, "connect", dest, 5432])
    want = f"connect -1 {EACCES}\n" if mode == "block" else "connect 0 0\n"
    assert res.stdout == want, res.describe()
    assert res.returncode == (3 if mode == "block" else 0), res.describe()
    [line] = kernel_lines(res, "connect")
    assert line["decision"] == ("allow" if mode == "allow" else "deny"), res.describe()
    assert line["exe"].endswith("kl_net-static"), res.describe()
    assert no_refusal(res), res.describe()


def test_dynamic_between_static_programs(net_prog, build_dir, sandbox, servers, run_guarded):
    # static -> python (library, under the filter) -> static: the second one stays under it.
    launcher = _static(build_dir, "kl_exec")
    code = "import subprocess, sys; subprocess.run(sys.argv[1:])"
    res = run_guarded([], [launcher] + py(code) + [net_prog, "connect", OTHER_IP, 5432])
    assert res.stdout == f"connect -1 {EACCES}\n" and res.returncode == 3, res.describe()
    assert no_refusal(res), res.describe()


# --------------------------------------------------------------------------------------------
# No time-of-check/time-of-use hole


def test_rewriting_the_address_never_reaches_the_denied_one(race_prog, sandbox, servers, run_guarded):
    denied_before = servers.tcp[OTHER_IP].count()
    allowed_before = servers.tcp[ALLOWED_IP].count()
    res = run_guarded(["--allow", ALLOWED_IP, "--quiet"], [race_prog, ALLOWED_IP, OTHER_IP, 5432, 3000])
    out = res.stdout.split()
    assert out[0] == "connected", res.describe()
    connected, refused = int(out[1]), int(out[3])
    assert connected > 0 and refused > 0, f"the race did not alternate: {res.stdout}"
    # Every connection the program made has been accepted by now at one of the two.
    deadline = time.monotonic() + WAIT_TIMEOUT
    while (servers.tcp[ALLOWED_IP].count() - allowed_before < connected
           and servers.tcp[OTHER_IP].count() == denied_before and time.monotonic() < deadline):
        time.sleep(0.02)
    assert servers.tcp[OTHER_IP].count() == denied_before, "a connection reached the denied address"
    assert servers.tcp[ALLOWED_IP].count() - allowed_before == connected


# --------------------------------------------------------------------------------------------
# io_uring


def test_io_uring_setup_refused_in_block_mode(uring_prog, run_guarded):
    res = run_guarded([], [uring_prog])
    assert res.stdout == f"io_uring_setup -1 {EPERM}\n" and res.returncode == 0, res.describe()


def test_io_uring_setup_recorded_in_audit_mode(uring_prog, run_guarded):
    res = run_guarded(["--audit"], [uring_prog])
    assert res.returncode == 0, res.describe()
    assert [a["call"] for a in kernel_lines(res)] == ["io_uring_setup"], res.describe()


# --------------------------------------------------------------------------------------------
# A daemon that outlives COMMAND


def test_daemon_outliving_the_run_gets_no_network(daemon_prog, loopback, run_guarded, tmp_path):
    go, out = tmp_path / "go", tmp_path / "out"
    before = loopback.tcp1.count()
    res = run_guarded(["--allow", "loopback"], [daemon_prog, go, out, "127.0.0.1", loopback.tcp1.port])
    assert res.returncode == 0, res.describe()
    # egress-run has returned: the supervisor is gone with it.
    go.write_text("")
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)
    assert out.read_text() == f"connect -1 {ENOSYS}\n"
    assert loopback.tcp1.count() == before


# --------------------------------------------------------------------------------------------
# --seccomp: the whole tree under the layer


@pytest.fixture(scope="module")
def rawasm(compile_c):
    return compile_c(PROGS / "kl_rawasm.c", "kl_rawasm")


def test_seccomp_catches_an_inline_syscall_in_a_dynamic_program(rawasm, loopback, run_guarded):
    port = loopback.tcp1.port
    plain = run_guarded([], [rawasm, "127.0.0.1", port])
    assert plain.stdout == "connect 0 0\n" and plain.attempts() == [], "the library alone cannot see it"
    res = run_guarded(["--seccomp"], [rawasm, "127.0.0.1", port])
    assert res.stdout == f"connect -1 {EACCES}\n" and res.returncode == 3, res.describe()
    assert [(a["decision"], a["layer"]) for a in res.attempts("connect")] == [("deny", "kernel")], res.describe()
    allowed = run_guarded(["--seccomp", "--allow", "loopback"], [rawasm, "127.0.0.1", port])
    assert allowed.stdout == "connect 0 0\n" and allowed.returncode == 0, allowed.describe()


def test_seccomp_library_decisions_are_reported_once(loopback, run_guarded):
    code = (f"import socket\n"
            f"for _ in range(3):\n"
            f"    socket.create_connection(('127.0.0.1', {loopback.tcp1.port})).close()\n"
            f"u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range(50):\n"
            f"    u.sendto(b'x', ('127.0.0.1', {loopback.udp.port}))\n"
            f"print('ok')\n")
    res = run_guarded(["--seccomp", "--allow", "loopback"], py(code))
    assert res.stdout == "ok\n" and res.returncode == 0, res.describe()
    assert {a["layer"] for a in res.attempts()} == {"library"}, res.describe()
    assert res.count("connect") == 3 and res.count("send") == 50, res.describe()


def test_seccomp_allowed_name_end_to_end(sandbox, servers, dns_log, run_guarded):
    code = ("import urllib.request\n"
            "print(urllib.request.urlopen('http://allowed.test/', timeout=20).read().decode())\n")
    res = run_guarded(["--seccomp", "--allow", "allowed.test"], py(code))
    assert res.stdout == f"ok from {ALLOWED_IP}\n" and res.returncode == 0, res.describe()
    assert not [a for a in res.attempts() if a["decision"] == "deny"], res.describe()
    assert res.count("resolve", host="allowed.test", decision="allow") >= 1, res.describe()


def test_seccomp_refused_lookup_sends_nothing(sandbox, dns_log, run_guarded):
    mark = dns_log.mark()
    code = ("import socket\n"
            "try:\n"
            "    socket.getaddrinfo('other.test', 80)\n"
            "except socket.gaierror as e:\n"
            "    print('refused', e.errno)\n")
    res = run_guarded(["--seccomp", "--allow", "allowed.test"], py(code))
    assert res.stdout.startswith("refused"), res.describe()
    assert "other.test" not in " ".join(dns_log.names_since(mark))


def test_seccomp_static_child_stays_under_the_layer(net_prog, sandbox, servers, run_guarded):
    code = "import subprocess, sys; subprocess.run(sys.argv[1:])"
    res = run_guarded(["--seccomp"], py(code) + [net_prog, "connect", OTHER_IP, 5432])
    assert res.stdout == f"connect -1 {EACCES}\n" and res.returncode == 3, res.describe()
    assert no_refusal(res), res.describe()
    assert [a["layer"] for a in res.attempts("connect")] == ["kernel"], res.describe()


def test_seccomp_io_uring_refused_for_a_dynamic_program(loopback, run_guarded):
    code = ("import ctypes, os\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "params = ctypes.create_string_buffer(120)\n"
            "r = libc.syscall(425, 4, params)\n"
            "print(r, ctypes.get_errno() if r < 0 else 0)\n")
    res = run_guarded(["--seccomp"], py(code))
    assert res.stdout == f"-1 {EPERM}\n", res.describe()


# --------------------------------------------------------------------------------------------
# Nested runs: the inner launcher's supervisor connects through libc, where the outer run's
# library checks it too, so the kernel layer narrows like the library


def test_nested_run_with_a_static_command_narrows(net_prog, egress_bin, sandbox, servers, tmp_path):
    from conftest import finish, guarded_env, load_report, spawn
    outer, inner = tmp_path / "outer.jsonl", tmp_path / "inner.jsonl"
    results = {}
    for dest in (ALLOWED_IP, OTHER_IP):
        argv = [egress_bin, "--report", outer, "--allow", ALLOWED_IP, "--",
                egress_bin, "--report", inner, "--allow", ALLOWED_IP, "--allow", OTHER_IP, "--",
                net_prog, "connect", dest, 5432]
        p = spawn(argv, env=guarded_env())
        out, err = finish(p)
        results[dest] = (p.returncode, out, err, load_report(outer), load_report(inner))
    rc, out, err, _, inner_lines = results[ALLOWED_IP]
    assert out == "connect 0 0\n" and rc == 0, (out, err)
    rc, out, err, outer_lines, inner_lines = results[OTHER_IP]
    assert out == f"connect -1 {EACCES}\n", (out, err)
    assert rc == 3, (rc, err)  # the outer run denied it
    [line] = [o for o in inner_lines if o["type"] == "connect"]
    assert line["decision"] == "allow" and line["layer"] == "kernel", inner_lines
    assert any(o["type"] == "connect" and o["addr"] == OTHER_IP and o["decision"] == "deny"
               for o in outer_lines), outer_lines


def test_without_the_layer_a_static_command_is_refused_saying_why(net_prog, egress_bin, tmp_path):
    # Under an outer --seccomp run the inner launcher cannot have a listener of its own (one
    # per filter chain): it falls back to refusing, and says why.
    from conftest import finish, guarded_env, load_report, spawn
    inner = tmp_path / "inner.jsonl"
    argv = [egress_bin, "--seccomp", "--allow", "loopback", "--",
            egress_bin, "--report", inner, "--", net_prog, "connect", "127.0.0.1", 9]
    p = spawn(argv, env=guarded_env())
    out, err = finish(p)
    assert p.returncode == 126 and out == "", (p.returncode, out, err)
    assert "kernel layer is unavailable" in err and "seccomp listener" in err, err
    [line] = [o for o in load_report(inner) if o["type"] == "process" and o["guarded"] is False]
    assert line["refused"] is True and "statically linked" in line["reason"], line


@pytest.mark.parametrize("mode", ["block", "audit"])
def test_source_route_option_refused_for_a_static_program(mode, build_dir, run_guarded):
    prog = _static(build_dir, "kl_srcroute")
    res = run_guarded([] if mode == "block" else ["--audit"], [prog])
    want = f"lsrr -1 {EACCES}\nnop 0 0\n" if mode == "block" else "lsrr 0 0\nnop 0 0\n"
    assert res.stdout == want, res.describe()
    [line] = kernel_lines(res, "connect")
    assert line["call"] == "setsockopt" and "source routing" in line["reason"], res.describe()


# --------------------------------------------------------------------------------------------
# posix_spawn of a static program: a guarded trampoline execs it under the layer


@pytest.fixture(scope="session")
def argv_prog(build_dir):
    return _static(build_dir, "kl_argv")


@pytest.fixture(scope="session")
def spawn_piped(compile_c):
    return compile_c(PROGS / "spawn_piped.c", "spawn_piped")


def _spawned_ok(res, port):
    """The static child ran under the layer: its output came through the dup2'd pipe with its
    own argv[0], the denied connect failed with EACCES, the loopback one worked."""
    assert f"pipe: connect {OTHER_IP} -1 {EACCES}\n" in res.stdout, res.describe()
    assert "pipe: connect 127.0.0.1 0 0\n" in res.stdout, res.describe()
    assert res.returncode == 3, res.describe()
    denied = [a for a in kernel_lines(res, "connect") if a["decision"] == "deny"]
    assert [a["addr"] for a in denied] == [OTHER_IP], res.describe()
    assert all(a["exe"].endswith("kl_argv-static") for a in kernel_lines(res)), res.describe()
    assert len(layered(res)) == 1 and "statically linked" in layered(res)[0]["reason"], res.describe()
    assert no_refusal(res), res.describe()


@pytest.mark.parametrize("call", ["spawn", "spawnp"])
def test_posix_spawn_of_a_static_program(call, argv_prog, spawn_piped, sandbox, loopback, run_guarded):
    path = str(argv_prog) if call == "spawn" else argv_prog.name
    env = {} if call == "spawn" else {"PATH": f"{argv_prog.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    res = run_guarded(["--allow", f"127.0.0.1:{loopback.tcp1.port}"],
                      [spawn_piped, call, path, "renamed-zero", OTHER_IP, 5432, "127.0.0.1", loopback.tcp1.port],
                      env=env)
    assert "pipe: argv0 renamed-zero\n" in res.stdout, res.describe()
    assert "pipe: pgrp-own 1 usr1-blocked 1 sigpipe-ign 1\n" in res.stdout, res.describe()
    assert "rc 0\nexit 7\n" in res.stdout, res.describe()
    _spawned_ok(res, loopback.tcp1.port)


def test_posix_spawn_of_a_missing_program_fails_like_exec(spawn_piped, build_dir, run_guarded):
    res = run_guarded([], [spawn_piped, "spawn", str(build_dir / "no-such-program"), "x"])
    assert "rc 2\n" in res.stdout, res.describe()


def test_python_posix_spawn_of_a_static_program(argv_prog, sandbox, loopback, run_guarded):
    code = ("import subprocess, sys\n"
            "assert subprocess._USE_POSIX_SPAWN, 'no posix_spawn in this Python'\n"
            "r = subprocess.run(sys.argv[1:], close_fds=False, stdout=subprocess.PIPE, text=True)\n"
            "print(''.join('pipe: ' + l for l in r.stdout.splitlines(True)), end='')\n"
            "print('exit', r.returncode)\n")
    res = run_guarded(["--allow", f"127.0.0.1:{loopback.tcp1.port}"],
                      py(code) + [argv_prog, OTHER_IP, 5432, "127.0.0.1", loopback.tcp1.port])
    assert f"pipe: argv0 {argv_prog}\n" in res.stdout and "exit 7\n" in res.stdout, res.describe()
    # Python resets SIGPIPE to default in the child (POSIX_SPAWN_SETSIGDEF).
    assert "pipe: pgrp-own 0 usr1-blocked 0 sigpipe-ign 0\n" in res.stdout, res.describe()
    _spawned_ok(res, loopback.tcp1.port)


def test_trampoline_exits_like_a_shell_when_the_exec_fails(egress_bin, tmp_path):
    # What a posix_spawn caller sees when the program vanished between the check and the exec.
    plain = tmp_path / "not-executable"
    plain.write_text("data\n")
    for path, want in [(tmp_path / "missing", 127), (plain, 126)]:
        r = subprocess.run([str(egress_bin), "__exec-under-layer", str(path), "x"], capture_output=True)
        assert (r.returncode, r.stdout, r.stderr) == (want, b"", b""), (path, r)
