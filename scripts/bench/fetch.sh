#!/usr/bin/env bash
# Fetches the pytest suite of `make bench` (the more-itertools sdist, pinned by version and
# sha256) into target/bench-cache. Runs before scripts/sandbox.sh, whose namespace has no
# network; pip talks to the package index only. Never fails: without the sdist the benchmark
# falls back to stdlib tests or skips the pytest row, saying why.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache="$root/target/bench-cache"
name=more-itertools
version=10.5.0
sha256=5482bfef7849c25dc3c6dd53a6173ae4795da2a41a80faea6700d9f5846c5da6
file="$cache/$name-$version.tar.gz"

verified() { [ -f "$1" ] && echo "$sha256  $1" | sha256sum -c --status; }

verified "$file" && exit 0
if [ "${EGRESS_SANDBOX:-}" = 1 ]; then
    echo "bench: $name $version is not in $cache and the sandbox has no network; run scripts/bench/fetch.sh first" >&2
    exit 0
fi
py=${PYTHON:-python3}
mkdir -p "$cache/download"
# --no-binary: the sdist, which carries tests/ (wheels do not). pip builds its metadata, which
# may fetch the build backend (flit_core) from the index too.
if ! "$py" -m pip download --disable-pip-version-check --no-deps --no-binary :all: \
        --retries 1 --timeout 30 -d "$cache/download" "$name==$version" >"$cache/fetch.log" 2>&1; then
    echo "bench: could not download $name==$version (see $cache/fetch.log); the pytest suite row will fall back or be skipped" >&2
    exit 0
fi
if ! verified "$cache/download/$name-$version.tar.gz"; then
    echo "bench: $name-$version.tar.gz does not have the pinned sha256; not using it" >&2
    exit 0
fi
mv "$cache/download/$name-$version.tar.gz" "$file" && rmdir "$cache/download" 2>/dev/null
echo "bench: fetched $file" >&2
