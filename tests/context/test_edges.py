"""Discovery and screening edge cases from the review of issue 2 (each found a gap):
git vs plain-directory ignore semantics, .v4codeignore negation, nested repositories, odd
path names in history, symlink loops and symlinked directories, roots inside or ignored by
another work tree, secrets in file names, legacy encodings and the size limit."""

from __future__ import annotations

import json
import os
import random
import string
from pathlib import Path

import pytest

from agent.context import RepoFiles, pack_repository
from agent.context import discovery as discovery_module
from agent.errors import UsageError
from tests.conftest import git
from tests.support.cli import v4code

# A .gitignore set full of traps: negation (also of a file inside an excluded directory, which
# git cannot re-include), anchoring, `**`, directory-only patterns, escapes, character classes,
# and nested files that re-include or anchor relative to their own directory.
TRAPS: dict[str, str | bytes] = {
    ".gitignore": (
        "*.log\n!important.log\n/root_only.txt\nlogs/\n!logs/keep.txt\ndocs/**/*.tmp\n"
        "a/**/z.txt\n\\#hash.txt\n*.py[co]\n!keep.pyc\nspace\\ \n"
    ),
    "important.log": "kept by negation\n",
    "debug.log": "ignored\n",
    "root_only.txt": "ignored at the root only\n",
    "sub/root_only.txt": "not anchored here: kept\n",
    "logs/keep.txt": "inside an ignored directory: a negation cannot bring it back\n",
    "docs/x/y/note.tmp": "ignored through **\n",
    "docs/x/y/note.md": "kept\n",
    "a/b/c/z.txt": "ignored through a/**/z.txt\n",
    "a/z.txt": "a/**/ also matches zero directories: ignored\n",
    "#hash.txt": "escaped hash: ignored\n",
    "mod.pyc": b"bytecode",
    "keep.pyc": b"bytecode kept by negation",
    "space ": "trailing escaped space: ignored\n",
    "sub/.gitignore": "!*.log\n/anchored.txt\n",
    "sub/trace.log": "re-included by the nested file\n",
    "sub/anchored.txt": "ignored, anchored to sub/\n",
    "sub/deeper/anchored.txt": "kept: the anchor is sub/ only\n",
    "src/app.py": "x = 1\n",
}


def test_plain_directory_walk_ignores_exactly_as_git_does(write_tree):
    walked = RepoFiles(write_tree(TRAPS, name="plain")).paths()
    in_git = write_tree(TRAPS, name="repo", git_init=True)
    listed = RepoFiles(in_git).paths()
    assert walked == listed  # git itself is the reference for the hand-off to pathspec
    assert "logs/keep.txt" not in listed and "sub/trace.log" in listed
    assert "important.log" in listed and "sub/deeper/anchored.txt" in listed


@pytest.mark.parametrize("use_git", [True, False])
def test_v4codeignore_negation(write_tree, use_git):
    files = {
        ".v4codeignore": "*.csv\n!keep.csv\ndata/\n!data/inner.txt\n",
        "a.csv": "1\n",
        "keep.csv": "2\n",
        "data/inner.txt": "inside an ignored directory\n",
        "src/main.py": "print(1)\n",
    }
    repo = RepoFiles(write_tree(files, git_init=use_git, commit=use_git))
    assert repo.paths() == [".v4codeignore", "keep.csv", "src/main.py"]
    assert repo.is_ignored("a.csv") and not repo.is_ignored("keep.csv")
    assert repo.is_ignored("data/inner.txt") and repo.is_ignored("data/new.txt")


def test_untracked_nested_repository_is_reported_once(write_tree):
    root = write_tree({"a.py": "x = 1\n"}, git_init=True, commit=True)
    nested = root / "nested"
    nested.mkdir()
    git(nested, "init", "-q")
    (nested / "b.py").write_text("y = 2\n")
    reasons = {e.path: e.reason for e in RepoFiles(root).excluded()}
    assert reasons == {"nested/": "nested git repository (not packed)"}


def test_history_order_with_newlines_at_either_end_of_names(write_tree):
    root = write_tree({}, git_init=True)
    old = ["\nleading.py", "trailing\n", "mid\ndle.py", "with space é.py", "名前/ファイル.py"]
    for name in old:
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text("a = 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "old", when=1_600_000_000)
    (root / "newer.py").write_text("b = 2\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "new", when=1_600_100_000)
    pack = pack_repository(root)
    assert [f.path for f in pack.files] == [*sorted(old), "newer.py"]
    assert "\\nleading.py" in pack.text and "\nleading.py" not in pack.text  # names escaped
    assert '<file path="with space é.py"' in pack.text and "  ファイル.py\n" in pack.text


@pytest.mark.parametrize("use_git", [True, False])
def test_symlink_loops_broken_links_and_linked_directories(write_tree, tmp_path, use_git):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("OUTSIDE\n")
    root = write_tree({"src/a.py": "a = 1\n"}, git_init=use_git)
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    os.symlink("missing.py", root / "broken.py")
    os.symlink("src", root / "src_alias")
    os.symlink(outside, root / "leakdir")
    if use_git:
        git(root, "add", "-A")
        git(root, "commit", "-qm", "links")
    repo = RepoFiles(root)
    reasons = {e.path: e.reason for e in repo.excluded()}
    assert reasons["loop_a"] == reasons["loop_b"] == "symlink loop (not followed)"
    assert reasons["broken.py"] == "broken symlink"
    assert "directory in the repository" in reasons["src_alias"]
    assert "out of the repository" in reasons["leakdir"]
    assert repo.paths() == ["src/a.py"]
    # A path through a linked directory that leads out is hidden, existing or not.
    assert repo.is_ignored("leakdir/private.txt") and repo.is_ignored("leakdir/new.txt")
    assert not repo.is_ignored("src/a.py")
    pack = pack_repository(root)
    assert [f.path for f in pack.files] == ["src/a.py"] and "OUTSIDE" not in pack.text


def test_root_ignored_by_an_enclosing_work_tree_is_walked(write_tree):
    home = write_tree({".gitignore": "*\n!.gitignore\n"}, git_init=True, commit=True)
    project = home / "code" / "app"
    project.mkdir(parents=True)
    (project / "main.py").write_text("print('hi')\n")
    (project / ".gitignore").write_text("*.tmp\n")
    (project / "scratch.tmp").write_text("x\n")
    repo = RepoFiles(project)
    assert not repo.is_git  # git would list nothing here
    assert repo.paths() == [".gitignore", "main.py"]


def test_subdirectory_root_keeps_history_order_and_new_files(write_tree):
    root = write_tree({}, git_init=True)
    for i, name in enumerate(["pkg/old.py", "pkg/new.py", "elsewhere.py"]):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text(f"v = {i}\n")
        git(root, "add", "-A")
        git(root, "commit", "-qm", name, when=1_600_000_000 + i * 1000)
    (root / "pkg/old.py").write_text("v = 'edited'\n")
    (root / "pkg/fresh.py").write_text("v = 'new'\n")
    pack = pack_repository(root / "pkg")
    assert [f.path for f in pack.files] == ["new.py", "fresh.py", "old.py"]
    tree = pack.text[: pack.text.index("</file_tree>")]
    assert "old.py" in tree and "fresh.py" not in tree and "elsewhere" not in pack.text


def test_a_root_inside_dot_git_is_refused(write_tree):
    root = write_tree({"a.py": "x = 1\n"}, git_init=True, commit=True)
    with pytest.raises(UsageError, match="inside a .git directory"):
        pack_repository(root / ".git")
    assert RepoFiles(root / ".git").paths() == []


def test_secrets_in_file_and_directory_names_never_appear(write_tree, tmp_path: Path):
    rng = random.Random(7)
    token = "ghp_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(36))
    akia = "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    hf = "hf_" + "".join(rng.choice(string.ascii_letters) for _ in range(34))  # no digits
    files = {
        f"notes/{token}.txt": "pasted into the name\n",
        f"{akia}/readme.md": "a directory named after a key\n",
        f"models/{hf}.txt": "a token without digits\n",
        "src/app.py": "print('ok')\n",
        "tests/test_sha256_0123456789abcdef.py": "def test():\n    pass\n",  # long, not secret
    }
    root = write_tree(files, git_init=True, commit=True)
    repo = RepoFiles(root)
    assert repo.paths() == ["src/app.py", "tests/test_sha256_0123456789abcdef.py"]
    assert repo.is_ignored(f"notes/{token}.txt") and repo.is_ignored(f"{akia}/readme.md")
    assert repo.is_ignored(f"models/{hf}.txt")
    proc = v4code("context", "--repo", str(root), "--output", "-")
    as_json = v4code("context", "--repo", str(root), "--output-format", "json", "--verbose")
    assert proc.returncode == as_json.returncode == 0, proc.stderr + as_json.stderr
    for blob in (proc.stdout, proc.stderr, as_json.stdout, as_json.stderr):
        assert token not in blob and akia not in blob and hf not in blob
    reasons = {e["path"]: e["reason"] for e in json.loads(as_json.stdout)["excluded"]}
    assert reasons["notes/[redacted]"] == "secret: github-token (in the path)"
    assert reasons["[redacted]/readme.md"] == "secret: aws-access-key-id (in the path)"
    assert reasons["models/[redacted]"] == "secret: huggingface-token (in the path)"


def test_files_over_the_hard_limit_are_not_read_even_when_included(write_tree, monkeypatch):
    root = write_tree({"big.sql": "select 1;\n" * 100, "a.py": "x = 1\n"})
    monkeypatch.setattr(discovery_module, "HARD_MAX_FILE_BYTES", 500)
    pack = pack_repository(root, include=["big.sql"], max_file_bytes=100)
    reasons = {e.path: e.reason for e in pack.excluded}
    assert reasons["big.sql"].startswith("too large even with --include")
    assert [f.path for f in pack.files] == ["a.py"]
