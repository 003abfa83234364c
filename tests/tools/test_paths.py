"""Every way a model-supplied path can leave the repository is refused, with a usable message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.base import ToolError
from tools.paths import resolve_repo_path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("top secret\n")
    return secret


def refused(root: Path, path: object, **kw) -> str:
    with pytest.raises(ToolError) as exc:
        resolve_repo_path(root, path, **kw)
    return exc.value.message


def test_plain_relative_paths_resolve_inside(repo: Path):
    target = resolve_repo_path(repo, "src/app.py")
    assert target.rel == "src/app.py"
    assert target.abs == (repo / "src/app.py").resolve()
    assert resolve_repo_path(repo, "./src/../src/app.py").rel == "src/app.py"
    assert resolve_repo_path(repo, "src/new/file.py", write=True).rel == "src/new/file.py"


@pytest.mark.parametrize(
    "path", ["..", "../x", "a/../../x", "src/../../etc/passwd", "./../repo2/x"]
)
def test_dotdot_escapes_are_refused(repo: Path, path: str):
    assert "outside the repository" in refused(repo, path)


def test_absolute_paths_are_refused_with_the_relative_alternative(repo: Path):
    assert "absolute paths are not accepted" in refused(repo, "/etc/passwd")
    message = refused(repo, str(repo / "src/app.py"))
    assert "use the relative path 'src/app.py'" in message


@pytest.mark.parametrize("path", ["~", "~/.ssh/id_rsa", "~root/.bashrc"])
def test_home_paths_are_refused(repo: Path, path: str):
    assert "'~' is not expanded" in refused(repo, path)


def test_nul_bytes_and_non_strings_are_refused(repo: Path):
    assert "NUL byte" in refused(repo, "src/app.py\x00.txt")
    assert "must be a string" in refused(repo, 42)
    assert "empty" in refused(repo, "")


def test_symlink_to_etc_is_refused(repo: Path):
    os.symlink("/etc", repo / "etc")
    message = refused(repo, "etc/passwd")
    assert "through the symbolic link 'etc'" in message


def test_symlinked_directory_leading_out_is_refused_for_reads_and_writes(repo: Path, outside: Path):
    os.symlink(outside, repo / "data")
    assert "outside the repository" in refused(repo, "data/secret.txt")
    assert "outside the repository" in refused(repo, "data/new.txt", write=True)
    assert "outside the repository" in refused(repo, "data")


def test_symlinked_file_leading_out_is_refused(repo: Path, outside: Path):
    os.symlink(outside / "secret.txt", repo / "notes.txt")
    assert "through the symbolic link 'notes.txt'" in refused(repo, "notes.txt")


def test_symlink_inside_the_repository_is_followed(repo: Path):
    os.symlink("src", repo / "code")
    target = resolve_repo_path(repo, "code/app.py")
    assert target.rel == "src/app.py"


def test_writes_into_git_are_refused_at_any_depth(repo: Path):
    for path in (".git/config", ".git/hooks/pre-commit", "vendor/lib/.git/HEAD", ".GIT/config"):
        assert "inside .git" in refused(repo, path, write=True)
    # Reading git metadata is harmless and allowed.
    assert resolve_repo_path(repo, ".git/HEAD").rel == ".git/HEAD"


def test_symlink_into_git_cannot_be_used_to_write_there(repo: Path):
    os.symlink(".git/hooks", repo / "hooks")
    assert "inside .git" in refused(repo, "hooks/pre-commit", write=True)


def test_root_itself_only_where_allowed(repo: Path):
    assert "repository root" in refused(repo, ".")
    assert resolve_repo_path(repo, ".", allow_root=True).is_root
    assert resolve_repo_path(repo, "", allow_root=True).is_root
    assert "is the repository root" in refused(repo, "src/..")
