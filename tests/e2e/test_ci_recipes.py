"""The CI recipes of docs/ci.md, run as written: docs/recipes/ci-step.sh, the shell steps of
github-actions.yml and gitlab-ci.yml, the audit -> suggest -> block path (adopt.sh) and the
baseline gate (baseline-gate.sh), each on a copy of tests/pysuite (a small project whose one
non-loopback test reaches other.test). Only the steps that install software are left out (they
need the network); the test says which. docs/ci.md shows each recipe file verbatim, and the
README's CI one-liner is the one ci-step.sh runs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, guarded_env

RECIPES = REPO / "docs" / "recipes"
# Steps that install software: they need the network, and the test machine has egress-run.
INSTALL_STEPS = {"Install dependencies", "Install egress-run"}
INSTALL_LINE = re.compile(r"^python -m pip install ")


@pytest.fixture
def project(tmp_path, egress_bin):
    """A copy of tests/pysuite, and an environment where `python` and `egress-run` are found."""
    proj = tmp_path / "project"
    shutil.copytree(REPO / "tests" / "pysuite", proj)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    (bin_dir / "egress-run").symlink_to(egress_bin)
    env = guarded_env({"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                       "PYTEST_ADDOPTS": "-p no:cacheprovider"})
    return proj, env


def _loopback_only(proj: Path) -> None:
    (proj / "test_remote.py").unlink()


def sh(script: str, cwd: Path, env: dict, shell=("sh",)) -> subprocess.CompletedProcess:
    return subprocess.run([*shell, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def run_recipe(name: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(RECIPES / name)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


# ---- the YAML recipes' shell steps (the subset of YAML these two files use) ------------------

def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def github_steps(text: str) -> list[dict]:
    """[{name, if, run}] of the job's steps, in order; `run` None for `uses:` steps."""
    lines = text.splitlines()
    i = next(n for n, l in enumerate(lines) if l.strip() == "steps:") + 1
    item = _indent(lines[i])
    steps: list[dict] = []
    while i < len(lines):
        line = lines[i]
        if line.strip() and _indent(line) < item:
            break
        if _indent(line) == item and line.lstrip().startswith("- "):
            steps.append({"name": None, "if": None, "run": None})
            line = " " * (item + 2) + line.lstrip()[2:]
        m = re.match(r"^(\w[\w-]*):\s*(.*)$", line.strip())
        if m and line.strip() and _indent(line) == item + 2:
            key, value = m.groups()
            if value == "|":
                block = []
                while i + 1 < len(lines) and (not lines[i + 1].strip() or _indent(lines[i + 1]) > item + 2):
                    i += 1
                    block.append(lines[i])
                cut = min(_indent(b) for b in block if b.strip())
                value = "\n".join(b[cut:] for b in block).rstrip("\n") + "\n"
            if key in steps[-1]:
                steps[-1][key] = value if key == "run" else value.strip('"')
        i += 1
    return steps


def gitlab_lists(text: str) -> dict[str, list[str]]:
    """before_script, script and after_script items of the one job."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^  (\w+):\s*$", line)
        if m:
            current = m.group(1)
            out[current] = []
            continue
        m = re.match(r"^    - (.*)$", line)
        if m and current is not None:
            out[current].append(m.group(1))
        elif not line.startswith("    "):
            current = None
    return out


def _strip_comment(cmd: str) -> str:
    return re.sub(r"\s+#.*$", "", cmd)


def test_the_yaml_extractors_agree_with_a_yaml_parser():
    yaml = pytest.importorskip("yaml")
    gh = yaml.safe_load((RECIPES / "github-actions.yml").read_text())
    want = [{"name": s.get("name"), "if": s.get("if"), "run": s.get("run")} for s in gh["jobs"]["test"]["steps"]]
    assert github_steps((RECIPES / "github-actions.yml").read_text()) == want
    gl = yaml.safe_load((RECIPES / "gitlab-ci.yml").read_text())["test"]
    got = gitlab_lists((RECIPES / "gitlab-ci.yml").read_text())
    for key in ("before_script", "script", "after_script"):
        assert [_strip_comment(c) for c in got[key]] == [_strip_comment(c) for c in gl[key]], key


def run_github(proj: Path, env: dict) -> tuple[list[tuple[str, int, str]], str]:
    """Runs the recipe's shell steps as GitHub does (bash -eo pipefail; after a failure only
    `if: always()` steps). Returns [(name, status, output)] and the step summary."""
    summary = proj.parent / "step_summary.md"
    summary.write_text("")
    env = dict(env, GITHUB_STEP_SUMMARY=str(summary), CI="true", GITHUB_ACTIONS="true")
    results, failed = [], False
    for step in github_steps((RECIPES / "github-actions.yml").read_text()):
        if step["run"] is None or step["name"] in INSTALL_STEPS:
            continue
        if failed and step["if"] != "always()":
            continue
        res = sh(step["run"], proj, env, shell=("bash", "--noprofile", "--norc", "-eo", "pipefail"))
        results.append((step["name"], res.returncode, res.stdout + res.stderr))
        failed = failed or res.returncode != 0
    return results, summary.read_text()


def test_github_actions_recipe_passes(project):
    proj, env = project
    _loopback_only(proj)
    results, summary = run_github(proj, env)
    names = [n for n, _, _ in results]
    assert names == ["Check that egress-run can guard here", "Tests, no network", "Egress report"], results
    assert all(status == 0 for _, status, _ in results), results
    assert summary.startswith("### egress-run: no egress denied"), summary
    assert "| allowed | tcp | `127.0.0.1:" in summary


def test_github_actions_recipe_fails_and_annotates(sandbox, servers, project):
    proj, env = project
    results, summary = run_github(proj, env)
    by_name = {n: (s, out) for n, s, out in results}
    assert by_name["Tests, no network"][0] == 1, "pytest's own status: the remote test failed"
    status, out = by_name["Egress report"]
    assert status == 0
    errors = [l for l in out.splitlines() if l.startswith("::error ")]
    assert len(errors) == 1 and "lookup of other.test" in errors[0] and "--allow other.test" in errors[0], out
    assert "| **DENIED** | dns | `other.test` |" in summary, summary


def test_gitlab_recipe(sandbox, servers, project):
    proj, env = project
    jobs = gitlab_lists((RECIPES / "gitlab-ci.yml").read_text())
    before = [c for c in jobs["before_script"] if not INSTALL_LINE.match(c)]
    assert len(before) == len(jobs["before_script"]) - 1, "only the install line is left out"
    main = sh("set -e\n" + "\n".join(before + jobs["script"]), proj, env)
    after = sh("\n".join(jobs["after_script"]), proj, env)
    assert main.returncode == 1, main.stdout + main.stderr
    assert after.returncode == 0 and "other.test" in after.stdout and "DENIED" in after.stdout, after.stdout
    _loopback_only(proj)
    main = sh("set -e\n" + "\n".join(before + jobs["script"]), proj, env)
    assert main.returncode == 0, main.stdout + main.stderr


def test_shell_step(project):
    proj, env = project
    _loopback_only(proj)
    res = run_recipe("ci-step.sh", proj, env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (proj / "egress.jsonl").is_file()
    assert "block mode" in res.stderr and "0 denied" in res.stderr


def test_shell_step_fails_on_a_denial(sandbox, servers, project):
    proj, env = project
    res = run_recipe("ci-step.sh", proj, env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "the tests failed (status 1)" in res.stderr
    assert re.search(r"^DENIED\s+dns\s+other\.test", res.stderr, re.M), res.stderr


def test_audit_suggest_block_then_baseline_gate(sandbox, servers, project):
    proj, env = project
    res = run_recipe("adopt.sh", proj, env)
    assert res.returncode == 0, res.stdout + res.stderr
    rules = [l.split("#")[0].strip() for l in (proj / "egress.allow").read_text().splitlines()]
    assert [r for r in rules if r] == ["loopback", "other.test:80"]
    gate = run_recipe("baseline-gate.sh", proj, env)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    # a new test reaches a destination egress.allow does not know: the gate fails, naming it
    (proj / "test_new.py").write_text(
        "import socket\n\ndef test_new(sandbox_only):\n    socket.getaddrinfo('allowed.test', 443)\n")
    gate = run_recipe("baseline-gate.sh", proj, env)
    assert gate.returncode == 3, gate.stdout + gate.stderr
    new = [l for l in gate.stderr.splitlines() if " NEW " in l]
    assert len(new) == 1 and "allowed.test" in new[0], gate.stderr


def test_docs_show_the_recipes_verbatim():
    ci = (REPO / "docs" / "ci.md").read_text()
    for recipe in sorted(RECIPES.iterdir()):
        m = re.search(rf"<!-- recipe: docs/recipes/{re.escape(recipe.name)} -->\n```\w*\n(.*?)```", ci, re.S)
        assert m, f"docs/ci.md does not show {recipe.name}"
        assert m.group(1) == recipe.read_text(), f"docs/ci.md's copy of {recipe.name} differs from the file"


def test_readme_ci_one_liner_is_the_tested_recipes():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## In CI", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0].strip()
    assert block in (RECIPES / "ci-step.sh").read_text()
    assert block in (RECIPES / "github-actions.yml").read_text()
