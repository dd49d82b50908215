"""`dlmopen` into a new link-map namespace loads a second libc without the guard: its connect
would go out unchecked. Block mode refuses it (with a dlerror message saying why) and records
it like an unguarded program; audit mode lets it run and records it."""
import pytest

from conftest import ALLOWED_IP, OTHER_IP, PROGS


@pytest.fixture(scope="module")
def dlmopen_connect(compile_c):
    return compile_c(PROGS / "dlmopen_connect.c", "dlmopen_connect")


def namespace_lines(res):
    return [o for o in res.report if o["type"] == "process" and not o["guarded"]]


def test_dlmopen_refused_in_block_mode(sandbox, servers, dlmopen_connect, run_guarded):
    before = servers.tcp[OTHER_IP].count()
    res = run_guarded(["--allow", ALLOWED_IP], [dlmopen_connect, OTHER_IP, "5432"])
    assert res.stdout.startswith("dlmopen failed: /egress-run refused dlmopen"), res.describe()
    assert servers.tcp[OTHER_IP].count() == before
    [line] = namespace_lines(res)
    assert line["exe"] == "libc.so.6" and line["refused"] is True and "namespace" in line["reason"], res.describe()
    assert res.returncode == 1, res.describe()  # the program's own status: it failed


def test_dlmopen_recorded_in_audit_mode(sandbox, servers, dlmopen_connect, run_guarded):
    res = run_guarded(["--audit"], [dlmopen_connect, OTHER_IP, "5432"])
    assert res.stdout == "ok\n", res.describe()
    [line] = namespace_lines(res)
    assert line["refused"] is False, res.describe()


def test_dlmopen_into_the_base_namespace_is_dlopen(sandbox, dlmopen_connect, run_guarded, build_dir):
    """LM_ID_BASE loads into the program's own namespace, where the guard is."""
    import subprocess
    src = build_dir / "dlmopen_base.c"
    src.write_text('#define _GNU_SOURCE\n#include <dlfcn.h>\n#include <stdio.h>\n'
                   'int main(void){void*h=dlmopen(LM_ID_BASE,"libm.so.6",RTLD_NOW);'
                   'printf(h?"ok\\n":"fail\\n");return 0;}\n')
    exe = build_dir / "dlmopen_base"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    res = run_guarded([], [exe])
    assert res.stdout == "ok\n" and not namespace_lines(res) and res.returncode == 0, res.describe()
