"""Fast paths (design.md, *Fast paths*): the shortcuts taken for speed must not open a hole.

- `connect`/`sendto` trust what the `socket` hook recorded for a descriptor instead of asking
  the kernel (fd_kinds). A number reused behind the guard's back must still be checked.
- The library links its unwinder statically (no libgcc_s.so per process): a panic inside the
  library must still be caught there.
"""
import platform

import pytest

from conftest import OTHER_IP, py, token

EACCES = 13

# close(2) by raw system call number: the guard's close hook never sees it.
SYS_CLOSE = {"x86_64": 3, "aarch64": 57}.get(platform.machine())

# A TCP socket takes the lowest free number N and is closed by raw syscall (the guard's table
# still says "TCP" for N); a UDP socket then arrives at N over SCM_RIGHTS (no hook sees that
# either). A send with an address on a TCP socket would be ignored by the kernel, so a guard
# that trusted the stale entry would let this datagram go unchecked.
REUSED_NUMBER = r"""
import ctypes, json, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
dest, tok, sys_close = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
n = tcp.detach()
assert libc.syscall(sys_close, n) == 0
socket.send_fds(a, [b"x"], [udp.fileno()])
_, fds, _, _ = socket.recv_fds(b, 16, 1)
out = {"reused": fds[0] == n}
s = socket.socket(fileno=fds[0])
try:
    s.sendto(tok, (dest, 9999))
    out["ok"] = True
except OSError as e:
    out.update(ok=False, errno=e.errno)
print(json.dumps(out))
"""


@pytest.mark.skipif(SYS_CLOSE is None, reason="raw close(2) number unknown on this architecture")
def test_reused_descriptor_number_is_still_checked(sandbox, servers, run_guarded):
    tok = token()
    res = run_guarded([], py(REUSED_NUMBER) + [OTHER_IP, tok, str(SYS_CLOSE)])
    out = res.outputs()
    assert out and out[0]["reused"], ("the UDP socket did not land on the stale number", res.describe())
    assert (out[0]["ok"], out[0].get("errno")) == (False, EACCES), res.describe()
    assert tok.encode() not in servers.udp[OTHER_IP].settle(), "the datagram left unchecked"
    sends = res.attempts("send", addr=OTHER_IP, port=9999)
    assert [(s["proto"], s["decision"], s["count"]) for s in sends] == [("udp", "deny", 1)], res.describe()
    assert res.returncode == 3, res.describe()


def test_duplicated_descriptor_keeps_its_checks(sandbox, servers, run_guarded):
    """dup2 onto a number the guard knew as TCP: the copy is UDP and its sends are checked."""
    tok = token()
    code = r"""
import json, os, socket, sys
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
os.dup2(udp.fileno(), tcp.fileno())
s = socket.socket(fileno=os.dup(tcp.fileno()))
try:
    s.sendto(sys.argv[2].encode(), (sys.argv[1], 9999)); print(json.dumps({"ok": True}))
except OSError as e:
    print(json.dumps({"ok": False, "errno": e.errno}))
"""
    res = run_guarded([], py(code) + [OTHER_IP, tok])
    out = res.outputs()
    assert (out[0]["ok"], out[0].get("errno")) == (False, EACCES), res.describe()
    assert tok.encode() not in servers.udp[OTHER_IP].settle()
    assert res.count("send", addr=OTHER_IP, port=9999, proto="udp", decision="deny") == 1, res.describe()


def test_unwinder_inside_the_library_catches_a_panic(run_guarded):
    """libgcc_s is no longer loaded for the guard: its static unwinder must still work."""
    code = "import ctypes; print(ctypes.CDLL(None).egress_preload_unwind_selftest())"
    res = run_guarded(["--allow", "loopback"], py(code))
    assert res.returncode == 0, res.describe()
    assert res.stdout.split() == ["1"], res.describe()
    procs = [p for p in res.report if p.get("type") == "process"]
    assert procs and all(p["guarded"] for p in procs), res.describe()


# The per-thread memory of the last allowed send (send_cache.rs): repeats are counted on the
# right line (the parent's, then a forked child's own), a denied destination between them is
# still refused each time, and a new socket on the same number is decided afresh.
REPEATS = r"""
import json, os, socket, sys
allowed, denied = ("127.0.0.1", int(sys.argv[1])), ("127.0.0.1", int(sys.argv[2]))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
refused = 0
for i in range(50):
    u.sendto(b"x", allowed)
    if i % 10 == 0:
        try:
            u.sendto(b"x", denied)
        except PermissionError:
            refused += 1
pid = os.fork()
if pid == 0:
    for _ in range(30):
        u.sendto(b"x", allowed)
    os._exit(0)
os.waitpid(pid, 0)
for _ in range(20):
    u.sendto(b"x", allowed)
n = u.fileno()
u.close()
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
assert t.fileno() == n
try:
    t.sendto(b"x", allowed)   # a stream socket, not connected: the kernel refuses it
except OSError:
    pass
print(json.dumps({"pid": os.getpid(), "child": pid, "refused": refused}))
"""


def test_repeated_sends_count_on_their_own_lines(run_guarded, loopback):
    ok, no = loopback.udp.port, loopback.tcp1.port
    res = run_guarded(["--allow", f"127.0.0.1:{ok}"], py(REPEATS) + [ok, no])
    out = res.outputs()[-1]
    assert res.returncode == 3, res.describe()
    assert out["refused"] == 5, res.describe()
    assert res.count("send", pid=out["pid"], port=ok, decision="allow") == 70, res.describe()
    assert res.count("send", pid=out["child"], port=ok, decision="allow") == 30, res.describe()
    assert res.count("send", port=no, decision="deny") == 5, res.describe()
