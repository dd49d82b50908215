"""Descriptor numbers (issue "Innocent programs must not notice the guard", item 8): the guard's
own descriptors (the policy and counters memfds, each level's event socket) live at high numbers,
so a guarded process sees the descriptor numbers it would see natively, and a low `ulimit -n`
works as it does natively. Loopback only."""
import json
import shutil
import subprocess

import pytest

from conftest import PROGS, guarded_env


def native(cmd):
    return subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=guarded_env(),
                          stdin=subprocess.DEVNULL, timeout=60)


@pytest.fixture
def fdnumbers(compile_c):
    return compile_c(PROGS / "fdnumbers.c", "fdnumbers")


@pytest.mark.parametrize("args", [["--allow", "loopback"], ["--audit"]])
def test_first_open_returns_the_native_number(args, fdnumbers, run_guarded):
    nat = native([fdnumbers])
    assert nat.returncode == 0 and json.loads(nat.stdout) == {"first_open": 3, "open_below_64": 0}, nat
    res = run_guarded(args, [fdnumbers])
    assert res.returncode == 0, res.describe()
    assert res.outputs() == [json.loads(nat.stdout)], res.describe()
    procs = [p for p in res.report if p.get("type") == "process"]
    assert procs and all(p["guarded"] and "policy_error" not in p for p in procs), res.describe()


def test_children_and_grandchildren_see_the_native_numbers(fdnumbers, run_guarded):
    """A shell's child (exec'd, after the shell's own check-in and a fork)."""
    res = run_guarded(["--allow", "loopback"], ["sh", "-c", f"{fdnumbers}; {fdnumbers}"])
    assert res.returncode == 0, res.describe()
    assert res.outputs() == [{"first_open": 3, "open_below_64": 0}] * 2, res.describe()


def test_nested_run_sees_the_native_numbers(fdnumbers, egress_bin, run_guarded):
    """Two levels: two launchers' memfds and two event sockets, all out of the way."""
    res = run_guarded(["--allow", "loopback"], [egress_bin, "--allow", "loopback", "--", fdnumbers])
    assert res.returncode == 0, res.describe()
    assert res.outputs() == [{"first_open": 3, "open_below_64": 0}], res.describe()
    procs = [p for p in res.report if p.get("type") == "process"]
    assert procs and all("policy_error" not in p for p in procs), res.describe()


@pytest.mark.parametrize("limit", [4, 6, 8])
def test_low_ulimit_works_as_natively(limit, run_guarded):
    """`ulimit -n N; cat /dev/null`: cat needs descriptor 3 (N=4 leaves exactly that one)."""
    script = f"ulimit -n {limit} && cat /dev/null && echo ok"
    nat = native(["sh", "-c", script])
    assert (nat.returncode, nat.stdout) == (0, "ok\n"), nat
    res = run_guarded(["--allow", "loopback"], ["sh", "-c", script])
    assert (res.returncode, res.stdout) == (0, "ok\n"), res.describe()
    procs = [p for p in res.report if p.get("type") == "process"]
    assert procs and all("policy_error" not in p for p in procs), res.describe()


def test_low_ulimit_program_sees_the_native_numbers(fdnumbers, run_guarded):
    script = f"ulimit -n 8 && {fdnumbers}"
    nat = native(["sh", "-c", script])
    res = run_guarded(["--allow", "loopback"], ["sh", "-c", script])
    assert nat.returncode == 0 and res.returncode == 0, (nat, res.describe())
    assert res.outputs() == [json.loads(nat.stdout)] == [{"first_open": 3, "open_below_64": 0}], res.describe()
