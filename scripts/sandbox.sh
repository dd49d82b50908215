#!/usr/bin/env bash
# scripts/sandbox.sh CMD [ARGS...]
#
# Runs CMD inside a private network namespace (and mount namespace) made for the end-to-end
# tests, so that nothing a test sends can leave this machine:
#
#   - only `lo` exists; it carries 127.0.0.0/8, ::1 and the test addresses
#       203.0.113.10/32   198.51.100.20/32   192.0.2.53/32 (the resolver)   2001:db8::10/128
#     (any other destination answers ENETUNREACH at once);
#   - /etc/resolv.conf, /etc/hosts and /etc/nsswitch.conf are replaced, inside the namespace
#     only, so that every libc lookup goes to the test resolver at 192.0.2.53 (/etc/hosts
#     holds localhost and hostsfile-v4.test -> 203.0.113.10, IPv4 only);
#   - the test resolver (dnsmasq, or scripts/dns_responder.py where dnsmasq cannot run) answers
#       allowed.test -> 203.0.113.10    other.test, *.other.test -> 198.51.100.20
#       v6.test -> 2001:db8::10
#     and logs every query it receives to $EGRESS_DNS_LOG.
#
# CMD sees EGRESS_SANDBOX=1, EGRESS_SANDBOX_DIR (a temp dir) and EGRESS_DNS_LOG. The test names
# resolve only in the namespace. As root this uses `unshare -nm`; otherwise `unshare -rnm`.
# Where namespaces are not permitted, CMD runs without them and EGRESS_SANDBOX unset: tests
# that need the namespace then skip, saying why.
#
# Environment: EGRESS_SANDBOX_DNS=python forces the Python responder; EGRESS_SANDBOX_KEEP=1
# keeps the temp dir (its path is printed).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
self="$here/$(basename "${BASH_SOURCE[0]}")"

if [ $# -eq 0 ]; then
    echo "usage: scripts/sandbox.sh CMD [ARGS...]" >&2
    exit 2
fi

# Already inside a sandbox: just run CMD.
if [ "${EGRESS_SANDBOX:-}" = 1 ] && [ -z "${_EGRESS_SANDBOX_STAGE:-}" ]; then
    exec "$@"
fi

if [ -z "${_EGRESS_SANDBOX_STAGE:-}" ]; then
    if [ "$(id -u)" = 0 ]; then uflags=(-nm); else uflags=(-rnm); fi
    reason=
    if ! command -v unshare >/dev/null 2>&1; then
        reason="unshare(1) is not installed"
    elif ! out=$(unshare "${uflags[@]}" --propagation private true 2>&1); then
        reason=$(printf '%s' "${out:-unshare ${uflags[*]} failed}" | head -n 1)
    else
        export _EGRESS_SANDBOX_STAGE=inner
        exec unshare "${uflags[@]}" --propagation private "$self" "$@"
    fi
    echo "sandbox: network namespaces not permitted here ($reason); tests that need them will skip" >&2
    unset EGRESS_SANDBOX EGRESS_SANDBOX_DIR EGRESS_DNS_LOG
    export EGRESS_SANDBOX_UNAVAILABLE="network namespaces not permitted here ($reason)"
    exec "$@"
fi

# ---- inside the new namespaces ----
unset _EGRESS_SANDBOX_STAGE
die() { echo "sandbox: $*" >&2; exit 125; }

# Safety first: this must be a fresh network namespace holding nothing but lo.
links=$(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//')
[ "$links" = "lo" ] || die "refusing to run: the network namespace has links other than lo: $(echo $links)"
if [ -r /proc/1/ns/net ] && [ "$(readlink /proc/1/ns/net)" = "$(readlink /proc/self/ns/net)" ]; then
    die "refusing to run: still in the network namespace of pid 1"
fi

ip link set lo up || die "cannot bring lo up"
for a in 203.0.113.10/32 198.51.100.20/32 192.0.2.53/32; do
    ip addr add "$a" dev lo || die "cannot add $a to lo"
done
ip -6 addr add 2001:db8::10/128 dev lo nodad || die "cannot add 2001:db8::10/128 to lo"

dir=$(mktemp -d "${TMPDIR:-/tmp}/egress-sandbox.XXXXXX") || die "mktemp failed"
dns_pid=
cleanup() {
    if [ -n "$dns_pid" ]; then
        kill "$dns_pid" 2>/dev/null
        wait "$dns_pid" 2>/dev/null
    fi
    if [ "${EGRESS_SANDBOX_KEEP:-}" = 1 ]; then
        echo "sandbox: kept $dir" >&2
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT

printf 'nameserver 192.0.2.53\noptions attempts:1 timeout:1\n' >"$dir/resolv.conf"
# hostsfile-v4.test: a name /etc/hosts lists for IPv4 only (an IPv6 lookup of it asks DNS).
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n203.0.113.10\thostsfile-v4.test\n' >"$dir/hosts"
# Keep every other database as it is; make host lookups plain files + DNS (no nscd, no
# systemd-resolved, no mDNS: nothing that could ask a resolver outside the namespace).
if [ -r /etc/nsswitch.conf ]; then
    grep -v '^[[:space:]]*hosts:' /etc/nsswitch.conf >"$dir/nsswitch.conf"
fi
echo 'hosts: files dns' >>"$dir/nsswitch.conf"

mount --bind "$dir/resolv.conf" /etc/resolv.conf || die "cannot bind-mount /etc/resolv.conf"
mount --bind "$dir/hosts" /etc/hosts || die "cannot bind-mount /etc/hosts"
mount --bind "$dir/nsswitch.conf" /etc/nsswitch.conf || die "cannot bind-mount /etc/nsswitch.conf"
# nscd would answer from outside the namespace: hide its socket if there is one.
for d in /var/run/nscd /run/nscd; do
    [ -d "$d" ] && { mount -t tmpfs none "$d" || die "cannot hide $d"; }
done
grep -q '^nameserver 192.0.2.53$' /etc/resolv.conf || die "/etc/resolv.conf was not replaced"

zone=(--address=/allowed.test/203.0.113.10 --address=/other.test/198.51.100.20
      --address=/v6.test/2001:db8::10 --address=/secret.other.test/198.51.100.20)
log="$dir/dns.log"
: >"$log"

dns_ready() {
    local i
    for i in $(seq 100); do
        kill -0 "$dns_pid" 2>/dev/null || return 1
        python3 "$here/dns_responder.py" --probe 192.0.2.53 allowed.test 203.0.113.10 && return 0
        sleep 0.1
    done
    return 1
}

dns_kind=
if [ "${EGRESS_SANDBOX_DNS:-}" != python ] && command -v dnsmasq >/dev/null 2>&1; then
    dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
        --bind-interfaces --listen-address=192.0.2.53 --local=/test/ \
        --log-queries --log-facility="$log" --user=root --group=root --pid-file= \
        "${zone[@]}" 2>"$dir/dnsmasq.err" &
    dns_pid=$!
    if dns_ready; then
        dns_kind=dnsmasq
    else
        kill "$dns_pid" 2>/dev/null; wait "$dns_pid" 2>/dev/null
        dns_pid=
    fi
fi
if [ -z "$dns_kind" ]; then
    python3 "$here/dns_responder.py" --listen 192.0.2.53 --log "$log" "${zone[@]}" \
        2>"$dir/dns_responder.err" &
    dns_pid=$!
    dns_ready && dns_kind=dns_responder.py || {
        cat "$dir"/*.err >&2 2>/dev/null
        die "no test DNS server could be started"
    }
fi

export EGRESS_SANDBOX=1 EGRESS_SANDBOX_DIR="$dir" EGRESS_DNS_LOG="$log" EGRESS_SANDBOX_RESOLVER="$dns_kind"
unset EGRESS_SANDBOX_UNAVAILABLE
"$@"
status=$?
exit "$status"
