"""Fail closed (CONTRACT "Process tree": "If a guarded process cannot obtain its policy,
it fails closed in block mode (denies all egress) and reports that"; docs/design.md "Policy
hand-over").

Here the TEST plays the launcher, so that what the library reports can be read: it binds the
abstract event socket `egress-run.<its pid>.<policy st_ino>` (preload/policy Locator::socket_name),
makes the policy memfd itself (valid, unsealed, corrupt, missing, ...) and runs a Python child with
LD_PRELOAD=<the guard library> and EGRESS_RUN_POLICY=v1:<its pid>:<fd>:<st_dev>:<st_ino>. The
policy's binary form is written by `encode_policy` below, after preload/policy/src/wire.rs; the
controls (a valid sealed policy, and one recovered through /proc/<launcher>/fd/N) prove that the
harness is right, so that each denial is the library refusing that one defect. Loopback only."""
import errno
import fcntl
import json
import os
import resource
import socket
import struct
import subprocess

import pytest

from conftest import RUN_TIMEOUT, TcpListener, guarded_env, py

EACCES = errno.EACCES
REQUIRED_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

# --------------------------------------------------------------------------------------------
# The policy's wire format (preload/policy/src/wire.rs)

MAGIC = b"EGRSPOL\x01"
MODE_BLOCK, MODE_AUDIT = 0, 1
KIND_LOOPBACK = 0


def checksum(data):
    """The policy checksum (preload/policy/src/wire.rs `checksum`): a multiply-xorshift hash
    of the little-endian 8-byte words, seeded with the length, the checksum field as zero."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325 ^ len(data)
    full = len(data) - len(data) % 8
    # Every whole word, then the zero-padded tail (a zero word when there is none).
    for at in list(range(0, full, 8)) + [full]:
        w = 0 if at == 32 else int.from_bytes(bytes(data[at:at + 8]).ljust(8, b"\0"), "little")
        h = ((h ^ w) * 0x9E3779B97F4A7C15) & mask
        h ^= h >> 29
    return h


DENY_AS = {"eacces": 0, "offline": 1}
HEADER_LEN = 96
EVENT_KEY = bytes(range(1, 17))
# The event channel's framing (preload/policy/src/event.rs): magic, version, 3 zero bytes, key.
EVENT_HEADER_LEN = 24


def encode_policy(mode, launcher_pid, rules=("loopback",), deny_as="eacces"):
    """A policy (wire version 4, see preload/policy/src/wire.rs) whose rules are all `loopback`
    (every port) rules named by `rules`, with no grantable rules; its event key is EVENT_KEY."""
    strings, records = b"", b""
    for text in rules:
        off = len(strings)
        strings += text.encode()
        # kind prefix port_lo port_hi pad addr[16] text_off text_len name_off name_len reserved[8]
        records += struct.pack("<BBHHH16sIIII8s", KIND_LOOPBACK, 0, 0, 65535, 0, bytes(16),
                               off, len(text), len(strings), 0, bytes(8))
    # The index: counts (loopback, exact names, below names, IPv4 groups, IPv6 groups), then
    # the loopback rules' slots in rule order.
    index = struct.pack("<6I", len(rules), 0, 0, 0, 0, 0)
    index += b"".join(struct.pack("<I", i) for i in range(len(rules)))
    index_off = HEADER_LEN + len(records) + len(strings)
    total = index_off + len(index)
    # magic version mode pid rule_count total flags checksum counters_fd index_off
    # counters_ino counters_slots (no counters) deny_as event_key grantable_off grantable_len
    header = MAGIC + struct.pack("<IIIIIIQiIQQQ16sII", 4, mode, launcher_pid, len(rules), total, 0,
                                 0, 0, index_off, 0, 0, DENY_AS[deny_as], EVENT_KEY, total, 0)
    assert len(header) == HEADER_LEN
    out = bytearray(header + records + strings + index)
    out[32:40] = struct.pack("<Q", checksum(out))
    return bytes(out)


def memfd(content, seals=REQUIRED_SEALS):
    fd = os.memfd_create("egress-run-policy", os.MFD_ALLOW_SEALING)
    if content:
        os.write(fd, content)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


class FakeLauncher:
    """The launcher's side: the event socket, bound to the name the library derives from the
    policy locator."""

    def __init__(self, ino):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(f"\0egress-run.{os.getpid()}.{ino}".encode())
        self.sock.setblocking(False)

    def events(self):
        """Every datagram received so far (the library sends before it acts: by the time the
        child has exited, all of its events are queued), without its framing. A process with
        the policy sends its event key; one without sends zeros."""
        out = []
        while True:
            try:
                d = self.sock.recv(1 << 16)
            except BlockingIOError:
                return out
            assert d[:8] == b"EGEV\x01\0\0\0", d[:8]
            event = json.loads(d[EVENT_HEADER_LEN:])
            event["_key"] = d[8:EVENT_HEADER_LEN]
            out.append(event)

    def close(self):
        self.sock.close()


CHILD = ("import json, os, socket, sys\n"
         "s = socket.socket()\n"
         "try:\n"
         "    s.connect(('127.0.0.1', int(sys.argv[1]))); err = 0\n"
         "except OSError as e:\n"
         "    err = e.errno\n"
         "print(json.dumps({'pid': os.getpid(), 'errno': err}), flush=True)\n")


def run_child(preload_lib, port, policy_env, pass_fds=()):
    env = guarded_env({"LD_PRELOAD": str(preload_lib)})
    env.pop("EGRESS_RUN_POLICY", None)
    if policy_env is not None:
        env["EGRESS_RUN_POLICY"] = policy_env
    p = subprocess.run(py(CHILD) + [str(port)], env=env, pass_fds=pass_fds, capture_output=True,
                       text=True, timeout=RUN_TIMEOUT)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    out = json.loads(p.stdout)
    return out, p


@pytest.fixture
def listener():
    t = TcpListener("127.0.0.1")
    yield t
    t.close()


def locator(fd, st):
    return f"v1:{os.getpid()}:{fd}:{st.st_dev}:{st.st_ino}"


def not_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


# A number no process here has open (descriptors are allocated lowest first), below the limit.
HIGH_FD = min(900, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 20)


def setup_case(case):
    """-> (fd to name in EGRESS_RUN_POLICY, stat for its dev/ino, fds to pass, fds to close after,
    phrase expected in policy_error or None when the policy is good)."""
    valid = encode_policy(MODE_BLOCK, os.getpid())
    if case == "valid":
        fd = memfd(valid)
        return fd, os.fstat(fd), [fd], [fd], None
    if case == "recovered-through-proc":
        # The child does not get the descriptor; the "launcher" (this process) still has it.
        fd = memfd(valid)
        os.dup2(fd, HIGH_FD, inheritable=False)
        os.close(fd)
        return HIGH_FD, os.fstat(HIGH_FD), [], [HIGH_FD], None
    if case == "unsealed":
        # A valid policy, and a permissive one (audit mode): unsealed, it must not be trusted.
        fd = memfd(encode_policy(MODE_AUDIT, os.getpid()), seals=0)
        return fd, os.fstat(fd), [fd], [fd], "not sealed"
    if case == "sealed-but-not-against-sealing":
        fd = memfd(encode_policy(MODE_AUDIT, os.getpid()), seals=REQUIRED_SEALS & ~fcntl.F_SEAL_SEAL)
        return fd, os.fstat(fd), [fd], [fd], "not sealed"
    if case == "random-bytes":
        fd = memfd(os.urandom(256))
        return fd, os.fstat(fd), [fd], [fd], "magic"
    if case == "truncated":
        fd = memfd(valid[:40])
        return fd, os.fstat(fd), [fd], [fd], "truncated"
    if case == "checksum":
        bad = bytearray(valid)
        bad[valid.index(b"loopback") + 7] ^= 0x20  # 'loopback' -> 'loopbacK' in the rule text
        fd = memfd(bytes(bad))
        return fd, os.fstat(fd), [fd], [fd], "checksum"
    if case == "length":
        fd = memfd(valid + b"\0" * 16)  # longer than its header says
        return fd, os.fstat(fd), [fd], [fd], "length"
    if case == "empty":
        fd = memfd(b"")
        return fd, os.fstat(fd), [fd], [fd], "empty"
    if case == "missing":
        # Not open in the child, and closed in the launcher too: nothing to recover.
        fd = memfd(valid)
        st = os.fstat(fd)
        os.close(fd)
        assert not_open(HIGH_FD)
        return HIGH_FD, st, [], [], "missing"
    raise AssertionError(case)


CASES = ["unsealed", "sealed-but-not-against-sealing", "random-bytes", "truncated", "checksum",
         "length", "empty", "missing"]


@pytest.mark.parametrize("case", ["valid", "recovered-through-proc"])
def test_harness_control_valid_policy_allows(case, preload_lib, listener):
    fd, st, pass_fds, close, phrase = setup_case(case)
    launcher = FakeLauncher(st.st_ino)
    try:
        out, p = run_child(preload_lib, listener.port, locator(fd, st), pass_fds)
        events = launcher.events()
    finally:
        launcher.close()
        for f in close:
            os.close(f)
    assert out["errno"] == 0, (out, events, p.stderr)
    procs = [e for e in events if e["type"] == "process"]
    conns = [e for e in events if e["type"] == "connect"]
    assert len(procs) == 1 and procs[0]["pid"] == out["pid"] and "policy_error" not in procs[0], events
    assert len(conns) == 1 and conns[0]["decision"] == "allow" and conns[0]["rule"] == 0, events
    assert conns[0]["pid"] == out["pid"] and conns[0]["port"] == listener.port, events
    # Every event carries the run's key from the sealed policy.
    assert {e["_key"] for e in events} == {EVENT_KEY}, events


@pytest.mark.parametrize("case", CASES)
def test_fails_closed_and_says_why(case, preload_lib, listener):
    fd, st, pass_fds, close, phrase = setup_case(case)
    launcher = FakeLauncher(st.st_ino)
    try:
        out, p = run_child(preload_lib, listener.port, locator(fd, st), pass_fds)
        events = launcher.events()
    finally:
        launcher.close()
        for f in close:
            os.close(f)
    assert out["errno"] == EACCES, (out, events, p.stderr)
    assert listener.count() == 0, "the connect reached the listener"
    procs = [e for e in events if e["type"] == "process"]
    assert len(procs) == 1 and procs[0]["pid"] == out["pid"], events
    why = procs[0].get("policy_error")
    assert why and phrase in why, f"policy_error {why!r} does not say {phrase!r}"
    conns = [e for e in events if e["type"] == "connect"]
    assert len(conns) == 1, events
    c = conns[0]
    assert (c["pid"], c["addr"], c["port"], c["decision"], c["enforced"]) == \
        (out["pid"], "127.0.0.1", listener.port, "deny", True), events
    assert "no valid policy" in c.get("reason", ""), events
    # Without a policy there is no key: zeros (the launcher checks such a sender's ancestry).
    assert {e["_key"] for e in events} == {bytes(16)}, events


def test_reused_number_is_not_read_or_written(preload_lib, listener, tmp_path):
    """The named descriptor holds an unrelated file (the policy was closed, its number reused):
    the library must leave that file alone and fail closed."""
    victim = tmp_path / "victim"
    data = b"program data, not a policy\n" * 100
    victim.write_bytes(data)
    pol = memfd(encode_policy(MODE_BLOCK, os.getpid()))
    st = os.fstat(pol)
    os.close(pol)
    vfd = os.open(victim, os.O_RDWR)
    os.dup2(vfd, HIGH_FD, inheritable=False)
    os.close(vfd)
    launcher = FakeLauncher(st.st_ino)
    try:
        out, p = run_child(preload_lib, listener.port, locator(HIGH_FD, st), [HIGH_FD])
        events = launcher.events()
        # The child shared this open file description: its offset says whether it was read.
        offset = os.lseek(HIGH_FD, 0, os.SEEK_CUR)
    finally:
        launcher.close()
        os.close(HIGH_FD)
    assert offset == 0, f"the unrelated file was read or written (offset {offset})"
    assert victim.read_bytes() == data, "the unrelated file was changed"
    assert out["errno"] == EACCES and listener.count() == 0, (out, events, p.stderr)
    procs = [e for e in events if e["type"] == "process"]
    assert len(procs) == 1 and "reused" in procs[0].get("policy_error", ""), events
    conns = [e for e in events if e["type"] == "connect"]
    assert len(conns) == 1 and conns[0]["decision"] == "deny", events


@pytest.mark.parametrize("value", [
    None,  # unset: a scrubbed environment the exec hooks could not repair
    "",
    "garbage",
    "v2:{pid}:3:1:2",  # unknown version
    "v1:0:3:1:2",  # launcher pid 0
    "v1:{pid}:3:1",  # a field short
    "v1:{pid}:3:1:2:9",  # a field too many
    "v1:{pid}:x:1:2",
])
def test_no_locator_fails_closed(value, preload_lib, listener):
    # Nothing can be reported without a locator (the socket name derives from it): only the
    # denial is checked.
    env = None if value is None else value.format(pid=os.getpid())
    out, p = run_child(preload_lib, listener.port, env)
    assert out["errno"] == EACCES, (out, p.stderr)
    assert listener.count() == 0, "the connect reached the listener"


def _wrong_class(lib):
    b = bytearray(lib)
    b[4] = 1  # EI_CLASS: ELFCLASS32; the loader says "wrong ELF class ... ignored"
    return bytes(b)


UNUSABLE = {
    "wrong-elf-class": _wrong_class,
    "truncated": lambda lib: lib[:4096],  # the loader maps past its end: SIGBUS before main
}


# Regression: before commit d296fbe check_library() read only the 4-byte ELF magic: the
# wrong-class library ran COMMAND unguarded (exit 0, "0 processes"), the truncated one died of
# SIGBUS in the loader (exit 135).
@pytest.mark.parametrize("kind", UNUSABLE)
def test_unusable_library_is_125(kind, egress_bin, preload_lib, tmp_path):
    """test_exit_status.py::test_library_missing_is_125 covers a missing library. A library
    that is there but cannot be loaded must stop egress-run the same way (125, COMMAND not
    started), not run COMMAND unguarded."""
    lone = tmp_path / "lone" / "egress-run"
    lone.parent.mkdir()
    lone.write_bytes(egress_bin.read_bytes())
    lone.chmod(0o755)
    (lone.parent / preload_lib.name).write_bytes(UNUSABLE[kind](preload_lib.read_bytes()))
    marker = tmp_path / "started"
    p = subprocess.run([lone, "--", *py(f"open({str(marker)!r}, 'w')")], capture_output=True,
                       text=True, timeout=RUN_TIMEOUT, env=guarded_env())
    assert p.returncode == 125, (p.returncode, p.stderr)
    assert not marker.exists(), "COMMAND was started"
    assert p.stderr.startswith("egress-run: ") and preload_lib.name in p.stderr, p.stderr
