"""Calls libc's network functions the way FFI users do: through a library handle
(`ctypes.CDLL("libc.so.6")`, which is dlopen + dlsym), not through Python's socket module.

    ctypes_libc.py connect IP PORT            -> "ok" | "errno E"
    ctypes_libc.py sendto IP PORT PAYLOAD     -> "sent N" | "errno E"
    ctypes_libc.py sendmsg IP PORT PAYLOAD    -> "sent N" | "errno E"
    ctypes_libc.py getaddrinfo NAME           -> "ok ADDR" | "fail rc=R"
    ctypes_libc.py gethostbyname NAME         -> "ok ADDR" | "fail h_errno=H"
    ctypes_libc.py res_query NAME             -> "ok LEN" | "fail h_errno=H"   (libresolv.so.2)
    ctypes_libc.py res_search NAME            -> "ok LEN" | "fail h_errno=H"   (libresolv.so.2)
"""
import ctypes
import socket
import struct
import sys

libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.__h_errno_location.restype = ctypes.POINTER(ctypes.c_int)


class SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16),
                ("addr", ctypes.c_uint32), ("zero", ctypes.c_char * 8)]


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class Addrinfo(ctypes.Structure):
    pass


Addrinfo._fields_ = [("flags", ctypes.c_int), ("family", ctypes.c_int), ("socktype", ctypes.c_int),
                     ("protocol", ctypes.c_int), ("addrlen", ctypes.c_uint32),
                     ("addr", ctypes.POINTER(SockaddrIn)), ("canonname", ctypes.c_char_p),
                     ("next", ctypes.POINTER(Addrinfo))]


class Hostent(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("aliases", ctypes.c_void_p), ("addrtype", ctypes.c_int),
                ("length", ctypes.c_int), ("addr_list", ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)))]


def sockaddr(ip: str, port: str) -> SockaddrIn:
    (addr,) = struct.unpack("=I", socket.inet_aton(ip))
    return SockaddrIn(socket.AF_INET, socket.htons(int(port)), addr, b"")


def h_errno() -> int:
    return libc.__h_errno_location()[0]


def main(action: str, *args: str) -> str:
    if action == "connect":
        s = socket.socket()
        sa = sockaddr(*args)
        rc = libc.connect(s.fileno(), ctypes.byref(sa), ctypes.sizeof(sa))
        return "ok" if rc == 0 else f"errno {ctypes.get_errno()}"
    if action in ("sendto", "sendmsg"):
        ip, port, payload = args
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sa = sockaddr(ip, port)
        data = payload.encode()
        if action == "sendto":
            libc.sendto.restype = ctypes.c_ssize_t
            n = libc.sendto(s.fileno(), data, len(data), 0, ctypes.byref(sa), ctypes.sizeof(sa))
        else:
            buf = ctypes.create_string_buffer(data, len(data))
            iov = Iovec(ctypes.cast(buf, ctypes.c_void_p), len(data))
            msg = Msghdr(ctypes.cast(ctypes.byref(sa), ctypes.c_void_p), ctypes.sizeof(sa),
                         ctypes.pointer(iov), 1, None, 0, 0)
            libc.sendmsg.restype = ctypes.c_ssize_t
            n = libc.sendmsg(s.fileno(), ctypes.byref(msg), 0)
        return f"sent {n}" if n >= 0 else f"errno {ctypes.get_errno()}"
    if action == "getaddrinfo":
        res = ctypes.POINTER(Addrinfo)()
        hints = Addrinfo(0, socket.AF_INET, socket.SOCK_STREAM)
        rc = libc.getaddrinfo(args[0].encode(), None, ctypes.byref(hints), ctypes.byref(res))
        if rc != 0:
            return f"fail rc={rc}"
        addr = socket.inet_ntoa(struct.pack("=I", res.contents.addr.contents.addr))
        libc.freeaddrinfo(res)
        return f"ok {addr}"
    if action == "gethostbyname":
        libc.gethostbyname.restype = ctypes.POINTER(Hostent)
        h = libc.gethostbyname(args[0].encode())
        if not h:
            return f"fail h_errno={h_errno()}"
        return "ok " + socket.inet_ntoa(bytes(h.contents.addr_list[0][:4]))
    if action in ("res_query", "res_search"):
        resolv = ctypes.CDLL("libresolv.so.2", use_errno=True)
        answer = ctypes.create_string_buffer(4096)
        n = getattr(resolv, action)(args[0].encode(), 1, 1, answer, len(answer))  # C_IN, T_A
        return f"ok {n}" if n >= 0 else f"fail h_errno={h_errno()}"
    raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    print(main(*sys.argv[1:]), flush=True)
