#!/usr/bin/env python3
"""A tiny authoritative DNS responder for the egress-run test sandbox.

Used by scripts/sandbox.sh when dnsmasq cannot run (inside `unshare -r` dnsmasq's setgroups()
is refused). It only ever listens on an address inside the sandbox's private network namespace
and never forwards anything anywhere.

    dns_responder.py --listen 192.0.2.53 --log DIR/dns.log \
        --address=/allowed.test/203.0.113.10 --address=/v6.test/2001:db8::10 ...
    dns_responder.py --probe 192.0.2.53 allowed.test 203.0.113.10

`--address=/NAME/ADDR` has dnsmasq's meaning: NAME and every name below it answer ADDR (A or
AAAA, by the address family). A name that matches but has no address of the asked type gets an
empty NOERROR answer; any other name gets NXDOMAIN. Each query is logged as one line in
dnsmasq's `--log-queries` format (`... query[A] allowed.test from 192.0.2.53`) and the line is
flushed before the answer is sent, so a client that got its answer can read the log at once.
"""
import argparse
import ipaddress
import os
import socket
import struct
import sys
import threading
import time

QTYPES = {1: "A", 28: "AAAA", 5: "CNAME", 12: "PTR", 15: "MX", 16: "TXT", 33: "SRV", 65: "HTTPS"}


def parse_question(msg):
    """Return (qname, qtype, qclass, end_offset) of the first question, or None."""
    if len(msg) < 12:
        return None
    qdcount = struct.unpack("!H", msg[4:6])[0]
    if qdcount < 1:
        return None
    pos, labels = 12, []
    while True:
        if pos >= len(msg):
            return None
        n = msg[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:  # no compression in a question we accept
            return None
        labels.append(msg[pos:pos + n].decode("ascii", "replace"))
        pos += n
    if pos + 4 > len(msg):
        return None
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    return ".".join(labels), qtype, qclass, pos + 4


class Zone:
    def __init__(self, entries):
        self.entries = []  # (suffix, ip_address)
        for e in entries:
            parts = e.split("/")
            if len(parts) != 3 or parts[0] != "":
                raise SystemExit(f"dns_responder: bad --address {e!r} (want /NAME/ADDR)")
            self.entries.append((parts[1].lower().rstrip("."), ipaddress.ip_address(parts[2])))

    def lookup(self, name):
        """Return (known, [addresses]) for name."""
        name = name.lower().rstrip(".")
        found, addrs = False, []
        best = -1
        for suffix, addr in self.entries:
            if name == suffix or name.endswith("." + suffix):
                # dnsmasq: the longest matching domain wins
                if len(suffix) > best:
                    best, addrs = len(suffix), []
                if len(suffix) == best:
                    addrs.append(addr)
                found = True
        return found, addrs


class Responder:
    def __init__(self, zone, log_path):
        self.zone = zone
        self.log = open(log_path, "a", buffering=1) if log_path else None
        self.lock = threading.Lock()

    def log_query(self, qname, qtype, client):
        if not self.log:
            return
        t = time.strftime("%b %d %H:%M:%S")
        tname = QTYPES.get(qtype, f"type={qtype}")
        with self.lock:
            self.log.write(f"{t} dns_responder[{os.getpid()}]: query[{tname}] {qname} from {client}\n")
            self.log.flush()

    def answer(self, msg, client):
        q = parse_question(msg)
        if q is None:
            return None
        qname, qtype, qclass, end = q
        self.log_query(qname, qtype, client)
        (qid, flags) = struct.unpack("!HH", msg[:4])
        known, addrs = self.zone.lookup(qname)
        answers = []
        if known and qclass == 1:
            for a in addrs:
                if qtype == 1 and a.version == 4:
                    answers.append((1, a.packed))
                elif qtype == 28 and a.version == 6:
                    answers.append((28, a.packed))
        rcode = 0 if known else 3
        rflags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        out = struct.pack("!HHHHHH", qid, rflags, 1, len(answers), 0, 0) + msg[12:end]
        for t, data in answers:
            out += struct.pack("!HHHIH", 0xC00C, t, 1, 0, len(data)) + data
        return out

    def serve_udp(self, sock):
        while True:
            msg, peer = sock.recvfrom(4096)
            try:
                out = self.answer(msg, peer[0])
            except Exception as e:  # never die on a bad packet
                print(f"dns_responder: {e}", file=sys.stderr)
                continue
            if out:
                sock.sendto(out, peer)

    def serve_tcp_conn(self, conn, peer):
        with conn:
            conn.settimeout(5)
            try:
                while True:
                    hdr = self._recv_exact(conn, 2)
                    if not hdr:
                        return
                    (n,) = struct.unpack("!H", hdr)
                    msg = self._recv_exact(conn, n)
                    if not msg:
                        return
                    out = self.answer(msg, peer[0])
                    if out:
                        conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return

    @staticmethod
    def _recv_exact(conn, n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def serve_tcp(self, sock):
        while True:
            conn, peer = sock.accept()
            threading.Thread(target=self.serve_tcp_conn, args=(conn, peer), daemon=True).start()


def build_query(name, qtype=1):
    q = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode("ascii")
    return q + b"\x00" + struct.pack("!HH", qtype, 1)


def probe(server, name, expect):
    """Exit 0 if `server` answers an A query for `name` with `expect`."""
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(build_query(name), (server, 53))
        data, _ = s.recvfrom(4096)
    ancount = struct.unpack("!H", data[6:8])[0]
    want = ipaddress.ip_address(expect).packed
    return 0 if ancount >= 1 and data.endswith(want) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="192.0.2.53")
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--log")
    ap.add_argument("--address", action="append", default=[])
    ap.add_argument("--probe", nargs=3, metavar=("SERVER", "NAME", "EXPECT"))
    a = ap.parse_args()
    if a.probe:
        try:
            sys.exit(probe(*a.probe))
        except OSError:
            sys.exit(1)
    fam = socket.AF_INET6 if ":" in a.listen else socket.AF_INET
    r = Responder(Zone(a.address), a.log)
    udp = socket.socket(fam, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    udp.bind((a.listen, a.port))
    tcp = socket.socket(fam, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((a.listen, a.port))
    tcp.listen(16)
    threading.Thread(target=r.serve_tcp, args=(tcp,), daemon=True).start()
    r.serve_udp(udp)


if __name__ == "__main__":
    main()
