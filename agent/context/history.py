"""Pack order from git history: what changes rarely first, what changed recently last.

Each file is keyed by the committer time of the last commit that touched it; files with
uncommitted changes (staged, unstaged or untracked) count as changed now. Ties, and every file
of a tree that is not a git work tree, are ordered by path, so the order is deterministic.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable

from agent.context.cache import Store
from agent.context.discovery import RepoFiles, git_command, run_git

NOW = float("inf")  # sorts after every commit time


def changed_paths(repo: RepoFiles) -> set[str]:
    """Paths under the root with uncommitted changes (tracked files; untracked come from ls-files)."""
    info = repo.git
    if info is None:
        return set()
    proc = run_git(
        repo.root,
        "status",
        "--porcelain",
        "-z",
        "--untracked-files=no",
        "--no-renames",
        check=False,
    )
    if proc.returncode != 0:
        return set()
    changed: set[str] = set()
    for entry in proc.stdout.split(b"\0"):
        if len(entry) < 4:
            continue
        path = os.fsdecode(entry[3:])  # 'XY path', relative to the work tree's top level
        if info.prefix:
            if not path.startswith(info.prefix):
                continue
            path = path[len(info.prefix) :]
        changed.add(path)
    return changed


def last_commit_times(repo: RepoFiles, wanted: Iterable[str]) -> dict[str, int]:
    """{path: committer time of the last commit touching it} for the `wanted` tracked paths.

    Streams `git log` newest first and stops as soon as every wanted path has been seen, so a
    long history costs only as far back as the oldest file needs.
    """
    info = repo.git
    if info is None or info.head is None:
        return {}
    todo = set(wanted)
    times: dict[str, int] = {}
    if not todo:
        return times
    args, env = git_command(
        "log",
        "-z",
        "--format=%x01%ct",
        "--name-only",
        "--no-renames",
        "--relative",
        info.head,
        "--",
        ".",
    )
    proc = subprocess.Popen(
        args, cwd=repo.root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert proc.stdout is not None
    # With -z every record ends in NUL: a commit is '\x01<time>' followed by its paths, the
    # first of which git prefixes with '\n'. Splitting on NUL (never in a path) keeps paths
    # with newlines or other odd bytes intact.
    buffer = b""
    when = 0
    first = False
    try:
        while todo:
            chunk = proc.stdout.read1(1 << 16)
            if not chunk:
                break
            records = (buffer + chunk).split(b"\0")
            buffer = records.pop()  # possibly incomplete
            when, first = _take(records, todo, times, when, first)
        if todo and buffer:
            _take([buffer], todo, times, when, first)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.wait()
    return times


def _take(
    records: list[bytes], todo: set[str], times: dict[str, int], when: int, first: bool
) -> tuple[int, bool]:
    """Consume NUL-separated records; returns the current commit time and whether the next
    path is a commit's first (carrying git's '\n' prefix)."""
    for raw in records:
        if raw.startswith(b"\x01") and raw[1:].isdigit():
            when, first = int(raw[1:]), True
            continue
        if first and raw.startswith(b"\n"):
            raw = raw[1:]
        first = False
        if not raw:
            continue
        path = os.fsdecode(raw)
        if path in todo:
            todo.discard(path)
            times[path] = when
    return when, first


def order_keys(repo: RepoFiles, paths: Iterable[str], store: Store) -> dict[str, float]:
    """{path: sort key}; sort files by (key, path). Cached per repository and HEAD commit."""
    paths = list(paths)
    info = repo.git
    if info is None:
        return dict.fromkeys(paths, 0.0)
    now = changed_paths(repo) | repo.untracked
    tracked = [p for p in paths if p not in now]
    times: dict[str, int] = {}
    if info.head is not None and tracked:
        cache_key = f"{info.toplevel}\0{info.prefix}\0{info.head}"
        cached = store.get_history(cache_key) or {}
        missing = [p for p in tracked if p not in cached]
        if missing:
            found = last_commit_times(repo, missing)
            # Not in the reachable history (a shallow clone): oldest, and never searched again.
            cached.update({p: found.get(p, 0) for p in missing})
            store.put_history(cache_key, {p: cached[p] for p in tracked})
        times = cached
    return {p: (NOW if p in now or p not in times else float(times[p])) for p in paths}
