"""Never lose the user's work: snapshots before the first edit, the fix's patch, and `undo`.

Two layers, both written before anything changes:

* A snapshot of the whole working tree (tracked and untracked files, uncommitted changes
  included, ignored files excluded) as a git commit under `refs/v4code/snapshots/<run>`. It is
  built with a temporary index, so the user's index, stash and branches are never touched. A
  directory that is not a git repository gets a shadow git directory in the state directory.
* A journal of each file the fix touches: its original bytes and mode, copied before the first
  change (this also covers ignored files, which the snapshot leaves out). Files changed by a
  model-run command are found by comparing file stats around the command; their originals come
  from the snapshot.

`undo` restores exactly the journalled files whose state differs from before the fix (deleting
the files the fix created), and refuses if one of them changed again since the fix ended.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import UsageError, V4CodeError
from agent.fileio import atomic_write
from agent.gitcmd import run_git
from agent.paths import state_dir

SNAPSHOT_REF_PREFIX = "refs/v4code/snapshots/"
KEEP_SNAPSHOTS = 20
MUTATING_TOOLS = frozenset({"edit_file", "write_file"})
PRIVATE = 0o600  # the journal and its blobs: copies of the user's files, for the user alone


class SnapshotError(V4CodeError):
    """Git could not record the snapshot (the journal still protects the files tools edit)."""


# --- interrupt safety ---------------------------------------------------------------------


_held: list[int] | None = None  # signals caught by the outermost deferred_interrupt block


@contextmanager
def deferred_interrupt(*, reraise: bool = True) -> Iterator[list[int]]:
    """Hold Ctrl-C (and SIGTERM) until the block ends, so no file is left half-written.

    Yields the list of signals that arrived meanwhile. At the end of the outermost block a held
    signal becomes KeyboardInterrupt, unless `reraise=False` (the block finishes a run that is
    over anyway: its result stands). Nested blocks defer to the outermost one. Only possible in
    the main thread (signal handlers live there); elsewhere a no-op.
    """
    global _held
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    if _held is not None:
        yield _held
        return
    pending: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    _held = pending
    try:
        yield pending
    finally:
        _held = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending and reraise:
            raise KeyboardInterrupt


# --- git plumbing -------------------------------------------------------------------------


def _git(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, input: bytes | None = None
) -> bytes:
    result = run_git(args, cwd, env=env, input=input, identity=True)
    if not result.ok:
        raise SnapshotError(f"git {' '.join(args[:3])} failed: {result.error_text()}")
    return result.stdout


def git_toplevel(root: Path) -> Path | None:
    """The work tree root of the git repository containing `root`, or None."""
    out = run_git(["rev-parse", "--show-toplevel"], root)
    top = out.text().strip()
    if not out.ok or not top:
        return None
    return Path(top).resolve()


def repo_key(root: Path) -> str:
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


class Snapshot:
    """The working tree under `root` as a git tree, kept alive by a ref of our own."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        top = git_toplevel(self.root)
        if top is not None:
            self.env: dict[str, str] = {}
            git_dir = Path(_git(["rev-parse", "--absolute-git-dir"], self.root).decode().strip())
            self.index_seed = git_dir / "index"
            self.prefix = self.root.relative_to(top).as_posix()
            self.shadow = False
        else:
            shadow = state_dir() / "shadow" / f"{repo_key(self.root)}.git"
            if not (shadow / "HEAD").exists():
                shadow.parent.mkdir(parents=True, exist_ok=True)
                _git(["init", "-q", "--bare", str(shadow)], self.root)
            self.env = {"GIT_DIR": str(shadow), "GIT_WORK_TREE": str(self.root)}
            self.index_seed = shadow / "v4code-index"
            self.prefix = ""
            self.shadow = True
        self.commit: str | None = None
        self.tree: str | None = None
        self.ref: str | None = None

    def _rel_to_git(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix and self.prefix != "." else rel

    def capture(self, run_id: str) -> str:
        """Record the tree and keep it under refs/v4code/snapshots/<run_id>; returns the commit."""
        with tempfile.TemporaryDirectory(prefix="v4code-index-") as tmp:
            index = Path(tmp) / "index"
            if self.index_seed.exists():
                # Reusing the index's stat data means only changed files are re-hashed.
                shutil.copyfile(self.index_seed, index)
            env = {**self.env, "GIT_INDEX_FILE": str(index)}
            _git(["add", "-A", "--", "."], self.root, env)
            self.tree = _git(["write-tree"], self.root, env).decode().strip()
            if self.shadow:
                shutil.copyfile(index, self.index_seed)
        parents: list[str] = []
        head = run_git(["rev-parse", "--verify", "-q", "HEAD"], self.root, env=self.env)
        if head.ok and head.text().strip():
            parents = ["-p", head.text().strip()]
        self.commit = (
            _git(
                ["commit-tree", self.tree, *parents, "-m", f"v4code snapshot before fix {run_id}"],
                self.root,
                self.env,
            )
            .decode()
            .strip()
        )
        self.ref = SNAPSHOT_REF_PREFIX + run_id
        _git(["update-ref", self.ref, self.commit], self.root, self.env)
        self._prune()
        return self.commit

    def original(self, rel: str) -> tuple[bytes, int] | None:
        """(bytes, mode) of `rel` in the snapshot, or None when it was not there."""
        if self.tree is None:
            return None
        path = self._rel_to_git(rel)
        # --full-tree: without it ls-tree reads `path` relative to the cwd (a subdirectory).
        listing = _git(["ls-tree", "--full-tree", "-z", self.tree, "--", path], self.root, self.env)
        for entry in listing.split(b"\0"):
            if not entry:
                continue
            meta, _, name = entry.partition(b"\t")
            mode, kind, sha = meta.decode().split()
            if kind != "blob" or name.decode(errors="surrogateescape") != path:
                continue
            # --filters: the file as a checkout writes it (eol=crlf, autocrlf, LFS smudge), i.e.
            # the bytes that were on disk, not the normalised blob `git add` stored.
            data = _git(["cat-file", "--filters", f"--path={path}", sha], self.root, self.env)
            return data, int(mode, 8) & 0o777 | stat.S_IFREG
        return None

    def _prune(self) -> None:
        out = (
            _git(
                ["for-each-ref", "--sort=-creatordate", "--format=%(refname)", SNAPSHOT_REF_PREFIX],
                self.root,
                self.env,
            )
            .decode()
            .split()
        )
        for ref in out[KEEP_SNAPSHOTS:]:
            _git(["update-ref", "-d", ref], self.root, self.env)


# --- the journal of one fix ---------------------------------------------------------------


def undo_dir(root: Path) -> Path:
    """Where the journals of fixes in `root` live: one place per git repository (whatever
    subdirectory a fix ran in), so `v4code undo` anywhere in it finds the last fix."""
    root = root.resolve()
    return state_dir() / "undo" / repo_key(git_toplevel(root) or root)


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _mode_changed(before: int | None, after: int | None) -> bool:
    """Only the permission bits git records count (executable or not)."""
    if before is None or after is None:
        return False
    return bool(before & 0o111) != bool(after & 0o111)


def _read_state(path: Path) -> tuple[bytes | None, int | None]:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None, None
    if not stat.S_ISREG(st.st_mode):
        return None, None
    return path.read_bytes(), st.st_mode


@dataclass
class FileChange:
    path: str  # relative posix path
    before: bytes | None  # None: did not exist
    after: bytes | None  # None: deleted
    before_mode: int | None = None
    after_mode: int | None = None

    @property
    def kind(self) -> str:
        if self.before is None:
            return "created"
        if self.after is None:
            return "deleted"
        return "modified"


@dataclass
class ChangeTracker:
    """Watches one fix: journals originals before each change, and lists what changed."""

    root: Path
    run_id: str
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot: Snapshot | None = None
    snapshot_error: str | None = None
    _stats: dict[str, tuple[int, ...]] | None = None
    # (content, mode) after the latest call, per path
    _last: dict[str, tuple[bytes | None, int | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.dir = undo_dir(self.root) / self.run_id
        self._started = False

    # The loop calls these around every tool call.
    def before_tool(self, name: str, args: dict[str, Any] | None) -> None:
        if name in MUTATING_TOOLS or name == "run_command":
            self._ensure_started()
        if name in MUTATING_TOOLS and args:
            rel = self.safe_rel(args.get("path"))
            if rel is not None and rel not in self.entries:
                self._journal_from_disk(rel)
        elif name == "run_command":
            self._stats = self._stat_files()

    def after_tool(self, name: str, args: dict[str, Any] | None) -> list[FileChange]:
        """What this one tool call changed: per path, the content before and after the call."""
        if name in MUTATING_TOOLS and args:
            rel = self.safe_rel(args.get("path"))
            candidates = [rel] if rel is not None and rel in self.entries else []
        elif name == "run_command" and self._stats is not None:
            before, after = self._stats, self._stat_files()
            self._stats = None
            candidates = sorted(
                p for p in set(before) | set(after) if before.get(p) != after.get(p)
            )
            for rel in candidates:
                if rel not in self.entries:
                    self._journal_from_snapshot(rel, existed_before=rel in before)
        else:
            return []
        changes = []
        for rel in candidates:
            if self.entries[rel].get("unrestorable"):
                continue
            previous, prev_mode = self._last[rel] if rel in self._last else self._before(rel)
            current, mode = _read_state(self.root / rel)
            if current != previous or _mode_changed(prev_mode, mode):
                changes.append(FileChange(rel, previous, current, prev_mode, mode))
            self._last[rel] = (current, mode)
        return changes

    def _before(self, rel: str) -> tuple[bytes | None, int | None]:
        entry = self.entries[rel]
        blob = entry.get("blob")
        if not blob:
            return None, None
        return (self.dir / "blobs" / blob).read_bytes(), entry.get("before_mode")

    def safe_rel(self, raw: Any) -> str | None:
        """`raw` as a normalised path inside the root, or None (the tool will refuse it)."""
        if (
            not isinstance(raw, str)
            or not raw
            or "\0" in raw
            or os.path.isabs(raw)
            or raw.startswith("~")
        ):
            return None
        # The real file is what changes (a symlink inside the repo edits its target).
        real = os.path.realpath(os.path.join(str(self.root), raw))
        root = str(self.root)
        if not real.startswith(root + os.sep):
            return None
        rel = Path(os.path.relpath(real, root)).as_posix()
        if rel == ".git" or rel.startswith(".git/"):
            return None
        return rel

    def _ensure_started(self) -> None:
        if self._started:
            return
        self._started = True
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "blobs").mkdir(exist_ok=True)
        # The journal is the last fix before the (slow) snapshot starts: a Ctrl-C during the
        # snapshot must not leave `undo` pointing at an older fix.
        with deferred_interrupt():
            self._save(complete=False)
            atomic_write(self.dir.parent / "LAST", self.run_id.encode(), mode=PRIVATE)
        try:
            self.snapshot = Snapshot(self.root)
            self.snapshot.capture(self.run_id)
        except (SnapshotError, OSError) as exc:
            self.snapshot, self.snapshot_error = None, str(exc)
        self._save(complete=False)

    def _journal(self, rel: str, data: bytes | None, mode: int | None) -> None:
        entry: dict[str, Any] = {"before_exists": data is not None, "before_sha": _sha(data)}
        if data is not None:
            blob = self.dir / "blobs" / f"{len(self.entries):05d}"
            atomic_write(blob, data, mode=PRIVATE)
            entry.update(blob=blob.name, before_mode=mode)
        else:
            # Directories the fix creates are removed again by undo, deepest first.
            created, parent = [], (self.root / rel).parent
            while parent != self.root and not parent.exists():
                created.append(parent.relative_to(self.root).as_posix())
                parent = parent.parent
            entry["created_dirs"] = created
        with deferred_interrupt():
            self.entries[rel] = entry
            self._save(complete=False)

    def _journal_from_disk(self, rel: str) -> None:
        data, mode = _read_state(self.root / rel)
        self._journal(rel, data, mode)

    def _journal_from_snapshot(self, rel: str, *, existed_before: bool) -> None:
        try:
            original = self.snapshot.original(rel) if self.snapshot is not None else None
        except (SnapshotError, OSError):  # e.g. a smudge filter that fails: never crash the run
            original = None
        if original is not None:
            self._journal(rel, *original)
        elif not existed_before:
            self._journal(rel, None, None)  # the command created it
        else:
            # It existed, but neither the journal nor the snapshot holds its bytes: never guess
            # (restoring "absent" would delete a user's file).
            with deferred_interrupt():
                self.entries[rel] = {"before_exists": None, "unrestorable": True}
                self._save(complete=False)

    def _stat_files(self) -> dict[str, tuple[int, ...]]:
        from agent.context import RepoFiles  # the context engine's ignore rules

        stats: dict[str, tuple[int, ...]] = {}
        # Files journalled earlier stay watched even when the ignore rules skip them.
        for rel in [*RepoFiles(self.root).paths(), *self.entries]:
            try:
                st = (self.root / rel).lstat()
            except OSError:
                continue
            # The mode is in the key: `chmod` changes neither size nor mtime.
            stats[rel] = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)
        return stats

    def finalize(self) -> list[FileChange]:
        """Record the after-state of every journalled file; returns the real changes."""
        if not self._started:
            return []
        if self._stats is not None:
            # A command was cut short (Ctrl-C, a crash): journal what it changed before it died.
            self.after_tool("run_command", None)
        changes: list[FileChange] = []
        with deferred_interrupt():
            for rel, entry in sorted(self.entries.items()):
                after, after_mode = _read_state(self.root / rel)
                entry["after_exists"] = after is not None
                entry["after_sha"] = _sha(after)
                entry["after_mode"] = after_mode
                if entry.get("unrestorable"):
                    continue
                before, _ = self._before(rel)
                if _sha(before) != _sha(after) or _mode_changed(
                    entry.get("before_mode"), after_mode
                ):
                    changes.append(
                        FileChange(rel, before, after, entry.get("before_mode"), after_mode)
                    )
            self._save(complete=True, changed=[c.path for c in changes])
        return changes

    def unrestorable(self) -> list[str]:
        return sorted(rel for rel, e in self.entries.items() if e.get("unrestorable"))

    def _save(self, *, complete: bool, changed: list[str] | None = None) -> None:
        record = {
            "version": 1,
            "run_id": self.run_id,
            "root": str(self.root),
            "complete": complete,
            "snapshot": {
                "commit": self.snapshot.commit,
                "ref": self.snapshot.ref,
                "shadow": self.snapshot.shadow,
            }
            if self.snapshot and self.snapshot.commit
            else None,
            "snapshot_error": self.snapshot_error,
            "entries": self.entries,
            "changed": changed,
        }
        atomic_write(self.dir / "journal.json", json.dumps(record, indent=1).encode(), mode=PRIVATE)


# --- undo ---------------------------------------------------------------------------------


@dataclass
class UndoResult:
    run_id: str
    restored: list[str]
    deleted: list[str]
    conflicts: list[str]
    snapshot_ref: str | None
    root: str = ""  # the directory the fix ran in; the paths above are relative to it

    def to_json(self) -> dict[str, Any]:
        return {
            "command": "undo",
            "status": "ok",
            "run_id": self.run_id,
            "root": self.root,
            "restored": self.restored,
            "deleted": self.deleted,
            "forced_over": self.conflicts,
            "snapshot_ref": self.snapshot_ref,
            "error": None,
        }


class UndoConflict(UsageError):
    status = "undo_conflict"


def load_last_record(root: Path) -> tuple[Path, dict[str, Any]]:
    base = undo_dir(root.resolve())
    try:
        run_id = (base / "LAST").read_text().strip()
        record_dir = base / run_id
        record = json.loads((record_dir / "journal.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise UsageError(f"nothing to undo: no fix has changed files in {root}") from None
    return record_dir, record


def undo_last(root: Path, *, force: bool = False) -> UndoResult:
    """Restore the files the last fix changed, exactly as they were before it.

    `root` may be any directory of the repository: the last fix there is undone, in the
    directory it ran in (its journal's paths are relative to that directory).
    """
    record_dir, record = load_last_record(root.resolve())
    if record.get("undone_at"):
        raise UsageError(f"nothing to undo: the last fix ({record['run_id']}) was already undone")
    base = Path(record.get("root") or root).resolve()
    entries: dict[str, dict[str, Any]] = record["entries"]
    complete = bool(record.get("complete"))
    todo, conflicts = [], []
    for rel, entry in sorted(entries.items()):
        if entry.get("unrestorable"):
            continue
        data, mode = _read_state(base / rel)
        current = _sha(data)
        if current == entry.get("before_sha") and not _mode_changed(entry.get("before_mode"), mode):
            continue  # already as before the fix
        todo.append(rel)
        after_mode = entry.get("after_mode")
        if not complete or current != entry.get("after_sha") or _mode_changed(after_mode, mode):
            conflicts.append(rel)
    if conflicts and not force:
        why = "changed again since the fix" if complete else "the fix was killed before it ended"
        raise UndoConflict(
            f"refusing to undo: {len(conflicts)} file(s) {why}: {', '.join(conflicts)}",
            hint="Nothing was changed. Re-run with --force to restore them anyway (your later changes "
            "to those files would be lost).",
        )
    restored, deleted = [], []
    with deferred_interrupt():
        for rel in todo:
            entry, path = entries[rel], base / rel
            if entry.get("before_exists"):
                atomic_write(
                    path,
                    (record_dir / "blobs" / entry["blob"]).read_bytes(),
                    mode=entry.get("before_mode"),
                )
                restored.append(rel)
            else:
                if path.is_file() or path.is_symlink():
                    path.unlink()
                deleted.append(rel)
                for d in entry.get("created_dirs", []):
                    try:
                        (base / d).rmdir()
                    except OSError:
                        break
        record["undone_at"] = time.time()
        atomic_write(
            record_dir / "journal.json", json.dumps(record, indent=1).encode(), mode=PRIVATE
        )
    snap = record.get("snapshot") or {}
    return UndoResult(
        record["run_id"],
        restored,
        deleted,
        conflicts if force else [],
        snap.get("ref"),
        str(base),
    )


# --- patches ------------------------------------------------------------------------------

_LINE = re.compile(rb"[^\n]*\n|[^\n]+\Z")


def _lines(data: bytes | None) -> list[bytes]:
    return _LINE.findall(data) if data else []


def unified_patch(changes: list[FileChange]) -> str:
    """A git-style unified diff of `changes` that `git apply` (and `patch -p1`) accepts."""
    out: list[bytes] = []
    for ch in sorted(changes, key=lambda c: c.path):
        a, b = f"a/{ch.path}".encode(), f"b/{ch.path}".encode()
        out.append(b"diff --git " + a + b" " + b + b"\n")
        if ch.before is None:
            out.append(f"new file mode {_git_mode(ch.after_mode)}\n".encode())
        elif ch.after is None:
            out.append(f"deleted file mode {_git_mode(ch.before_mode)}\n".encode())
        elif _git_mode(ch.before_mode) != _git_mode(ch.after_mode):
            out.append(
                f"old mode {_git_mode(ch.before_mode)}\nnew mode {_git_mode(ch.after_mode)}\n".encode()
            )
        if b"\0" in (ch.before or b"") or b"\0" in (ch.after or b""):
            out.append(_binary_hunk(ch))
            continue
        if (ch.before or b"") == (ch.after or b""):
            continue
        hunks = difflib.diff_bytes(
            difflib.unified_diff,
            _lines(ch.before),
            _lines(ch.after),
            a if ch.before is not None else b"/dev/null",
            b if ch.after is not None else b"/dev/null",
            n=3,
            lineterm=b"\n",
        )
        for line in hunks:
            out.append(line if line.endswith(b"\n") else line + b"\n\\ No newline at end of file\n")
    return b"".join(out).decode("utf-8", errors="surrogateescape")


def _blob_id(data: bytes | None) -> str:
    if data is None:
        return "0" * 40
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _binary_hunk(ch: FileChange) -> bytes:
    """Git's binary patch (`git diff --binary`): full blob ids, then the new and the old content
    as zlib-deflated base85 literals, so `git apply` (and `--commit`) handle binary files too."""
    same_mode = (
        ch.before is not None
        and ch.after is not None
        and _git_mode(ch.before_mode) == _git_mode(ch.after_mode)
    )
    mode = f" {_git_mode(ch.after_mode)}" if same_mode else ""
    lines = [f"index {_blob_id(ch.before)}..{_blob_id(ch.after)}{mode}\n".encode()]
    if (ch.before or b"") == (ch.after or b""):
        return b"".join(lines)
    lines.append(b"GIT binary patch\n")
    for data in (ch.after or b"", ch.before or b""):  # forward, then reverse
        lines.append(b"literal %d\n" % len(data))
        packed = zlib.compress(data)
        for i in range(0, len(packed), 52):
            chunk = packed[i : i + 52]
            n = len(chunk)
            lines.append(bytes([ord("A") + n - 1 if n <= 26 else ord("a") + n - 27]))
            lines.append(base64.b85encode(chunk, pad=True) + b"\n")
        lines.append(b"\n")
    return b"".join(lines)


def _git_mode(mode: int | None) -> str:
    return "100755" if mode is not None and mode & 0o111 else "100644"


def diffstat(changes: list[FileChange]) -> list[dict[str, Any]]:
    """Per file: path, kind, lines added and removed."""
    rows = []
    for ch in sorted(changes, key=lambda c: c.path):
        if b"\0" in (ch.before or b"") or b"\0" in (ch.after or b""):
            rows.append(
                {"path": ch.path, "kind": ch.kind, "added": 0, "removed": 0, "binary": True}
            )
            continue
        added = removed = 0
        matcher = difflib.SequenceMatcher(None, _lines(ch.before), _lines(ch.after), autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                removed += i2 - i1
                added += j2 - j1
        rows.append({"path": ch.path, "kind": ch.kind, "added": added, "removed": removed})
    return rows
