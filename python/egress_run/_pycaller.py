"""The report's ``py_caller``: which Python code made a connect, send or lookup.

An audit hook (PEP 578) sees ``socket.connect``, ``socket.sendto``, ``socket.sendmsg`` and
``socket.getaddrinfo`` on the calling thread just before the call, finds the first frame
outside the standard library (and outside this package) and tells the guard library, which
puts ``module:function`` on the attempt's report line. Installed once, when the package is
imported in a guarded process; other audit events cost one set lookup.
"""

from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
from types import FrameType
from typing import Any, Dict, Optional, Tuple

from . import _abi

_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"})
_installed = False
_stdlib_dirs: Tuple[str, ...] = ()
_is_stdlib: Dict[str, bool] = {}
_HERE = os.path.dirname(os.path.abspath(__file__))


def _stdlib(filename: str) -> bool:
    known = _is_stdlib.get(filename)
    if known is not None:
        return known
    if filename.startswith("<"):
        result = True  # frozen modules, <string> is not: see below
        if filename in ("<string>", "<stdin>") or filename.startswith("<ipython"):
            result = False
    else:
        path = os.path.abspath(filename)
        in_lib = any(path.startswith(d) for d in _stdlib_dirs)
        third_party = "site-packages" in path or "dist-packages" in path
        result = (in_lib and not third_party) or path.startswith(_HERE)
    _is_stdlib[filename] = result
    return result


def _first_outside(frame: Optional[FrameType]) -> Optional[str]:
    while frame is not None:
        code = frame.f_code
        if not _stdlib(code.co_filename):
            module = frame.f_globals.get("__name__", "?")
            name = getattr(code, "co_qualname", code.co_name)
            return f"{module}:{name}"
        frame = frame.f_back
    return None


def _hook(event: str, args: Tuple[Any, ...]) -> None:
    if event not in _EVENTS:
        return
    if event != "socket.getaddrinfo":
        address = args[1] if len(args) > 1 else None
        if not isinstance(address, tuple):
            return  # Unix and other non-IP sockets: not egress
    lib = _abi.library()
    if lib is None:
        return
    try:
        where = _first_outside(sys._getframe(1))
    except Exception:  # noqa: BLE001 - never break the program's socket call
        return
    if where:
        lib.egress_run_v1_set_py_caller(where.encode("utf-8", "replace")[:127])


def install() -> None:
    """Installs the audit hook once, in a guarded process whose library has the ABI."""
    global _installed, _stdlib_dirs
    if _installed:
        return
    lib = _abi.library()
    if lib is None or not hasattr(lib, "egress_run_v1_set_py_caller"):
        return
    lib.egress_run_v1_set_py_caller.restype = ctypes.c_int
    lib.egress_run_v1_set_py_caller.argtypes = [ctypes.c_char_p]
    paths = sysconfig.get_paths()
    _stdlib_dirs = tuple(
        os.path.abspath(p) + os.sep for p in {paths.get("stdlib"), paths.get("platstdlib")} if p
    )
    _installed = True
    sys.addaudithook(_hook)
