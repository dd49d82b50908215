"""Network actions for the end-to-end tests, run under egress-run.

    netprobe.py ACTION... [--exit=N]

Each ACTION prints one JSON line: {"action": ..., "ok": true, ...} or
{"action": ..., "ok": false, "error": "PermissionError", "errno": 13, "msg": ...}.
Errors are caught, so the program exits 0 (or N) whatever the guard decided.

    http=URL                     urllib GET; prints the body
    resolve=NAME                 socket.getaddrinfo(NAME, 80)
    gethostbyname=NAME           socket.gethostbyname(NAME)
    connect=ADDR,PORT            TCP connect (AF_INET, or AF_INET6 if ADDR has a ':')
    connect6=ADDR,PORT           TCP connect on an AF_INET6 socket (for ::ffff:a.b.c.d)
    sendto=ADDR,PORT,PAYLOAD     one UDP datagram
    sendto6=ADDR,PORT,PAYLOAD    one UDP datagram from an AF_INET6 socket
    udpconnect=ADDR,PORT         connect() a UDP socket
"""
import json
import socket
import sys
import urllib.error
import urllib.request


def fam(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def act(action):
    kind, _, arg = action.partition("=")
    if kind == "http":
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(arg, timeout=20) as r:
            return {"status": r.status, "body": r.read().decode()}
    if kind == "resolve":
        infos = socket.getaddrinfo(arg, 80, proto=socket.IPPROTO_TCP)
        return {"addrs": sorted({i[4][0] for i in infos})}
    if kind == "gethostbyname":
        return {"addr": socket.gethostbyname(arg)}
    if kind in ("connect", "connect6", "udpconnect"):
        addr, port = arg.rsplit(",", 1)
        f = socket.AF_INET6 if kind == "connect6" else fam(addr)
        t = socket.SOCK_DGRAM if kind == "udpconnect" else socket.SOCK_STREAM
        with socket.socket(f, t) as s:
            s.settimeout(20)
            s.connect((addr, int(port)))
            return {"peer": s.getpeername()[0]}
    if kind in ("sendto", "sendto6"):
        addr, port, payload = arg.split(",", 2)
        f = socket.AF_INET6 if kind == "sendto6" else fam(addr)
        with socket.socket(f, socket.SOCK_DGRAM) as s:
            n = s.sendto(payload.encode(), (addr, int(port)))
            return {"sent": n}
    raise SystemExit(f"netprobe: unknown action {action!r}")


def main():
    code = 0
    for a in sys.argv[1:]:
        if a.startswith("--exit="):
            code = int(a.split("=", 1)[1])
            continue
        out = {"action": a}
        try:
            out.update(ok=True, **act(a))
        except OSError as e:
            # socket.gaierror is an OSError whose errno is the EAI_* code (EAI_FAIL = -4)
            out.update(ok=False, error=type(e).__name__, errno=e.errno, msg=str(e))
            if isinstance(e, urllib.error.URLError) and isinstance(e.reason, OSError):
                out.update(error=type(e.reason).__name__, errno=e.reason.errno, msg=str(e.reason))
        print(json.dumps(out), flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
