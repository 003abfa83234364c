"""A disk cache of engine KV states for prompt prefixes (the packed repository), across runs.

An entry is the engine's cache state after the first N prompt tokens, N a multiple of the
compression block (lcm of the layers' ratios, so no compressor holds a half-filled block),
keyed by sha256(model identity, token ids[:N]). A later run looks up the longest stored prefix
of its prompt, loads it and prefills only the rest.

Storage is content-addressed so nested prefixes share their bytes: every tensor is cut into
row blocks along its first axis; each block is a blob named by its sha256 (which is also its
checksum); an entry is a small JSON manifest listing its blobs. The compressed pools only grow,
so the state after 60K tokens and the state after 50K tokens share all their full blocks, and
zero-filled preallocated buffers collapse into one blob.

Every entry names its identity and token hash; a manifest or blob that fails its checksum, is
missing, or belongs to another model is ignored (and removed). Disk use is bounded: least
recently used entries go first, then blobs no entry references.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agent.fileio import TEMP_SUFFIX, atomic_write

FORMAT = "v4code-kv/1"
BLOB_BYTES = 1 << 20  # target blob size: big enough for few files, small enough to share
DEFAULT_MAX_BYTES = 8 << 30
# The states encode the user's code: files for the user alone. Written without fsync
# (durable=False): every manifest and blob is checksummed on load, a torn one is ignored.
PRIVATE = 0o600

_DTYPES = {
    str(d): d
    for d in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.float8_e4m3fn,
        torch.float8_e5m2,
    )
}


@dataclass
class Hit:
    tokens: int  # the entry holds the state after this many prompt tokens
    state: dict[str, Any]


def identity_digest(identity: Any) -> str:
    """A stable digest of whatever the engine calls its identity (str, dict, ...)."""
    text = (
        identity if isinstance(identity, str) else json.dumps(identity, sort_keys=True, default=str)
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def prefix_keys(
    identity: str, ids: Sequence[int], align: int, limit: int
) -> Iterator[tuple[int, str]]:
    """(n, key) for every n = align, 2*align, ... <= limit: one pass over the ids."""
    h = hashlib.sha256(f"{FORMAT}\0{identity}\0".encode())
    for n in range(align, min(limit, len(ids)) + 1, align):
        h.update(_ids_bytes(ids[n - align : n]))
        yield n, h.copy().hexdigest()


def _ids_bytes(ids: Sequence[int]) -> bytes:
    return array("q", ids).tobytes()


class KVStore:
    def __init__(self, root: Path, *, align: int, max_bytes: int = DEFAULT_MAX_BYTES):
        if align < 1:
            raise ValueError("align must be >= 1")
        self.root = Path(root)
        self.align = align
        self.max_bytes = max_bytes
        self.entries = self.root / "entries"
        self.blobs = self.root / "blobs"
        self.problems: list[str] = []  # what was ignored and why (for --verbose / tests)

    # -- lookup ------------------------------------------------------------------------------

    def find(self, identity: Any, ids: Sequence[int], limit: int | None = None) -> Hit | None:
        """The longest stored prefix of `ids` (at most `limit` tokens) for this identity."""
        ident = identity_digest(identity)
        limit = len(ids) if limit is None else min(limit, len(ids))
        try:
            names = {p.name for p in self.entries.iterdir()}
        except FileNotFoundError:
            return None
        keys = [
            (n, k) for n, k in prefix_keys(ident, ids, self.align, limit) if f"{k}.json" in names
        ]
        for n, key in reversed(keys):
            state = self._load(key, ident, n)
            if state is not None:
                return Hit(n, state)
        return None

    def has(self, identity: Any, ids: Sequence[int]) -> bool:
        key = self._key(identity, ids)
        return key is not None and (self.entries / f"{key}.json").exists()

    def _key(self, identity: Any, ids: Sequence[int]) -> str | None:
        if not ids or len(ids) % self.align:
            return None
        keys = list(prefix_keys(identity_digest(identity), ids, self.align, len(ids)))
        return keys[-1][1]

    def _load(self, key: str, ident: str, n: int) -> dict[str, Any] | None:
        path = self.entries / f"{key}.json"
        try:
            raw = path.read_bytes()
            manifest = json.loads(raw)
            body = {k: v for k, v in manifest.items() if k != "checksum"}
            if manifest.get("checksum") != _digest(_canonical(body)):
                return self._reject(path, "manifest checksum mismatch")
            if (
                manifest.get("format") != FORMAT
                or manifest.get("identity") != ident
                or manifest.get("tokens") != n
            ):
                return self._reject(path, "manifest is for another model or prefix")
            state: dict[str, Any] = dict(manifest["scalars"])
            for name, spec in manifest["tensors"].items():
                state[name] = self._read_tensor(spec)
        except FileNotFoundError:
            return self._reject(path, "a blob is missing")
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            return self._reject(path, f"unreadable entry ({type(exc).__name__}: {exc})")
        _touch(path)  # least recently *used*
        return state

    def _read_tensor(self, spec: dict[str, Any]) -> torch.Tensor:
        # Blobs are read straight into the tensor's memory: a multi-GiB state is never held
        # twice (no bytes buffer, no copy into the tensor).
        dtype = _DTYPES[spec["dtype"]]
        shape = tuple(int(s) for s in spec["shape"])
        out = torch.empty(shape, dtype=dtype)
        buffer = _byte_view(out)
        pos = 0
        for blob in spec["blobs"]:
            with open(self.blobs / blob[:2] / blob, "rb") as f:
                n = f.readinto(buffer[pos:])
                if f.read(1):
                    raise ValueError(f"tensor has more bytes than its shape {list(shape)}")
            if _digest(buffer[pos : pos + n]) != blob:
                raise ValueError(f"blob {blob[:12]} checksum mismatch")
            pos += n
        if pos != len(buffer):
            raise ValueError(f"tensor has {pos} bytes, expected {len(buffer)}")
        return out

    def _reject(self, path: Path, why: str) -> None:
        self.problems.append(f"{path.name}: {why}; ignored")
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    # -- saving ------------------------------------------------------------------------------

    def save(self, identity: Any, ids: Sequence[int], state: dict[str, Any]) -> bool:
        """Store the state after `ids` (a multiple of `align` tokens). False if not stored
        (too big for the bound, or the disk refused: a cache never fails the caller)."""
        key = self._key(identity, ids)
        if key is None:
            raise ValueError(f"a stored prefix must be a positive multiple of {self.align} tokens")
        path = self.entries / f"{key}.json"
        if path.exists():
            _touch(path)
            return True
        try:
            tensors: dict[str, Any] = {}
            scalars: dict[str, Any] = {}
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[name] = self._write_tensor(value)
                else:
                    json.dumps(value)  # only JSON values besides tensors; fail loudly otherwise
                    scalars[name] = value
            body = {
                "format": FORMAT,
                "identity": identity_digest(identity),
                "tokens": len(ids),
                "created": time.time(),
                "tensors": tensors,
                "scalars": scalars,
            }
            manifest = dict(body, checksum=_digest(_canonical(body)))
            atomic_write(path, json.dumps(manifest).encode(), mode=PRIVATE, durable=False)
            _touch(path)
            self.evict()
        except OSError as exc:
            self.problems.append(f"could not store a prefix of {len(ids)} tokens: {exc}")
            return False
        return path.exists()

    def _write_tensor(self, t: torch.Tensor) -> dict[str, Any]:
        t = t.detach().to("cpu").contiguous()
        data = _byte_view(t)  # no copy: blobs are hashed and written from the tensor's memory
        row = max(1, t.nbytes // max(1, t.shape[0])) if t.dim() else max(1, t.nbytes)
        # whole rows per blob: rows appended later (a longer prefix) leave the old blobs intact
        step = max(1, BLOB_BYTES // row) * row
        blobs = []
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            name = _digest(chunk)
            target = self.blobs / name[:2] / name
            if not target.exists():
                atomic_write(target, chunk, mode=PRIVATE, durable=False)
            blobs.append(name)
        return {"dtype": str(t.dtype), "shape": list(t.shape), "blobs": blobs}

    # -- bounds ------------------------------------------------------------------------------

    def usage_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._files(self.entries) + self._files(self.blobs))

    def evict(self) -> None:
        """Drop least recently used entries until the store fits `max_bytes`, then unused blobs."""
        entries = sorted(self._files(self.entries), key=_mtime)
        refs: dict[Path, set[str]] = {}
        for path in entries:
            try:
                manifest = json.loads(path.read_bytes())
                refs[path] = {b for spec in manifest["tensors"].values() for b in spec["blobs"]}
            except (OSError, ValueError, KeyError, TypeError):
                refs[path] = set()
        blobs = self._files(self.blobs)
        blob_sizes = {p.name: p.stat().st_size for p in blobs}

        def total() -> int:
            live = set().union(*refs.values()) if refs else set()
            size = sum(blob_sizes.get(b, 0) for b in live)
            return size + sum(_size(p) for p in refs)

        while refs and total() > self.max_bytes:
            oldest = next(iter(refs))
            del refs[oldest]
            with contextlib.suppress(OSError):
                oldest.unlink()
        # An unreferenced blob goes too. (If another process is between writing its blobs and
        # its manifest, its entry fails the blob check when loaded and is ignored: no harm.)
        live = set().union(*refs.values()) if refs else set()
        for blob in blobs:
            if blob.name not in live:
                with contextlib.suppress(OSError):
                    blob.unlink()

    @staticmethod
    def _files(root: Path) -> list[Path]:
        if not root.exists():
            return []
        return [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(TEMP_SUFFIX)]


def _byte_view(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, shared with it (writable)."""
    if not t.numel():
        return memoryview(bytearray())
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _touch(path: Path) -> None:
    # An explicit fine-grained stamp: the kernel's own mtime ticks coarsely (milliseconds), and
    # entries written in the same tick would tie in the LRU order.
    now = time.time_ns()
    with contextlib.suppress(OSError):
        os.utime(path, ns=(now, now))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
