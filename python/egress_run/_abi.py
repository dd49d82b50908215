"""The guard library's C ABI, version 1 (docs/scopes.md), through ctypes.

The library is found among the symbols the process already has (``CDLL(None)``): a process
egress-run guards has it preloaded. Nothing here trusts an environment variable.
"""

from __future__ import annotations

import ctypes
import json
import threading
from typing import Any, Dict, List, Optional

ABI_VERSION = 1
FLAG_BLOCK = 1
FLAG_WITH_RUN_RULES = 2

_lib: Optional[ctypes.CDLL] = None
_looked = False
_lock = threading.Lock()


def library() -> Optional[ctypes.CDLL]:
    """The preloaded guard library, or None outside a guarded process."""
    global _lib, _looked
    if _looked:
        return _lib
    with _lock:
        if not _looked:
            _lib = _find()
            _looked = True
    return _lib


def _find() -> Optional[ctypes.CDLL]:
    try:
        lib = ctypes.CDLL(None)
        version = lib.egress_run_abi_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_uint
    version.argtypes = []
    if version() != ABI_VERSION:
        return None
    lib.egress_run_v1_mode.restype = ctypes.c_int
    lib.egress_run_v1_mode.argtypes = []
    lib.egress_run_v1_scope_enter.restype = ctypes.c_int
    lib.egress_run_v1_scope_enter.argtypes = [
        ctypes.c_char_p,
        ctypes.c_uint,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.egress_run_v1_scope_leave.restype = ctypes.c_int
    lib.egress_run_v1_scope_leave.argtypes = [ctypes.c_int]
    lib.egress_run_v1_scope_attempts.restype = ctypes.c_ssize_t
    lib.egress_run_v1_scope_attempts.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    lib.egress_run_v1_test_attempts.restype = ctypes.c_ssize_t
    lib.egress_run_v1_test_attempts.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    lib.egress_run_v1_set_test.restype = ctypes.c_int
    lib.egress_run_v1_set_test.argtypes = [ctypes.c_char_p]
    return lib


def guarded() -> bool:
    """True when this process runs under egress-run's guard library."""
    return library() is not None


NOT_GUARDED = (
    "this process is not guarded by egress-run; run it under the guard: "
    "egress-run [--grantable RULE]... -- python ... (or pytest --egress)"
)


def _require() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError(NOT_GUARDED)
    return lib


def audit_mode() -> bool:
    return _require().egress_run_v1_mode() == 1


def enter(rules: List[str], flags: int) -> int:
    """Enters a scope on this thread; returns its depth. ValueError names a refused rule."""
    lib = _require()
    for rule in rules:
        if "\n" in rule or "\0" in rule:
            raise ValueError(f"invalid rule {rule!r}: a rule is one line")
    err = ctypes.create_string_buffer(1024)
    depth = lib.egress_run_v1_scope_enter("\n".join(rules).encode(), flags, err, len(err))
    if depth < 0:
        raise ValueError(err.value.decode(errors="replace"))
    return int(depth)


def leave(depth: int) -> None:
    if _require().egress_run_v1_scope_leave(depth) != 0:
        raise RuntimeError(f"scope {depth} is not this thread's innermost scope")


def _read(call: Any) -> Optional[List[Dict[str, Any]]]:
    size = 1 << 16
    while True:
        buf = ctypes.create_string_buffer(size)
        n = call(buf, size)
        if n < 0:
            return None
        if n < size:
            break
        size = n + 1
    out: List[Dict[str, Any]] = []
    for line in buf.value.decode(errors="replace").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def scope_attempts(depth: int) -> List[Dict[str, Any]]:
    lib = _require()
    got = _read(lambda b, n: lib.egress_run_v1_scope_attempts(depth, b, n))
    return got or []


def test_attempts() -> List[Dict[str, Any]]:
    lib = _require()
    got = _read(lambda b, n: lib.egress_run_v1_test_attempts(b, n))
    return got or []


def set_test(node_id: Optional[str]) -> None:
    _require().egress_run_v1_set_test(node_id.encode() if node_id else None)
