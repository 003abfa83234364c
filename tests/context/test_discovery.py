"""Discovery: which files the engine and the agent's tools may see, in and outside git."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.context import RepoFiles
from tests.conftest import git

TREE = {
    ".gitignore": "*.log\nsecret_dir/\n",
    "app/main.py": "print('hi')\n",
    "app/debug.log": "noise\n",
    "secret_dir/notes.txt": "hidden\n",
    "sub/.gitignore": "*.tmp\n!keep.tmp\n",
    "sub/a.tmp": "temporary\n",
    "sub/keep.tmp": "kept by negation\n",
    "sub/deeper/b.tmp": "ignored two levels down\n",
    "sub/deeper/c.py": "x = 1\n",
    "README.md": "# demo\n",
}
EXPECTED = [
    ".gitignore",
    "README.md",
    "app/main.py",
    "sub/.gitignore",
    "sub/deeper/c.py",
    "sub/keep.tmp",
]


def test_git_tracked_plus_untracked_not_ignored(write_tree):
    root = write_tree(TREE, git_init=True)
    git(root, "add", ".gitignore", "app/main.py", "sub")
    git(root, "commit", "-q", "-m", "some files")
    # README.md stays untracked (but not ignored): it must be seen; ignored files must not.
    repo = RepoFiles(root)
    assert repo.is_git
    assert repo.paths() == EXPECTED
    assert "README.md" in repo.untracked and "app/main.py" in repo.tracked
    assert repo.is_ignored("app/debug.log") and repo.is_ignored("secret_dir")
    assert repo.is_ignored("sub/deeper/b.tmp") and not repo.is_ignored("sub/keep.tmp")


def test_walk_outside_git_honours_nested_gitignore_and_negation(write_tree):
    root = write_tree(TREE)
    repo = RepoFiles(root)
    assert not repo.is_git
    assert repo.paths() == EXPECTED
    assert repo.is_ignored("secret_dir/notes.txt") and repo.is_ignored("secret_dir")
    assert repo.is_ignored("sub/a.tmp") and not repo.is_ignored("sub/keep.tmp")
    assert repo.is_ignored("sub/never-created.tmp")  # rules apply to paths that do not exist yet
    assert not repo.is_ignored("sub/never-created.py")


@pytest.mark.parametrize("use_git", [True, False])
def test_v4codeignore_and_vendored_directories(write_tree, use_git):
    files = {
        ".v4codeignore": "fixtures/\n*.csv\n",
        "lib/core.py": "def f():\n    return 1\n",
        "fixtures/big.json": "{}\n",
        "data/table.csv": "a,b\n",
        "node_modules/left-pad/index.js": "module.exports = 1\n",
        "dist/bundle.js": "var a\n",
    }
    root = write_tree(files, git_init=use_git, commit=use_git)
    repo = RepoFiles(root)
    assert repo.paths() == [".v4codeignore", "lib/core.py"]
    reasons = {e.path: e.reason for e in repo.excluded()}
    assert reasons["node_modules/"].startswith("vendored or build directory")
    assert reasons["dist/"].startswith("vendored or build directory")
    assert "ignored by .v4codeignore" in reasons.get("data/table.csv", "")
    assert any(p.startswith("fixtures") and "v4codeignore" in r for p, r in reasons.items())
    assert repo.is_ignored("node_modules/left-pad/index.js") and repo.is_ignored("node_modules")
    # An explicit include overrides the engine's own rules.
    again = RepoFiles(root, include=["node_modules/left-pad/index.js", "*.csv"])
    assert "node_modules/left-pad/index.js" in again.paths() and "data/table.csv" in again.paths()


@pytest.mark.parametrize("use_git", [True, False])
def test_symlinks_leading_out_are_never_followed(write_tree, tmp_path, use_git):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.txt").write_text("OUTSIDE-CONTENT\n")
    root = write_tree({"a.py": "x = 1\n", "inner/target.py": "y = 2\n"}, git_init=use_git)
    os.symlink(outside / "private.txt", root / "leak.txt")
    os.symlink(outside, root / "leakdir")
    os.symlink("inner/target.py", root / "alias.py")
    if use_git:
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "links")
    repo = RepoFiles(root)
    reasons = {e.path: e.reason for e in repo.excluded()}
    assert "leak.txt" in reasons and "out of the repository" in reasons["leak.txt"]
    assert "leak.txt" not in repo.paths() and repo.is_ignored("leak.txt")
    assert not any(p.startswith("leakdir/") for p in repo.paths())
    assert all(c.path != "alias.py" for c in repo.candidates())  # never read through a link
    assert "inner/target.py" in repo.paths()


def test_deleted_tracked_files_submodules_and_non_ascii_names(write_tree, tmp_path):
    other = write_tree({"lib.py": "z = 3\n"}, name="other", git_init=True, commit=True)
    root = write_tree(
        {"gone.py": "x = 1\n", "données/été.py": "y = 'é'\n", "名前.txt": "名前\n"},
        git_init=True,
        commit=True,
    )
    git(
        root,
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        str(other),
        "vendored_sub",
    )
    git(root, "commit", "-q", "-m", "submodule")
    (root / "gone.py").unlink()
    repo = RepoFiles(root)
    reasons = {e.path: e.reason for e in repo.excluded()}
    assert reasons["gone.py"] == "deleted in the working tree"
    assert reasons["vendored_sub/"].startswith("git submodule")
    assert "données/été.py" in repo.paths() and "名前.txt" in repo.paths()
    assert not repo.is_ignored("données/été.py")


def test_is_ignored_edges(write_tree):
    root = write_tree(
        {"src/a.py": "a = 1\n", ".env": "TOKEN=1\n", "keys/id_rsa": "k\n"},
        git_init=True,
        commit=True,
    )
    repo = RepoFiles(root)
    assert repo.paths() == ["src/a.py"]  # secret-looking names are hidden from the agent too
    assert repo.is_ignored(".env") and repo.is_ignored("keys/id_rsa")
    assert repo.is_ignored("../escape.py") and repo.is_ignored("/etc/passwd")
    assert repo.is_ignored(".git/config") and repo.is_ignored(".git")
    assert (
        not repo.is_ignored("src")
        and not repo.is_ignored("src/")
        and not repo.is_ignored("./src/a.py")
    )
    assert not repo.is_ignored("src/new_file.py")  # not there yet, and nothing ignores it


def test_root_in_a_subdirectory_of_a_work_tree(write_tree):
    root = write_tree(
        {"pkg/mod.py": "m = 1\n", "pkg/sub/x.py": "x = 2\n", "other.py": "o = 3\n"},
        git_init=True,
        commit=True,
    )
    repo = RepoFiles(root / "pkg")
    assert repo.is_git and repo.git is not None and repo.git.prefix == "pkg/"
    assert repo.paths() == ["mod.py", "sub/x.py"]


def test_missing_root_is_not_a_crash(tmp_path: Path):
    repo = RepoFiles(tmp_path / "nope")
    assert repo.paths() == []
