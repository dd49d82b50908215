#!/usr/bin/env python3
"""Builds target/wheels/egress_run-<version>-py3-none-<platform>.whl from a release build.

No build backend and no network: a wheel is a zip file with a fixed layout (PEP 427). It
holds the Python package and plugin, the launcher as a script (installed into the
environment's bin/) and the guard library as data (installed into <prefix>/lib/egress-run/,
where the launcher looks for it relative to its own path: ../lib/egress-run).
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "egress_run"


def version() -> str:
    text = (ROOT / "Cargo.toml").read_text()
    m = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not m:
        sys.exit("build_wheel: no version in Cargo.toml")
    return m.group(1)


def glibc_needed(paths: list[Path]) -> tuple[int, int] | None:
    """The highest GLIBC_x.y symbol version the ELF files need (None if unknown)."""
    best: tuple[int, int] | None = None
    for p in paths:
        try:
            out = subprocess.run(
                ["objdump", "-T", str(p)], capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        for major, minor in re.findall(r"GLIBC_(\d+)\.(\d+)", out):
            v = (int(major), int(minor))
            best = v if best is None or v > best else best
    return best


def platform_tag(paths: list[Path]) -> str:
    arch = platform.machine()
    need = glibc_needed(paths)
    if need is None:
        return f"linux_{arch}"
    return f"manylinux_{need[0]}_{need[1]}_{arch}"


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def main() -> None:
    ver = version()
    release = ROOT / "target" / "release"
    launcher = release / "egress-run"
    library = release / "libegress_preload.so"
    for p in (launcher, library):
        if not p.is_file():
            sys.exit(f"build_wheel: {p} is missing; run make build first")
    tag = f"py3-none-{platform_tag([launcher, library])}"
    out_dir = ROOT / "target" / "wheels"
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{NAME}-{ver}-{tag}.whl"
    data_dir = f"{NAME}-{ver}.data"
    info = f"{NAME}-{ver}.dist-info"

    files: list[tuple[str, bytes, int]] = []
    pkg = ROOT / "python" / NAME
    for src in sorted(pkg.iterdir()):
        if src.is_file() and src.suffix in (".py", ".typed"):
            files.append((f"{NAME}/{src.name}", src.read_bytes(), 0o644))
    files.append((f"{data_dir}/scripts/egress-run", launcher.read_bytes(), 0o755))
    files.append(
        (f"{data_dir}/data/lib/egress-run/libegress_preload.so", library.read_bytes(), 0o755)
    )
    readme = (ROOT / "README.md").read_text()
    metadata = (
        "Metadata-Version: 2.1\n"
        f"Name: egress-run\nVersion: {ver}\n"
        "Summary: Run a command with network egress denied except what you allow; "
        "per-test scopes and a pytest plugin\n"
        "License: MIT OR Apache-2.0\n"
        "Requires-Python: >=3.8\n"
        "Classifier: Framework :: Pytest\n"
        "Classifier: Operating System :: POSIX :: Linux\n"
        "Classifier: Typing :: Typed\n"
        "Description-Content-Type: text/markdown\n\n" + readme
    )
    files.append((f"{info}/METADATA", metadata.encode(), 0o644))
    files.append(
        (
            f"{info}/WHEEL",
            (
                "Wheel-Version: 1.0\nGenerator: egress-run scripts/build_wheel.py\n"
                f"Root-Is-Purelib: false\nTag: {tag}\n"
            ).encode(),
            0o644,
        )
    )
    files.append(
        (f"{info}/entry_points.txt", b"[pytest11]\negress_run = egress_run.plugin\n", 0o644)
    )
    files.append((f"{info}/top_level.txt", f"{NAME}\n".encode(), 0o644))
    record = [record_line(n, d) for n, d, _ in files] + [f"{info}/RECORD,,"]
    files.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode(), 0o644))

    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data, mode in files:
            zi = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (0o100000 | mode) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(zi, data)
    os.replace(tmp, wheel)
    print(wheel.relative_to(ROOT))


if __name__ == "__main__":
    main()
