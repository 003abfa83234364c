"""Which files of a repository the context engine (and the agent's tools) may see.

In a git work tree: tracked files plus untracked files that git does not ignore, listed by one
`git ls-files -z` call (so deleted-but-tracked files, submodules and non-ASCII names are handled
exactly as git sees them). Outside git: a walk that honours every `.gitignore` (pathspec's
gitignore semantics, nested files and negation included). In both cases a root `.v4codeignore`
adds exclusions, vendored/build directories and secret-looking file names are left out, symlinks
are never followed, and `.git` is never read.

git is run as a subprocess directly rather than through gitpython: gitpython's `Git` wrapper is
itself a subprocess call, and importing the package costs ~70 ms of CPU per process, about half
of a warm `v4code context` (measured: `python bench/pack.py --git`, docs/context.md).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from agent.context import rules

V4CODEIGNORE = ".v4codeignore"
DEFAULT_MAX_FILE_BYTES = 1_048_576
HARD_MAX_FILE_BYTES = 64 << 20  # the limit --include cannot lift (a 1M-token pack is ~4 MB)


@dataclass(frozen=True, slots=True)
class Excluded:
    """A file (or a directory, path ending in '/') left out of the pack, and why."""

    path: str
    reason: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """A regular file that passed the path rules; content rules are applied by the packer."""

    path: str  # relative to the root, forward slashes
    size: int
    included: bool = (
        False  # matched an explicit --include: content rules (secrets etc.) do not apply
    )


class GitError(RuntimeError):
    pass


def git_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of a git call with stable, script-friendly settings: no optional
    locks, the C locale, paths unquoted. Shared by `run_git` and the streaming `git log` of
    `agent.context.history`."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    return ["git", "-c", "core.quotepath=off", *args], env


def run_git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run git in `root` with stable, script-friendly settings; stdout/stderr as bytes."""
    argv, env = git_command(*args)
    proc = subprocess.run(argv, cwd=root, capture_output=True, env=env)
    if check and proc.returncode != 0:
        raise GitError(
            f"git {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


@dataclass(frozen=True)
class GitInfo:
    toplevel: Path
    prefix: str  # the root's path inside the work tree ('' or 'sub/dir/')
    head: str | None  # None before the first commit


def inside_git_dir(root: Path) -> bool:
    """True for a `.git` directory or anything below one (never packed, never walked)."""
    return ".git" in root.parts


def git_info(root: Path) -> GitInfo | None:
    """GitInfo when `root` is inside a git work tree (and not inside .git), else None.

    A root that the enclosing work tree ignores (say, a project under a home directory that is
    itself a work tree ignoring `*`) is not part of it: git would list none of its files, so
    it is walked as a plain directory instead."""
    try:
        proc = run_git(
            root,
            "rev-parse",
            "--show-toplevel",
            "--show-prefix",
            "--verify",
            "-q",
            "HEAD",
            check=False,
        )
    except FileNotFoundError:  # git not installed: treat as a plain directory
        return None
    lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
    if proc.returncode not in (0, 1) or not lines or not lines[0]:
        return None
    head = lines[2].strip() if proc.returncode == 0 and len(lines) > 2 else None
    prefix = lines[1] if len(lines) > 1 else ""
    if prefix and run_git(root, "check-ignore", "-q", ".", check=False).returncode == 0:
        return None
    return GitInfo(Path(lines[0]), prefix, head)


def _split_z(data: bytes) -> list[str]:
    return [os.fsdecode(p) for p in data.split(b"\0") if p]


def normalize_rel(rel: str | os.PathLike[str]) -> str | None:
    """'a/./b' -> 'a/b'; None when the path escapes the root (absolute or '..')."""
    text = os.fspath(rel).replace("\\", "/")
    if text.startswith("/"):
        return None
    parts: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            return None
        parts.append(part)
    return "/".join(parts)


class _GitignoreStack:
    """Nested .gitignore files for a tree that is not a git work tree (pathspec semantics)."""

    def __init__(self, root: Path):
        self.root = root
        self._specs: dict[str, Any] = {}

    def _spec(self, dir_rel: str) -> Any:
        if dir_rel not in self._specs:
            path = self.root / dir_rel / ".gitignore" if dir_rel else self.root / ".gitignore"
            spec = None
            try:
                if path.is_file() and not path.is_symlink():
                    import pathspec

                    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
                    spec = pathspec.GitIgnoreSpec.from_lines(lines)
            except OSError:
                spec = None
            self._specs[dir_rel] = spec
        return self._specs[dir_rel]

    def ignored_here(self, rel: str, is_dir: bool) -> bool:
        """Decision for `rel` itself from the .gitignore files of its ancestors, deepest first."""
        parts = rel.split("/")
        for depth in range(len(parts) - 1, -1, -1):
            base = "/".join(parts[:depth])
            spec = self._spec(base)
            if spec is None:
                continue
            sub = "/".join(parts[depth:]) + ("/" if is_dir else "")
            result = spec.check_file(sub)
            if result.include is not None:
                return bool(result.include)
        return False

    def ignored(self, rel: str, is_dir: bool) -> bool:
        """Git semantics: a file below an ignored directory is ignored whatever it says."""
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if self.ignored_here("/".join(parts[:i]), True):
                return True
        return self.ignored_here(rel, is_dir)


class RepoFiles:
    """Discovery with the engine's ignore rules. Cheap to create; scans on first use.

    paths()            sorted relative paths the agent may see: regular files not ignored by
                       .gitignore/.v4codeignore, not under a vendored/build directory, not
                       secret-looking by name, not symlinks leading out of the root
    is_ignored(rel)    True when `rel` (file or directory) falls under those rules
    candidates()       files for the packer (paths() minus lock/minified/generated/oversized,
                       with their sizes; an --include match overrides those rules)
    excluded()         every path-level exclusion with its reason
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        include: Iterable[str] = (),
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ):
        self.root = Path(root).resolve()
        self.include_patterns = tuple(p for p in include if p)
        self.max_file_bytes = max_file_bytes
        self._scanned = False
        self._visible: list[str] = []
        self._candidates: list[Candidate] = []
        self._excluded: list[Excluded] = []
        self._tracked: set[str] = set()
        self._untracked: set[str] = set()
        self._check_ignore_cache: dict[str, bool] = {}

    # -- rule objects ------------------------------------------------------------------------

    @cached_property
    def git(self) -> GitInfo | None:
        return git_info(self.root)

    @property
    def is_git(self) -> bool:
        return self.git is not None

    @cached_property
    def _v4codeignore(self) -> Any:
        path = self.root / V4CODEIGNORE
        try:
            if not path.is_file() or path.is_symlink():
                return None
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return None
        import pathspec

        return pathspec.GitIgnoreSpec.from_lines(lines)

    @cached_property
    def _include(self) -> Any:
        if not self.include_patterns:
            return None
        import pathspec

        return pathspec.GitIgnoreSpec.from_lines(self.include_patterns)

    @cached_property
    def _gitignores(self) -> _GitignoreStack:
        return _GitignoreStack(self.root)

    def explicitly_included(self, rel: str) -> bool:
        spec = self._include
        return spec is not None and spec.match_file(rel)

    def _v4codeignored(self, rel: str, is_dir: bool = False) -> bool:
        spec = self._v4codeignore
        if spec is None:
            return False
        parts = rel.split("/")
        for i in range(1, len(parts)):  # an ignored directory hides everything below it
            if spec.check_file("/".join(parts[:i]) + "/").include:
                return True
        return bool(spec.check_file(rel + ("/" if is_dir else "")).include)

    def rule_reason(self, rel: str, is_dir: bool = False) -> str | None:
        """Why the engine's own path rules hide `rel` (None when they do not)."""
        if rel == ".git" or rel.startswith(".git/") or "/.git/" in f"/{rel}/":
            return "git metadata"
        if self.explicitly_included(rel):
            return None
        if is_dir and rules.vendored_dir(rel.rsplit("/", 1)[-1]):
            return f"vendored or build directory ({rel}/)"
        reason = rules.vendored_reason(rel)
        if reason:
            return reason
        if self._v4codeignored(rel, is_dir):
            return f"ignored by {V4CODEIGNORE}"
        if not is_dir:
            secret = rules.secret_name_rule(rel)
            if secret:
                return f"secret: {secret} (by file name)"
        return None

    # -- scanning ----------------------------------------------------------------------------

    def _scan(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        if inside_git_dir(self.root):
            self._excluded.append(Excluded("./", "git metadata (the root is inside .git)"))
            return
        listing = self._git_listing() if self.git is not None else self._walk_listing()
        grouped: dict[str, int] = {}  # excluded directory -> number of files below it
        visible: list[str] = []
        kept: list[str] = []
        for rel in listing:
            reason = self.rule_reason(rel)
            if reason is not None:
                directory = _reason_directory(reason)
                if directory:
                    grouped[directory] = grouped.get(directory, 0) + 1
                else:
                    self._excluded.append(Excluded(rel, reason))
                continue
            kept.append(rel)
        named = secret_paths(p for p in kept if not self.explicitly_included(p))
        for rel in kept:
            if rel in named:
                rule, shown = named[rel]
                self._excluded.append(Excluded(shown, f"secret: {rule} (in the path)"))
                continue
            self._classify(rel, visible)
        for directory, count in grouped.items():
            noun = "file" if count == 1 else "files"
            self._excluded.append(
                Excluded(directory, f"vendored or build directory ({count} {noun})")
            )
        visible.sort()
        self._visible = visible
        self._candidates.sort(key=lambda c: c.path)
        self._excluded.sort(key=lambda e: e.path)

    def _classify(self, rel: str, visible: list[str]) -> None:
        if rel.endswith("/"):  # how ls-files --others lists an untracked nested repository
            self._excluded.append(Excluded(rel, "nested git repository (not packed)"))
            return
        try:
            st = os.lstat(os.path.join(self.root, rel))  # a str join: Path objects cost 5 us
        except FileNotFoundError:
            self._excluded.append(Excluded(rel, "deleted in the working tree"))
            return
        except OSError as exc:
            self._excluded.append(Excluded(rel, f"unreadable ({exc.strerror})"))
            return
        if stat.S_ISLNK(st.st_mode):
            full = self.root / rel
            self._excluded.append(Excluded(rel, self._symlink_reason(full)))
            if self._symlink_inside(full) and full.is_file():
                visible.append(rel)
            return
        if stat.S_ISDIR(st.st_mode):
            self._excluded.append(Excluded(rel + "/", "git submodule (not packed)"))
            return
        if not stat.S_ISREG(st.st_mode):
            self._excluded.append(Excluded(rel, "not a regular file"))
            return
        visible.append(rel)
        included = self.explicitly_included(rel)
        if not included:
            reason = rules.name_exclusion(rel)
            if reason is None and st.st_size > self.max_file_bytes:
                reason = f"too large ({st.st_size:,} bytes > {self.max_file_bytes:,})"
            if reason is not None:
                self._excluded.append(Excluded(rel, reason))
                return
        elif st.st_size > HARD_MAX_FILE_BYTES:  # never read: no budget holds it whole anyway
            size = f"{st.st_size:,} bytes > {HARD_MAX_FILE_BYTES:,}"
            self._excluded.append(Excluded(rel, f"too large even with --include ({size})"))
            return
        self._candidates.append(Candidate(rel, st.st_size, included))

    def _resolves_inside(self, full: Path) -> bool:
        try:
            return Path(os.path.realpath(full)).is_relative_to(self.root)
        except (OSError, ValueError):
            return False

    def _symlink_inside(self, full: Path) -> bool:
        try:
            target = full.resolve(strict=True)
        except (OSError, RuntimeError):  # broken, or a loop
            return False
        return target.is_relative_to(self.root) and target != self.root

    def _symlink_reason(self, full: Path) -> str:
        try:
            target = full.resolve(strict=True)
        except RuntimeError:
            return "symlink loop (not followed)"
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # Python >= 3.13 raises OSError for a loop
                return "symlink loop (not followed)"
            if isinstance(exc, FileNotFoundError):
                return "broken symlink"
            return f"symlink (unreadable: {exc.strerror})"
        if not (target.is_relative_to(self.root) and target != self.root):
            return "symlink leading out of the repository (not followed)"
        kind = "directory" if target.is_dir() else "file"
        return f"symlink to a {kind} in the repository (not followed; packed under its own path)"

    def _git_listing(self) -> list[str]:
        info = self.git
        assert info is not None
        proc = run_git(
            self.root, "ls-files", "-z", "-t", "--cached", "--others", "--exclude-standard"
        )
        seen: set[str] = set()
        listing: list[str] = []
        for entry in _split_z(proc.stdout):
            tag, _, rel = entry.partition(" ")
            if rel in seen:  # unmerged paths appear once per stage
                continue
            seen.add(rel)
            listing.append(rel)
            if tag == "?":
                self._untracked.add(rel)
            else:
                self._tracked.add(rel)
        return listing

    def _walk_listing(self) -> list[str]:
        listing: list[str] = []
        ignores = self._gitignores
        has_include = self._include is not None

        def walk(dir_rel: str) -> None:
            path = self.root / dir_rel if dir_rel else self.root
            try:
                entries = sorted(os.scandir(path), key=lambda e: e.name)
            except OSError as exc:
                self._excluded.append(
                    Excluded((dir_rel or ".") + "/", f"unreadable ({exc.strerror})")
                )
                return
            for entry in entries:
                rel = f"{dir_rel}/{entry.name}" if dir_rel else entry.name
                if entry.name == ".git":
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                if ignores.ignored_here(rel, is_dir):
                    continue
                if is_dir:
                    # Prune vendored or .v4codeignore'd directories unless an --include may reach in.
                    # Not descended into at all, so a huge node_modules costs nothing.
                    reason = None if has_include else self.rule_reason(rel, is_dir=True)
                    if reason is not None:
                        if reason.startswith("vendored"):
                            reason = "vendored or build directory (not scanned)"
                        self._excluded.append(Excluded(rel + "/", reason))
                        continue
                    walk(rel)
                else:
                    listing.append(rel)

        walk("")
        return listing

    # -- public ------------------------------------------------------------------------------

    def paths(self) -> list[str]:
        self._scan()
        return list(self._visible)

    def candidates(self) -> list[Candidate]:
        self._scan()
        return list(self._candidates)

    def excluded(self) -> list[Excluded]:
        self._scan()
        return list(self._excluded)

    @property
    def untracked(self) -> set[str]:
        self._scan()
        return set(self._untracked)

    @property
    def tracked(self) -> set[str]:
        self._scan()
        return set(self._tracked)

    @cached_property
    def _visible_set(self) -> frozenset[str]:
        return frozenset(self.paths())

    @cached_property
    def _visible_dirs(self) -> frozenset[str]:
        dirs: set[str] = set()
        for rel in self.paths():
            parts = rel.split("/")
            for i in range(1, len(parts)):
                dirs.add("/".join(parts[:i]))
        return frozenset(dirs)

    def is_ignored(self, rel: str | os.PathLike[str]) -> bool:
        """True when `rel` is hidden from the agent: outside the root, ignored by git or
        .v4codeignore, vendored, secret-looking by name, or a symlink leading out of the root."""
        norm = normalize_rel(rel)
        if norm is None:
            return True
        if norm == "":
            return False
        if norm in self._visible_set or norm in self._visible_dirs:
            return False
        if inside_git_dir(self.root):
            return True
        full = self.root / norm
        is_dir = full.is_dir() and not full.is_symlink()
        if self.rule_reason(norm, is_dir) is not None:
            return True
        if not self._resolves_inside(full):
            return True  # the path itself, or a directory on the way, is a link leading out
        if not self.explicitly_included(norm) and secret_paths([norm]):
            return True
        if self.git is not None:
            return self._git_check_ignore(norm)
        return self._gitignores.ignored(norm, is_dir)

    def _git_check_ignore(self, rel: str) -> bool:
        if rel not in self._check_ignore_cache:
            proc = run_git(self.root, "check-ignore", "-q", "--", rel, check=False)
            self._check_ignore_cache[rel] = proc.returncode == 0
        return self._check_ignore_cache[rel]


# Every content rule that could fire on a name needs a long run of token characters: 16+ with a
# digit (keys, vendor tokens, JWTs), or 30+ of mixed-case letters (Hugging Face tokens have no
# digits). Most trees have no such name, so they never load the secret rules for their paths.
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_\-+=.~]{16,}")


def _token_like(run: str) -> bool:
    if any(c.isdigit() for c in run):
        return True
    return len(run) >= 30 and not run.islower() and not run.isupper()


REDACTED = "[redacted]"


def secret_paths(paths: Iterable[str]) -> dict[str, tuple[str, str]]:
    """{path: (rule id, the path with every segment holding a secret redacted)} for the paths
    whose names contain a secret (a token pasted into a file or directory name). The path must
    not be shown either: the redacted form is what reports carry."""
    paths = list(paths)
    joined = "\n".join(paths)
    if not any(_token_like(run) for run in _TOKEN_RUN.findall(joined)):
        return {}
    from agent.context.secrets import scan

    if scan(joined) is None:
        return {}
    verdicts: dict[str, str | None] = {}
    found: dict[str, tuple[str, str]] = {}
    for rel in paths:
        segments = rel.split("/")
        rule = None
        for i, segment in enumerate(segments):
            if segment not in verdicts:
                verdicts[segment] = scan(segment)
            if verdicts[segment]:
                rule = rule or verdicts[segment]
                segments[i] = REDACTED
        if rule:
            found[rel] = (rule, "/".join(segments))
    return found


def _reason_directory(reason: str) -> str | None:
    """'vendored or build directory (node_modules/)' -> 'node_modules/'."""
    if reason.startswith("vendored or build directory (") and reason.endswith("/)"):
        return reason[len("vendored or build directory (") : -1]
    return None
