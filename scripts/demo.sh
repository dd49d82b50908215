#!/usr/bin/env bash
# `make demo`: egress-run on a safe example. A local HTTP server on loopback stands in for
# "the network"; loopback is not implicitly allowed, so block mode denies the request, audit
# mode lets it through and records it. Nothing leaves this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/egress-run
[ -x "$bin" ] || { echo "demo: build first (make)"; exit 1; }
py=$(python3 -c 'import sys; print(sys.executable)')
work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

# A loopback web server on a free port.
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work" && exec "$py" -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
server=$!
for _ in $(seq 50); do "$py" -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break; sleep 0.1; done

client=(curl -sS -o /dev/null -w 'curl: HTTP %{http_code}\n' "http://127.0.0.1:$port/")
command -v curl >/dev/null || client=("$py" -c "import urllib.request as u; print('python: HTTP', u.urlopen('http://127.0.0.1:$port/').status)")

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step "egress-run --report $work/block.jsonl -- ${client[*]}"
set +e
"$bin" --report "$work/block.jsonl" -- "${client[@]}"
echo "(exit status $?)"

step "egress-run --audit --report $work/audit.jsonl -- ${client[*]}"
"$bin" --audit --report "$work/audit.jsonl" -- "${client[@]}"
echo "(exit status $?)"

step "egress-run --allow loopback:$port -- ${client[*]}"
"$bin" --allow "loopback:$port" -- "${client[@]}"
echo "(exit status $?)"
set -e

step "cat $work/audit.jsonl   # the audit run's JSON-lines report"
cat "$work/audit.jsonl"

step "egress-run report $work/audit.jsonl   # the same report, read back as a table"
"$bin" report "$work/audit.jsonl"

step "egress-run suggest $work/audit.jsonl   # an allow file that lets the block run pass"
"$bin" suggest "$work/audit.jsonl"
