#!/usr/bin/env bash
# `make bench`: what the guard costs, against native and against peers. Compiles the C
# workloads in scripts/bench/ and the forwarding-only shim into a temp directory, runs each
# workload natively, under egress-run and under the peers (alternating), and prints tables
# (statistics by scripts/bench/run.py). Results are recorded in docs/benchmarks.md.
#
# Everything sent goes to 127.0.0.1; every loop has a fixed count. Usable directly or inside
# scripts/sandbox.sh (a private network namespace, where loopback must be up). The pytest
# suite (a pinned sdist) is fetched by scripts/bench/fetch.sh before the sandbox is entered:
# `make bench` does that; run directly, this script fetches it when it is outside the sandbox.
#
# Environment:
#   BENCH_RUNS=R      runs per variant (default 5)
#   BENCH_QUICK=1     divide every count by 10 (the pytest suite: one test file)
#   BENCH_ONLY=a,b    only these of: connect, connect-static, udp, gai, spawn, dlsym, dlsym-hooked,
#                     startup, everyday,
#                     python, pytest, rules,
#                     threads, procs, report
#   BENCH_PEERS=a,b   only these peers (default all): shim, strace, proxychains, pytest-socket
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$root/target/release/egress-run"
lib="$root/target/release/libegress_preload.so"
for f in "$bin" "$lib"; do
    [ -x "$f" ] || [ -f "$f" ] || { echo "bench: $f is missing; build first (cargo build --release)" >&2; exit 1; }
done
command -v gcc >/dev/null || { echo "bench: gcc is needed to compile the workloads" >&2; exit 1; }

# The real interpreter, not a pyenv shell shim (whose own startup would be measured).
py=$(python3 -c 'import sys; print(sys.executable)')
[ -x "$py" ] || { echo "bench: cannot find the python3 binary" >&2; exit 1; }

# Measure the programs alone: no preload of the caller's, and no policy inherited from an
# egress-run around this script.
unset LD_PRELOAD EGRESS_RUN_POLICY

work=$(mktemp -d "${TMPDIR:-/tmp}/egress-bench.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir "$work/bin"
for src in "$root"/scripts/bench/*.c; do
    name=$(basename "$src" .c)
    [ "$name" = fwd_shim ] && continue
    gcc -O2 -Wall -Wextra -pthread -o "$work/bin/$name" "$src"
done
gcc -shared -fPIC -O2 -Wall -Wextra -o "$work/bin/fwd_shim.so" "$root/scripts/bench/fwd_shim.c" -ldl
# The same connect loop, static: the library cannot enter it, the kernel layer guards it.
gcc -static -O2 -Wall -Wextra -pthread -o "$work/bin/connect-static" "$root/scripts/bench/connect.c" 2>/dev/null \
    || echo "bench: gcc -static cannot build here; skipping the connect-static workload" >&2

# Loopback must work (a fresh network namespace starts with lo down).
if ! "$work/bin/connect" 1 || ! "$work/bin/udp" 1; then
    echo "bench: TCP/UDP on 127.0.0.1 does not work here; is the loopback interface up?" >&2
    exit 1
fi

# getaddrinfo("localhost") must be answered from /etc/hosts, never by a DNS query.
skip=""
if ! grep -Eq '^[[:space:]]*(127\.[0-9.]+|::1)[[:space:]].*\blocalhost\b' /etc/hosts 2>/dev/null; then
    echo "bench: /etc/hosts has no localhost entry; skipping the getaddrinfo workload" >&2
    skip="gai"
fi

# The pytest suite: the pinned sdist if fetched, else a few stdlib test modules.
suite=(--suite-skip "no sdist in target/bench-cache and no stdlib test package")
[ "${EGRESS_SANDBOX:-}" = 1 ] || PYTHON="$py" "$root/scripts/bench/fetch.sh"
sdist="$root/target/bench-cache/more-itertools-10.5.0.tar.gz"
if ! "$py" -c 'import pytest' 2>/dev/null; then
    suite=(--suite-skip "pytest is not installed")
elif [ -f "$sdist" ] && tar -xzf "$sdist" -C "$work"; then
    suite=(--suite-dir "$work/more-itertools-10.5.0" --suite-name "more-itertools 10.5.0")
elif "$py" -c 'import test.test_textwrap' 2>/dev/null; then
    echo "bench: $sdist is missing (scripts/bench/fetch.sh); using stdlib tests for the pytest row" >&2
    suite=(--suite-stdlib)
fi

echo "bench: egress-run $("$bin" --version 2>/dev/null | head -1), $(nproc) CPUs, $(uname -r)" >&2
"$py" "$root/scripts/bench/run.py" --bin "$work/bin" --egress-run "$bin" --python "$py" \
    --work "$work" --skip "$skip" --shim "$work/bin/fwd_shim.so" "${suite[@]}"
