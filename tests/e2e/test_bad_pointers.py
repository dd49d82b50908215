"""Bad pointers (issue "Innocent programs must not notice the guard", item 3): connect, sendto,
sendmsg and sendmmsg given an address, message header, iovec or control pointer the program
cannot read fail with EFAULT, as the kernel answers natively, instead of crashing in the guard
that reads it: pointers into the first page, beyond the user address space, ranges that wrap
around (no system call), and pointers into user address space that is unmapped (a page mapped
and unmapped again) or PROT_NONE (the page is probed once by a system call that reads without
faulting: design.md, *Fast paths*). Loopback only (the destination is 127.0.0.1)."""
import json
import subprocess

import pytest

from conftest import PROGS, guarded_env

EFAULT = 14
CALLS = ["connect", "sendto", "sendmsg-name", "sendmsg-hdr", "sendmsg-iov",
         "sendmsg-control", "sendmmsg", "sendmmsg-name", "syscall-connect", "syscall-sendmsg"]
HANDLED = ["one", "page", "kernel", "wrap", "protnone", "unmapped"]


@pytest.fixture
def badptr(compile_c):
    return compile_c(PROGS / "badptr.c", "badptr")


def native(cmd):
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=guarded_env(),
                       stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, r
    return json.loads(r.stdout)


@pytest.mark.parametrize("where", HANDLED)
@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("args", [["--allow", "loopback"], [], ["--audit"]])
def test_a_bad_pointer_fails_with_efault_as_natively(args, call, where, badptr, loopback, run_guarded):
    cmd = [badptr, call, where, loopback.udp.port]
    nat = native(cmd)
    assert nat["rc"] == -1 and nat["errno"] == EFAULT, nat
    res = run_guarded(args, cmd)
    assert res.returncode == 0, res.describe()
    assert res.outputs() == [nat], res.describe()
    # Nothing was decided about an address the guard could not read.
    assert not res.attempts("connect") and not res.attempts("send"), res.describe()


@pytest.mark.parametrize("where", HANDLED)
@pytest.mark.parametrize("args", [["--allow", "loopback"], ["--audit"]])
def test_a_bad_payload_to_a_dns_port_fails_with_efault(args, where, badptr, run_guarded):
    """The guard reads a datagram to port 53 for the question it asks: not an unreadable one.
    (A destination the policy denies is refused with its own errno first.)"""
    cmd = [badptr, "sendto-buf", where, 53]
    nat = native(cmd)
    assert nat == {"rc": -1, "errno": EFAULT}, nat
    res = run_guarded(args, cmd)
    assert res.returncode == 0, res.describe()
    assert res.outputs() == [nat], res.describe()
    sends = res.attempts("send", addr="127.0.0.1", port=53)
    assert len(sends) == 1 and sends[0]["host"] is None, res.describe()


@pytest.mark.parametrize("where", ["protnone", "unmapped"])
def test_a_page_found_unreadable_is_asked_again_once_mapped(where, badptr, loopback, run_guarded):
    """An unreadable page is not remembered as such: mapped there afterwards, the same address
    is read and the send goes out (allowed) or is refused (block mode without a rule)."""
    port = loopback.udp.port
    cmd = [badptr, "sendto-remapped", where, port]
    nat = native(cmd)
    assert nat == {"rc": -1, "errno": EFAULT, "again": 1}, nat
    res = run_guarded(["--allow", f"loopback:{port}"], cmd)
    assert res.returncode == 0 and res.outputs() == [nat], res.describe()
    assert [s["decision"] for s in res.attempts("send", port=port)] == ["allow"], res.describe()
    res = run_guarded([], cmd)
    assert res.outputs() == [{"rc": -1, "errno": EFAULT, "again": -1}], res.describe()
    assert [s["decision"] for s in res.attempts("send", port=port)] == ["deny"], res.describe()
