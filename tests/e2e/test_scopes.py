"""Per-thread scopes (the library's C ABI, and the Python package on top of it): a scope lets
its own thread, and native code on it, reach what it allows, bounded by the run's rules plus
`--grantable`; other threads, children and later code are not affected (docs/scopes.md).

Loopback only, except the name test, which uses the sandbox."""
import json
import textwrap

import pytest

from conftest import PYTHON, REPO

EACCES = 13
PKG = {"PYTHONPATH": str(REPO / "python")}

PROLOGUE = textwrap.dedent("""
    import ctypes, json, os, socket, subprocess, sys, threading
    import egress_run
    from egress_run import egress_guard, EgressViolation

    def tcp(port, host="127.0.0.1"):
        s = socket.socket()
        try:
            s.connect((host, port))
            return "ok"
        except OSError as e:
            return e.errno
        finally:
            s.close()

    libc = ctypes.CDLL(None, use_errno=True)

    def native(port):
        # connect(2) called from native code through ctypes, not through Python's socket module
        fd = libc.socket(2, 1, 0)
        sa = (ctypes.c_ubyte * 16)(2, 0, port >> 8, port & 255, 127, 0, 0, 1)
        rc = libc.connect(fd, sa, 16)
        err = ctypes.get_errno()
        libc.close(fd)
        return "ok" if rc == 0 else err

    def in_thread(f, *a):
        out = []
        t = threading.Thread(target=lambda: out.append(f(*a)))
        t.start(); t.join()
        return out[0]

    def in_fork(f, *a):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, json.dumps(f(*a)).encode()); os._exit(0)
        os.close(w); os.waitpid(pid, 0)
        return json.loads(os.read(r, 100))

    def in_child(port):
        code = f"import socket; s=socket.socket(); print(s.connect_ex(('127.0.0.1', {port})))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        return "ok" if out.strip() == "0" else int(out)
""")


def script(body):
    return [PYTHON, "-c", PROLOGUE + textwrap.dedent(body)]


def test_a_scope_lets_its_own_thread_reach_what_it_allows(loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded(["--grantable", "loopback", "--exit-status", "command"], script(f"""
        out = {{"before": tcp({port})}}
        with egress_guard(["127.0.0.1:{port}"]) as rep:
            out["python"] = tcp({port})
            out["native"] = native({port})
            out["other_port"] = tcp({loopback.tcp2.port})
            out["thread"] = in_thread(tcp, {port})
            out["thread_native"] = in_thread(native, {port})
            out["fork"] = in_fork(tcp, {port})
            out["child"] = in_child({port})
        print(json.dumps(out))
    """), env=PKG)
    # The other port's denial (and the thread's, fork's, child's) were caught inside the
    # scope; leaving it raised EgressViolation for the thread's own.
    assert "EgressViolation" in res.stderr and "127.0.0.1:" in res.stderr, res.describe()
    res = run_guarded(["--grantable", "loopback", "--exit-status", "command"], script(f"""
        out = {{"before": tcp({port})}}
        with egress_guard(["127.0.0.1:{port}"]) as rep:
            out["python"] = tcp({port})
            out["native"] = native({port})
            out["thread"] = in_thread(tcp, {port})
            out["thread_native"] = in_thread(native, {port})
            out["fork"] = in_fork(tcp, {port})
            out["child"] = in_child({port})
        out["after"] = tcp({port})
        out["scope"] = [(a["decision"], a["port"]) for a in rep.attempts]
        print(json.dumps(out))
    """), env=PKG)
    out = res.outputs()[0]
    assert out["python"] == "ok" and out["native"] == "ok", res.describe()
    for where in ("before", "thread", "thread_native", "fork", "child", "after"):
        assert out[where] == EACCES, (where, res.describe())
    # The scope's own report holds the attempts of its thread only.
    assert out["scope"] == [["allow", port]], res.describe()
    allowed = res.attempts("connect", port=port, decision="allow")
    assert allowed and all(a["rule"] == "loopback" for a in allowed), res.describe()
    assert res.count("connect", port=port, decision="deny") == 6, res.describe()


def test_a_rule_outside_the_bound_is_refused_at_entry_naming_it(loopback, run_guarded):
    body = """
        out = {}
        for rules in (["203.0.113.10"], ["loopback"], ["127.0.0.1:80", "*.example.org"]):
            try:
                with egress_guard(rules):
                    out[rules[-1]] = "entered"
            except ValueError as e:
                out[rules[-1]] = str(e)
        print(json.dumps(out))
    """
    res = run_guarded(["--grantable", "127.0.0.0/8"], script(body), env=PKG)
    assert res.run_line["grantable"] == ["127.0.0.0/8"], res.describe()
    out = res.outputs()[0]
    assert "'203.0.113.10' is outside" in out["203.0.113.10"]
    assert "'loopback' is outside" in out["loopback"], "loopback is wider than 127.0.0.0/8"
    assert "'*.example.org' is outside" in out["*.example.org"]
    # Nothing is grantable unless named; the run's own rules bound scopes too.
    res = run_guarded([], script(body), env=PKG)
    assert "grantable" not in res.run_line
    out = res.outputs()[0]
    assert "is outside" in out["loopback"]
    out = run_guarded(["--allow", "loopback", "--allow", "*.test"], script(body), env=PKG).outputs()[0]
    assert out["loopback"] == "entered"
    assert "'*.example.org' is outside" in out["*.example.org"]
    out = run_guarded(["--allow", "*.org", "--grantable", "loopback"], script(body),
                      env=PKG).outputs()[0]
    assert out["*.example.org"] == "entered"


def test_a_caught_denial_still_raises_egress_violation_on_leaving(loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded(["--allow", "loopback", "--exit-status", "command"], script(f"""
        out = {{}}
        try:
            with egress_guard([]):
                try:
                    socket.create_connection(("127.0.0.1", {port}))
                except PermissionError as e:
                    out["at_once"] = e.errno
        except EgressViolation as v:
            out["violation"] = [(a["addr"], a["port"]) for a in v.attempts]
            out["is_permission_error"] = isinstance(v, PermissionError)
        out["after"] = tcp({port})
        print(json.dumps(out))
    """), env=PKG)
    out = res.outputs()[0]
    assert out["at_once"] == EACCES, res.describe()
    assert out["violation"] == [["127.0.0.1", port]] and out["is_permission_error"]
    assert out["after"] == "ok", "the run's rules apply again after the scope"
    denied = res.attempts("connect", port=port, decision="deny")
    assert denied and denied[0]["reason"] == "the calling thread's scope does not allow it"
    # The stderr line says where to grant it: in the scope, not with --allow.
    assert f'grant it in the scope: egress_guard(["loopback:{port}"])' in res.stderr, res.stderr


def test_a_recording_scope_refuses_nothing_and_reports_what_it_would_deny(loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded(["--allow", "loopback"], script(f"""
        with egress_guard([], block=False) as rep:
            r = tcp({port})
        print(json.dumps({{"r": r, "attempts": rep.attempts}}))
    """), env=PKG)
    out = res.outputs()[0]
    assert out["r"] == "ok", res.describe()
    [a] = out["attempts"]
    assert (a["type"], a["addr"], a["port"], a["decision"]) == ("connect", "127.0.0.1", port, "deny")
    assert res.returncode == 0, res.describe()


def test_two_threads_are_decided_by_their_own_scopes_at_the_same_moment(loopback, run_guarded):
    p1, p2 = loopback.tcp1.port, loopback.tcp2.port
    res = run_guarded(["--grantable", "loopback", "--exit-status", "command"], script(f"""
        barrier = threading.Barrier(2, timeout=30)
        out = {{}}
        def worker(name, mine, other):
            with egress_guard([f"127.0.0.1:{{mine}}"], block=False):
                barrier.wait()
                with egress_guard([f"127.0.0.1:{{mine}}"]):
                    out[name] = [native(mine), tcp(other)]
                    barrier.wait()
                    raise SystemExit  # leaves the scopes without raising EgressViolation
        ts = [threading.Thread(target=worker, args=("a", {p1}, {p2})),
              threading.Thread(target=worker, args=("b", {p2}, {p1}))]
        for t in ts: t.start()
        for t in ts: t.join()
        print(json.dumps(out))
    """), env=PKG)
    out = res.outputs()[0]
    assert out == {"a": ["ok", EACCES], "b": ["ok", EACCES]}, res.describe()


def test_scopes_nest_and_leave_in_order(loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded(["--grantable", "loopback", "--exit-status", "command"], script(f"""
        from egress_run import _abi
        out = []
        a = _abi.enter(["loopback"], 1)
        out.append(tcp({port}))
        b = _abi.enter([], 1)
        out.append(tcp({port}))
        try:
            _abi.leave(a)
        except RuntimeError as e:
            out.append("refused")
        _abi.leave(b)
        out.append(tcp({port}))
        _abi.leave(a)
        out.append(tcp({port}))
        print(json.dumps({{"depths": [a, b], "out": out}}))
    """), env=PKG)
    assert res.outputs()[0] == {"depths": [1, 2], "out": ["ok", EACCES, "refused", "ok", EACCES]}, \
        res.describe()


def test_name_rules_in_a_scope_allow_the_lookup_and_its_addresses(sandbox, servers, run_guarded):
    res = run_guarded(["--grantable", "*.test:80", "--exit-status", "command"], script("""
        out = {}
        try:
            with egress_guard(["allowed.test:80"]):
                out["allowed"] = tcp(80, "allowed.test")
                try:
                    socket.getaddrinfo("other.test", 80)
                    out["other"] = "resolved"
                except socket.gaierror as e:
                    out["other"] = "refused"
        except EgressViolation as v:
            out["violation"] = [a.get("host") for a in v.attempts]
        print(json.dumps(out))
    """), env=PKG)
    out = res.outputs()[0]
    assert out["allowed"] == "ok", res.describe()
    assert out["other"] == "refused" and out["violation"] == ["other.test"], res.describe()
    [line] = res.attempts("connect", port=80, decision="allow")
    assert line["host"] == "allowed.test" and line["rule"] == "*.test:80"


def test_outside_a_guarded_process_egress_guard_says_how_to_run_it(tmp_path):
    import subprocess
    p = subprocess.run([PYTHON, "-c", textwrap.dedent("""
        from egress_run import egress_guard
        try:
            with egress_guard():
                pass
        except RuntimeError as e:
            print(e)
    """)], capture_output=True, text=True, env={"PYTHONPATH": PKG["PYTHONPATH"], "PATH": "/usr/bin:/bin"})
    assert "not guarded by egress-run" in p.stdout and "egress-run" in p.stdout, p.stderr


def test_a_c_program_uses_the_abi_directly(compile_c, loopback, run_guarded):
    prog = compile_c(textwrap.dedent("""
        #define _GNU_SOURCE
        #include <arpa/inet.h>
        #include <dlfcn.h>
        #include <errno.h>
        #include <pthread.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        #include <sys/socket.h>
        #include <unistd.h>

        static int port;
        static int try_connect(void) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {0};
            a.sin_family = AF_INET; a.sin_port = htons(port);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
            int e = errno;
            close(fd);
            return rc == 0 ? 0 : e;
        }
        static void *thread_main(void *p) { *(int *)p = try_connect(); return NULL; }

        int main(int argc, char **argv) {
            port = atoi(argv[1]);
            unsigned (*version)(void) = dlsym(RTLD_DEFAULT, "egress_run_abi_version");
            int (*enter)(const char *, unsigned, char *, size_t) =
                dlsym(RTLD_DEFAULT, "egress_run_v1_scope_enter");
            int (*leave)(int) = dlsym(RTLD_DEFAULT, "egress_run_v1_scope_leave");
            if (!version || !enter || !leave) { puts("no abi"); return 1; }
            char rule[64], err[256];
            snprintf(rule, sizeof rule, "127.0.0.1:%d", port);
            int depth = enter(rule, 1, err, sizeof err);
            int mine = try_connect(), other = -1;
            pthread_t t;
            pthread_create(&t, NULL, thread_main, &other);
            pthread_join(t, NULL);
            int bad = enter("198.51.100.0/24", 1, err, sizeof err);
            leave(depth);
            int after = try_connect();
            printf("{\\"version\\":%u,\\"depth\\":%d,\\"mine\\":%d,\\"other\\":%d,\\"bad\\":%d,"
                   "\\"err\\":\\"%s\\",\\"after\\":%d}\\n", version(), depth, mine, other, bad,
                   err, after);
            return 0;
        }
    """), "scope_abi")
    res = run_guarded(["--grantable", "loopback", "--exit-status", "command"],
                      [prog, loopback.tcp1.port])
    out = res.outputs()[0]
    assert out["version"] == 1 and out["depth"] == 1, res.describe()
    assert (out["mine"], out["other"], out["after"]) == (0, EACCES, EACCES), res.describe()
    assert out["bad"] == -1 and "'198.51.100.0/24' is outside" in out["err"]


def test_report_lines_name_the_test_also_for_processes_it_started(loopback, run_guarded):
    port = loopback.tcp1.port
    res = run_guarded(["--allow", "loopback"], script(f"""
        from egress_run import _abi
        _abi.set_test("tests/test_x.py::test_one")
        tcp({port})
        subprocess.run(["env", "-i", "sh", "-c",
                        "{PYTHON} -c \\"import socket; socket.socket().connect_ex(('127.0.0.1', {port}))\\""])
        _abi.set_test(None)
        tcp({port})
        _abi.set_test("tests/test_x.py::test_two")
        tcp({port})
        print("{{}}")
    """), env=PKG)
    lines = res.attempts("connect", port=port)
    tests = sorted((l.get("test"), l["count"]) for l in lines if l["pid"] != lines[0]["pid"])
    assert tests == [("tests/test_x.py::test_one", 1)], res.describe()
    mine = [(l.get("test"), l["count"]) for l in lines if l["pid"] == lines[0]["pid"]]
    assert sorted(mine, key=str) == sorted([("tests/test_x.py::test_one", 1), (None, 1),
                                            ("tests/test_x.py::test_two", 1)], key=str), res.describe()
