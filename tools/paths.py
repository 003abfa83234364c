"""The one gate every model-supplied path goes through.

A path is accepted only if it is relative, and what it names after following every symbolic
link is inside the repository root. Writes into `.git` (at any depth: submodules, nested
repositories) are refused too, because a corrupted object store or a planted hook is worse than
any failed edit. The messages say what to do instead, since the model reads them.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tools.base import ToolError


@dataclass(frozen=True)
class RepoPath:
    abs: Path  # resolved absolute path (symlinks followed), inside the root
    rel: str  # the same, relative to the root, posix style ("." for the root itself)

    @property
    def is_root(self) -> bool:
        return self.rel == "."


def repo_root(root: Path) -> Path:
    return Path(os.path.realpath(root))


def resolve_repo_path(
    root: Path, path: object, *, write: bool = False, allow_root: bool = False
) -> RepoPath:
    """Resolve `path` (relative to `root`) or raise ToolError with an actionable message."""
    real_root = repo_root(root)
    if not isinstance(path, str):
        raise ToolError(f"path must be a string, got {type(path).__name__}")
    if "\x00" in path:
        raise ToolError("path contains a NUL byte; give a plain relative path like 'src/app.py'")
    if path.strip() in ("", ".", "./"):
        if allow_root:
            return RepoPath(real_root, ".")
        raise ToolError("path is empty; give a file path relative to the repository root")
    if path.startswith("~"):
        raise ToolError(
            f"'{path}' refused: '~' is not expanded and home directories are outside the "
            "repository; give a path relative to the repository root"
        )
    if os.path.isabs(path):
        inside = _relative_if_inside(real_root, Path(os.path.realpath(path)))
        hint = (
            f"; use the relative path '{inside}'"
            if inside not in (None, ".")
            else "; only files inside the repository are accessible"
        )
        raise ToolError(
            f"'{path}' refused: absolute paths are not accepted, paths are relative to the "
            f"repository root{hint}"
        )
    lexical = os.path.normpath(path)
    if lexical == ".." or lexical.startswith("../"):
        raise ToolError(
            f"'{path}' refused: it resolves outside the repository; only files inside the "
            "repository root are accessible"
        )
    full = real_root / lexical
    resolved = Path(os.path.realpath(full))
    rel = _relative_if_inside(real_root, resolved)
    if rel is None:
        link = _first_escaping_link(real_root, lexical)
        via = f" through the symbolic link '{link}'" if link else ""
        raise ToolError(
            f"'{path}' refused: it leads outside the repository{via}; only files inside the "
            "repository root are accessible"
        )
    if rel == "." and not allow_root:
        raise ToolError(f"'{path}' is the repository root, not a file")
    if write and any(is_git_dir_name(part) for part in PurePosixPath(rel).parts):
        raise ToolError(
            f"'{path}' refused: writing inside .git is not allowed (it would corrupt the "
            "repository); edit working-tree files instead"
        )
    return RepoPath(resolved, rel)


# Code points HFS+ ignores in names, so `.g\u200cit` is `.git` there (git's own verify_path
# refuses the same set, see CVE-2014-9390).
_IGNORED_IN_NAMES = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u206a-\u206f\ufeff]")


def is_git_dir_name(part: str) -> bool:
    """Whether a path component names `.git` on some file system: any case (macOS, Windows),
    with ignorable code points (HFS+), trailing dots or spaces or as `GIT~1` (Windows)."""
    name = unicodedata.normalize("NFC", _IGNORED_IN_NAMES.sub("", part)).casefold()
    return name.rstrip(". ") == ".git" or name == "git~1"


def require_regular_file(target: RepoPath) -> None:
    """Refuse named pipes, sockets and devices: opening a FIFO would wait for a writer forever."""
    try:
        mode = target.abs.stat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise ToolError(f"{target.rel} is not a regular file (a pipe, socket or device)")


def _relative_if_inside(real_root: Path, resolved: Path) -> str | None:
    if resolved == real_root:
        return "."
    if resolved.is_relative_to(real_root):
        return resolved.relative_to(real_root).as_posix()
    return None


def _first_escaping_link(real_root: Path, lexical: str) -> str | None:
    """Name the symlink that takes the path out, so the message is concrete."""
    current = real_root
    for part in PurePosixPath(lexical).parts:
        current = current / part
        if current.is_symlink():
            target = Path(os.path.realpath(current))
            if _relative_if_inside(real_root, target) is None:
                return current.relative_to(real_root).as_posix()
    return None
