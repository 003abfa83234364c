"""The one gate every model-supplied path goes through.

A path is accepted only if it is relative, and what it names after following every symbolic
link is inside the repository root. Writes into `.git` (at any depth: submodules, nested
repositories) are refused too, because a corrupted object store or a planted hook is worse than
any failed edit. The messages say what to do instead, since the model reads them.
"""

from __future__ import annotations

import os
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
    if write and any(part.lower() == ".git" for part in PurePosixPath(rel).parts):
        raise ToolError(
            f"'{path}' refused: writing inside .git is not allowed (it would corrupt the "
            "repository); edit working-tree files instead"
        )
    return RepoPath(resolved, rel)


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
