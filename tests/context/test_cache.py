"""The on-disk cache under contention and damage: a held write lock, an unusable cache path,
rows left by another engine version."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from agent.context import pack_repository
from agent.context.cache import ENGINE_VERSION, Store, default_path

LOCK_HOLDER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT OR REPLACE INTO counts (key, n) VALUES (x'00', 1)")
print("locked", flush=True)
time.sleep(120)
"""


def test_a_held_write_lock_costs_one_short_wait_and_changes_nothing(stdlib_repo):
    root = stdlib_repo(["json"])
    uncached = pack_repository(root, budget=30_000, store=Store(None))
    Store.default().close()  # creates the database, empty: the pack below has work to save
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(default_path())],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.perf_counter()
        pack = pack_repository(root, budget=30_000)  # work to save, and the lock is taken
        elapsed = time.perf_counter() - started
    finally:
        holder.kill()
        holder.wait()
    assert pack.text == uncached.text and pack.stats["cache"] is True
    # One wait for the lock per run (2 s), not one per table written: that was 4 x 5 s.
    assert elapsed < 12, elapsed


def test_an_unusable_cache_path_degrades_to_no_cache(stdlib_repo, tmp_path: Path):
    root = stdlib_repo(["json"])
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be\n")
    store = Store(blocker / "context.sqlite3")
    pack = pack_repository(root, budget=20_000, store=store)
    assert pack.stats["cache"] is False
    assert pack.text == pack_repository(root, budget=20_000, store=Store(None)).text


def test_rows_of_another_engine_version_are_dropped(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE files (key BLOB PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID")
        db.executemany("INSERT INTO files VALUES (?, ?)", [(bytes([i]), "{}") for i in range(50)])
        db.execute("PRAGMA user_version = 1")
    store = Store(path)
    assert store.enabled
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM files").fetchone()[0] == 0
        assert db.execute("PRAGMA user_version").fetchone()[0] == int(ENGINE_VERSION)
