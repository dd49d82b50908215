"""`make install` puts the man pages and the bash, zsh and fish completions generated from the
same clap definition as `--help`; the installed egress-run finds its library and passes doctor."""
import re
import shutil
import subprocess

import pytest

from conftest import REPO, _bin_path


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if _bin_path() != REPO / "target" / "release" / "egress-run":
        pytest.skip("EGRESS_RUN_BIN names another build; make install installs target/release")
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    root = tmp_path_factory.mktemp("install")
    # CARGO=true: the build is there already (the tests run target/release); make only
    # generates the pages and completions from it and installs.
    res = subprocess.run(["make", "-C", str(REPO), "install", f"DESTDIR={root}", "PREFIX=/usr", "CARGO=true"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return root / "usr"


def _long_options(help_text):
    return sorted(set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z-]+)", help_text, re.M)))


def test_man_page_lists_every_option_and_subcommand(installed):
    help_text = subprocess.run([str(installed / "bin/egress-run"), "--help"], capture_output=True, text=True).stdout
    page = (installed / "share/man/man1/egress-run.1").read_text().replace("\\-", "-")
    options = _long_options(help_text)
    assert "--allow" in options and "--baseline" in options
    for opt in options:
        assert opt in page, f"{opt} is in --help but not in the man page"
    for sub in ("report", "suggest", "doctor"):
        assert sub in page
        assert (installed / f"share/man/man1/egress-run-{sub}.1").is_file()
    assert "egress-run suggest -o egress.allow audit.jsonl" in page, "the examples"
    report_page = (installed / "share/man/man1/egress-run-report.1").read_text().replace("\\-", "-")
    assert "--format" in report_page and "markdown" in report_page


def _bash_complete(installed, *words):
    script = installed / "share/bash-completion/completions/egress-run"
    line = " ".join(words)
    quoted = " ".join(f"'{w}'" for w in words)
    prog = (f"source {script}\nCOMP_WORDS=({quoted})\nCOMP_CWORD={len(words) - 1}\nCOMP_LINE='{line}'\n"
            f"COMP_POINT=${{#COMP_LINE}}\n_egress__run egress-run '{words[-1]}' '{words[-2]}'\n"
            'printf "%s\\n" "${COMPREPLY[@]}"\n')
    res = subprocess.run(["bash", "-c", prog], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


def test_bash_completion(installed):
    assert {"--allow", "--allow-file", "--allow-unguarded"} <= set(_bash_complete(installed, "egress-run", "--al"))
    assert "report" in _bash_complete(installed, "egress-run", "rep")
    assert _bash_complete(installed, "egress-run", "__") == []
    assert set(_bash_complete(installed, "egress-run", "report", "--format", "")) >= {"table", "markdown", "github", "json"}


@pytest.mark.parametrize("shell,path", [("zsh", "share/zsh/site-functions/_egress-run"),
                                        ("fish", "share/fish/vendor_completions.d/egress-run.fish")])
def test_zsh_and_fish_completions(installed, shell, path):
    text = (installed / path).read_text()
    assert "allow-file" in text and "report" in text and "doctor" in text
    assert "__doctor-probe" not in text, "doctor's internal probe is not offered"
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed; its completion file was checked by content only")
    res = subprocess.run([shell, "-n", str(installed / path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_the_installed_tree_works(installed):
    version = subprocess.run([str(installed / "bin/egress-run"), "--version"], capture_output=True, text=True)
    assert f"({installed / 'lib/egress-run/libegress_preload.so'})" in version.stdout, version.stdout
    doctor = subprocess.run([str(installed / "bin/egress-run"), "doctor"], capture_output=True, text=True)
    assert doctor.returncode == 0, doctor.stdout


def test_fish_completes_subcommands_and_values(installed):
    if not shutil.which("fish"):
        pytest.skip("fish is not installed")
    script = installed / "share/fish/vendor_completions.d/egress-run.fish"

    def complete(line):
        res = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return dict(l.split("\t", 1) if "\t" in l else (l, "") for l in res.stdout.splitlines())

    got = complete("egress-run report --format ")
    assert set(got) == {"table", "markdown", "github", "json"}, got
    assert all(desc for desc in got.values()), got
    assert {"report", "suggest", "doctor"} <= set(complete("egress-run "))
