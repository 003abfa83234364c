"""Holes found in review, each shown to be real: the command really would have written a file,
run a program or destroyed something, and now it does not run without approval (or at all)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import git
from tools.base import ToolError
from tools.paths import resolve_repo_path
from tools.process import run_process
from tools.run_tests import is_test_invocation
from tools.shell_policy import FORBIDDEN, NEEDS_APPROVAL, READ_ONLY, _sed_danger, classify

# ----------------------------------------------------------------------------- run_command, for real

# Each command creates `pwned` (or changes a file) when it runs; each used to be "read-only".
SIDE_EFFECTS = [
    "sed '1e touch pwned' README.md",
    "sed -n '1w pwned' README.md",
    "sed 's|demo|x|w pwned' README.md",
    "echo $(( x[$(touch pwned)] ))",
    "[[ 1 -eq 'a[$(touch pwned)]' ]]",
    "let 'a[$(touch pwned)]'",
    "test -v 'a[$(touch pwned)]'",
    "awk --source='BEGIN{system(\"touch pwned\")}'",
    "GIT_EXTERNAL_DIFF=./evil.sh git diff",
    "export GIT_EXTERNAL_DIFF=./evil.sh; git diff",
    "env GIT_EXTERNAL_DIFF=./evil.sh git diff",
    "./ls",
    "echo pwned | xargs touch",
    "git log -1 --output=pwned",
    "git config --unset user.name",
    "git ls-remote --upload-pack='touch pwned' .",
    "sort --compress-program=./evil.sh -S 1 README.md",
]


@pytest.fixture
def trap(repo: Path) -> Path:
    """A repository where running any of SIDE_EFFECTS would leave a trace."""
    (repo / "src/app.py").write_text("def add(a, b):\n    return a - b\n")  # a diff to show
    for name in ("evil.sh", "ls"):
        (repo / name).write_text("#!/bin/sh\ntouch pwned\n")
        os.chmod(repo / name, 0o755)
    git(repo, "config", "user.name", "keep me")
    return repo


@pytest.mark.parametrize("command", SIDE_EFFECTS)
def test_state_changing_commands_are_not_read_only_and_do_not_run(trap: Path, toolbox, command):
    assert classify(command, trap).level != READ_ONLY
    obs = toolbox(trap)("run_command", command=command)
    assert not obs.ok and obs.data.get("refused"), obs.text
    assert not (trap / "pwned").exists()
    assert git(trap, "config", "user.name").strip() == "keep me"


def test_the_side_effects_are_real_when_approved(trap: Path, toolbox):
    # The same commands with --yes do what the policy feared: the tests above are not vacuous.
    tools = toolbox(trap, yes=True)
    for command in ("sed '1e touch pwned' README.md", "echo $(( x[$(touch pwned)] ))", "./ls"):
        tools("run_command", command=command)
        assert (trap / "pwned").exists(), command
        (trap / "pwned").unlink()


def test_history_w_would_truncate_a_file_outside(trap: Path, toolbox, tmp_path, monkeypatch):
    victim = tmp_path / "bashrc"
    victim.write_text("alias ll='ls -l'\n")
    # What it does: a non-interactive shell has no history, so the file is emptied.
    run_process(f"history -w {victim}", trap, timeout_s=10)
    assert victim.read_text() == ""
    victim.write_text("alias ll='ls -l'\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    obs = toolbox(trap, yes=True)("run_command", command="history -w ~/bashrc")
    assert not obs.ok and "destructive" in obs.text
    assert victim.read_text() == "alias ll='ls -l'\n"


def test_git_alias_for_push_is_refused_even_with_yes(repo: Path, toolbox, tmp_path: Path):
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    git(repo, "config", "alias.ship", "push")  # set up by someone before the run
    tools = toolbox(repo, yes=True)
    for command in (
        "git ship origin HEAD:main",
        "git -c alias.up=push up origin HEAD:main",
        "git config alias.pub 'push --force'",
        "git config alias.x '!git push origin HEAD:main'",
    ):
        obs = tools("run_command", command=command)
        assert not obs.ok and "destructive" in obs.text, (command, obs.text)
    assert git(bare, "for-each-ref") == ""
    assert git(repo, "config", "--get-regexp", "alias").strip() == "alias.ship push"


def test_pytest_basetemp_would_delete_the_directory(repo: Path, toolbox):
    (repo / "tests").mkdir()
    (repo / "tests/test_a.py").write_text("def test_a():\n    assert True\n")
    tools = toolbox(repo, yes=True)
    for command in (
        f"{sys.executable} -m pytest --basetemp=src tests",
        "pytest --basetemp=. tests",
        "python -m pytest --basetemp .. tests",
    ):
        obs = tools("run_tests", command=command)
        assert not obs.ok and "destructive" in obs.text, (command, obs.text)
        obs = tools("run_command", command=command)
        assert not obs.ok and "destructive" in obs.text
    assert (repo / "src/app.py").exists() and (repo / "README.md").exists()


def test_run_tests_options_that_write_outside_need_approval(repo: Path, toolbox, tmp_path):
    (repo / "test_a.py").write_text("def test_a():\n    assert True\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    report = Path.home() / "v4code-review-report.xml"
    command = f"{sys.executable} -m pytest --junitxml={report} test_a.py"
    assert not is_test_invocation(command, None, repo)
    assert is_test_invocation(f"{sys.executable} -m pytest --junitxml=out/r.xml", None, repo)
    assert is_test_invocation(f"{sys.executable} -m pytest --junitxml=/tmp/r.xml", None, repo)
    obs = toolbox(repo)("run_tests", command=command)
    assert not obs.ok and "approval" in obs.text and not report.exists()
    obs = toolbox(repo)("run_tests", command=f"{sys.executable} -m pytest test_a.py -q")
    assert obs.ok, obs.text


# ----------------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    "command",
    [
        "busybox rm -rf ~",
        "toybox rm -rf /",
        "rm -rf {..,build}",
        "rm -rf {/,x}",
        "rm -rf src/{a,../..}",
        "Git push",
        "GIT PUSH",
        "git rm -rf .",
        "git -c alias.x=push x",
        "history -w ~/.bashrc",
        "shuf -o ~/.profile README.md",
        "env FOO=1 rm -rf /",
        "echo / | xargs rm -rf; rm -rf ~",
        "pytest --basetemp=$DIR",
        "git reset --har",
        "git clean --forc -d",
        "git checkout --forc main",
        "git gc --pru=now",
        "git prune",
        "git submodule foreach 'rm -rf ~'",
        "git bisect run rm -rf /",
        "git rebase -x 'rm -rf ~' main",
        "git rebase --exec='git push' main",
        "git archive --output=~/.bashrc HEAD",
        "coproc rm -rf /",
        "coproc X { rm -rf ~; }",
    ],
)
def test_forbidden_however_it_is_spelled(policy_root: Path, command: str):
    assert classify(command, policy_root).level == FORBIDDEN, classify(command, policy_root)


@pytest.mark.parametrize(
    "command",
    [
        "git --config-env=core.pager=FOO log",
        "git show --output=/tmp/x HEAD",
        "git grep -Ovim foo",
        "git grep --open-files-in-pager=sh foo",
        "git config --remove-section user",
        "git fsck --lost-found",
        'sed "$SCRIPT" README.md',
        "sed -ne 'p' -e '1w out' README.md",
        "sed -e 's/a/b/' -f script.sed README.md",
        "awk -iinplace '{print}' README.md",
        'awk "$PROG" README.md',
        "awk -f prog.awk README.md",
        "LD_PRELOAD=./x.so ls",
        "PATH=.:$PATH ls",
        "HOME=. git log",
        "LESSOPEN='|./evil.sh %s' less README.md",
        "src/cat README.md",
        "./python --version",
        "venv/bin/python3 -V",
        "shopt -s expand_aliases",
        "alias ls='rm -rf build'",
        "hash -p ./evil.sh cat",
        "dc -e '!touch x'",
        "fc -s",
        "man -P ./evil.sh ls",
        "info -o out ls",
        "less -o log.txt README.md",
        "file -C -m magic",
        "ag --pager ./evil.sh foo",
        "ack --pager=./evil.sh foo",
        "cloc --out=report.txt .",
        "sudo -s",
        "echo push | xargs git",
        "ls | xargs sort -o",
        "find build | xargs rm -rf",
        "printf -v 'a[$(touch x)]' x",
        "X=1 Y=2 wc -l README.md",
    ],
)
def test_needs_approval(policy_root: Path, command: str):
    assert classify(command, policy_root).level == NEEDS_APPROVAL, classify(command, policy_root)


@pytest.mark.parametrize(
    "command",
    [
        "sed -n '1,10p' src/app.py",
        "sed -ne 's/a/b/p' -e '/x/d' README.md",
        r"sed 's/a\/b/c/g' README.md",
        "sed -E 's#a#b#g; /^$/d' README.md",
        "sed -n '/def/{p;q}' src/app.py",
        "sed '$!N;s/\\n/ /' README.md",
        "sed --sandbox -n '1w x' README.md",
        "awk -F: '{print $1}' /etc/passwd",
        "awk -v n=2 'NR==n' README.md",
        "awk -- '{print}' README.md",
        "LC_ALL=C sort README.md",
        "TZ=UTC date",
        "x=1; echo $x",
        "export LANG=C; ls",
        "echo $((1 + 2))",
        "/usr/bin/git status",
        "/usr/bin/python3 --version",
        "ls {src,tests}",
        "ls | xargs cat",
        "git ls-files | xargs grep -n TODO",
        "git config --get-regexp alias",
        "git log --oneline -3",
        "man ls",
        "[[ -f README.md ]] && cat README.md",
        "history",
        "git log --oneline -- src",
        "git log --format=%H --follow src/app.py",
        "git status --porcelain",
        "git diff --stat HEAD~1",
    ],
)
def test_still_read_only(policy_root: Path, command: str):
    assert classify(command, policy_root).level == READ_ONLY, classify(command, policy_root)


@pytest.mark.parametrize(
    ("script", "danger"),
    [
        ("p", None),
        ("1,5d", None),
        ("s/a/b/g", None),
        ("s/a/b/w out", "writes files"),
        ("s/a/b/gw out", "writes files"),
        ("s|a|b|e", "runs commands"),
        ("1w out", "writes files"),
        ("/re/W out", "writes files"),
        ("$e echo", "runs commands"),
        ("/x/!e", "runs commands"),
        ("y/abc/xyz/", None),
        ("/start/,/end/{s/x/y/;p}", None),
        ("a\\\nhello w world", None),
        ("i text with w and e", None),
        (":top\nN\nb top", None),
        ("s/w/e/", None),
        ("s/a/b", "could not be checked"),
        ("k", "could not be checked"),
    ],
)
def test_sed_scripts(script: str, danger: str | None):
    assert _sed_danger(script) == danger


# ----------------------------------------------------------------------------- the other tools


@pytest.mark.parametrize("name", [".g\u200cit", ".git.", ".git ", "GIT~1", ".Git"])
def test_git_directory_spellings_other_file_systems_accept(repo: Path, name: str):
    with pytest.raises(ToolError, match="inside .git"):
        resolve_repo_path(repo, f"{name}/hooks/pre-commit", write=True)
    assert resolve_repo_path(repo, ".gitignore", write=True).rel == ".gitignore"


def test_edit_in_a_crlf_file_keeps_crlf_for_inserted_lines(repo: Path, toolbox):
    (repo / "win.txt").write_bytes(b"alpha\r\nbeta\r\n")
    tools = toolbox(repo)
    obs = tools("edit_file", path="win.txt", old_string="alpha", new_string="alpha\nalpha2")
    assert obs.ok, obs.text
    obs = tools(
        "edit_file", path="win.txt", old_string="beta", new_string="b1\nb2", replace_all=True
    )
    assert obs.ok, obs.text
    assert (repo / "win.txt").read_bytes() == b"alpha\r\nalpha2\r\nb1\r\nb2\r\n"


def test_git_config_with_a_token_is_not_shown(repo: Path, toolbox):
    tools = toolbox(repo)
    git(repo, "remote", "add", "origin", "https://ci:ghp_secret0123456789@github.com/o/r.git")
    obs = tools("read_file", path=".git/config")
    assert not obs.ok and "secrets" in obs.text and "ghp_secret" not in obs.text
    git(repo, "remote", "set-url", "origin", "ssh://git@github.com/o/r.git")
    assert tools("read_file", path=".git/config").ok


@pytest.mark.parametrize(("tool", "args"), [("list_files", {"pattern": "[z-a]*"}),
                                            ("search", {"pattern": "x", "glob": "[z-a]"})])  # fmt: skip
def test_a_bad_glob_is_an_observation_not_a_crash(repo: Path, toolbox, tool, args):
    obs = toolbox(repo)(tool, args)
    assert not obs.ok and "invalid glob pattern" in obs.text


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("read_file", {"path": "pipe"}),
        ("edit_file", {"path": "pipe", "old_string": "a", "new_string": "b"}),
        ("write_file", {"path": "pipe", "content": "x"}),
    ],
)
def test_a_named_pipe_is_refused_instead_of_hanging(repo: Path, toolbox, tool, args):
    os.mkfifo(repo / "pipe")
    result: list = []
    worker = threading.Thread(target=lambda: result.append(toolbox(repo)(tool, args)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # unblock the reader so the test process can end
        with open(repo / "pipe", "w"):
            pass
        pytest.fail(f"{tool} blocked on a named pipe")
    assert not result[0].ok and "not a regular file" in result[0].text
