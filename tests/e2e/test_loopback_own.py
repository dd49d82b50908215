"""`loopback:own`: a loopback destination is allowed only while a process of this run listens
(TCP) or is bound (UDP) there, and no socket outside the run could take the attempt. Loopback
only: the foreign listeners are this test process's (outside the run)."""
import socket
import textwrap

import pytest

from conftest import PYTHON, REPO

EACCES = 13
PKG = {"PYTHONPATH": str(REPO / "python")}

PROLOGUE = textwrap.dedent("""
    import json, socket, subprocess, sys
    def tcp(port, host="127.0.0.1"):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            s.connect((host, port))
            return "ok"
        except OSError as e:
            return e.errno
        finally:
            s.close()
    def listener(host="127.0.0.1", port=0, reuse=False):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, port))
        s.listen(8)
        return s, s.getsockname()[1]
""")


def script(body):
    return [PYTHON, "-c", PROLOGUE + textwrap.dedent(body)]


def test_own_listeners_are_reachable_and_foreign_ones_are_not(loopback, run_guarded):
    res = run_guarded(["--allow", "loopback:own", "--exit-status", "command"], script(f"""
        out = {{}}
        srv, p = listener()
        out["own"] = tcp(p)
        out["foreign"] = tcp({loopback.tcp1.port})
        srv.close()
        out["closed"] = tcp(p)
        six, p6 = listener("::")
        out["wildcard_v4"] = tcp(p6)
        out["wildcard_v6"] = tcp(p6, "::1")
        child = subprocess.Popen([sys.executable, "-c",
            "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(8); "
            "print(s.getsockname()[1], flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
        out["child"] = tcp(int(child.stdout.readline()))
        child.kill()
        print(json.dumps(out))
    """))
    out = res.outputs()[0]
    assert out == {"own": "ok", "foreign": EACCES, "closed": EACCES, "wildcard_v4": "ok",
                   "wildcard_v6": "ok", "child": "ok"}, res.describe()
    allowed = res.attempts("connect", decision="allow")
    assert allowed and {a["rule"] for a in allowed} == {"loopback:own"}, res.describe()
    [foreign] = res.attempts("connect", port=loopback.tcp1.port)
    assert foreign["decision"] == "deny", res.describe()


def test_a_foreign_socket_sharing_the_port_makes_it_foreign(run_guarded):
    outside = socket.socket()
    outside.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    outside.bind(("127.0.0.1", 0))
    outside.listen(8)
    port = outside.getsockname()[1]
    try:
        v6 = socket.socket(socket.AF_INET6)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.bind(("::1", 0))
        v6.listen(8)
    except OSError:
        v6 = None
    try:
        body = f"""
            out = {{}}
            srv, p = listener(port={port}, reuse=True)   # SO_REUSEPORT beside an outside one
            out["shared"] = tcp(p)
        """
        if v6 is not None:
            p6 = v6.getsockname()[1]
            body += f"""
            ours, _ = listener(port={p6})                # our 127.0.0.1:P beside an outside [::1]:P
            out["ours_v4"] = tcp({p6})
            out["outside_v6"] = tcp({p6}, "::1")
            """
        body += """
            print(json.dumps(out))
        """
        res = run_guarded(["--allow", "loopback:own", "--exit-status", "command"], script(body))
        out = res.outputs()[0]
        assert out["shared"] == EACCES, res.describe()
        if v6 is not None:
            assert (out["ours_v4"], out["outside_v6"]) == ("ok", EACCES), res.describe()
    finally:
        outside.close()
        if v6 is not None:
            v6.close()


def test_udp_sockets_bound_by_the_run_are_its_own(loopback, run_guarded):
    res = run_guarded(["--allow", "loopback:own", "--exit-status", "command"], script(f"""
        def send(port):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.sendto(b"x", ("127.0.0.1", port))
                return "ok"
            except OSError as e:
                return e.errno
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        print(json.dumps({{"own": send(sink.getsockname()[1]), "foreign": send({loopback.udp.port})}}))
    """))
    assert res.outputs()[0] == {"own": "ok", "foreign": EACCES}, res.describe()


def test_loopback_own_is_grantable_in_a_scope(loopback, run_guarded):
    res = run_guarded(["--grantable", "loopback:own", "--exit-status", "command"], script(f"""
        from egress_run import egress_guard, EgressViolation
        srv, p = listener()
        out = {{"outside_scope": tcp(p)}}
        try:
            with egress_guard(["loopback:own"]):
                out["own"] = tcp(p)
                out["foreign"] = tcp({loopback.tcp1.port})
        except EgressViolation as v:
            out["violation"] = [a["port"] for a in v.attempts]
        try:
            with egress_guard(["loopback"]):
                pass
        except ValueError as e:
            out["wider"] = str(e)
        print(json.dumps(out))
    """), env=PKG)
    out = res.outputs()[0]
    assert out["outside_scope"] == EACCES and out["own"] == "ok", res.describe()
    assert out["foreign"] == EACCES and out["violation"] == [loopback.tcp1.port], res.describe()
    assert "'loopback' is outside" in out["wider"]
