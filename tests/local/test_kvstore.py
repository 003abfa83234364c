"""The disk prefix cache: longest-prefix lookup, sharing between nested prefixes, LRU bounds,
and corrupt or foreign entries detected and ignored."""

from __future__ import annotations

import json
import stat

import pytest
import torch

from agent.fileio import TEMP_SUFFIX
from agent.providers.kvstore import BLOB_BYTES, KVStore


def _state(n: int, *, dim: int = 64, seed: int = 0) -> dict:
    """A cache-like state: an append-only pool (rows = blocks so far), a fixed-size window,
    a 0-dim counter tensor, bf16 data, and plain scalars."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(4096, dim, generator=g)[: n // 4]
    return {
        "pool": pool,
        "window": torch.randn(128, dim, generator=g).to(torch.bfloat16),
        "count": torch.tensor(n),
        "flags": torch.tensor([True, False]),
        "length": n,
        "note": "ok",
    }


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        if isinstance(a[k], torch.Tensor):
            if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k]):
                return False
        elif a[k] != b[k]:
            return False
    return True


IDENT = {"model": "tiny", "weights": "abc"}


def test_longest_stored_prefix_wins(tmp_path):
    store = KVStore(tmp_path, align=128)
    ids = list(range(1000, 2000))
    s256, s768 = _state(256), _state(768, seed=1)
    assert store.save(IDENT, ids[:256], s256)
    assert store.save(IDENT, ids[:768], s768)
    hit = store.find(IDENT, ids)
    assert hit.tokens == 768 and _same(hit.state, s768)
    # a prompt that diverges at token 700 can only use the 256-token entry
    other = ids[:700] + [7] * 300
    hit = store.find(IDENT, other)
    assert hit.tokens == 256 and _same(hit.state, s256)
    assert store.find(IDENT, ids, limit=767).tokens == 256
    assert store.find(IDENT, [5] + ids[1:]) is None
    assert store.find({"model": "other"}, ids) is None


def test_misaligned_prefix_is_refused(tmp_path):
    store = KVStore(tmp_path, align=128)
    with pytest.raises(ValueError, match="multiple of 128"):
        store.save(IDENT, list(range(130)), _state(128))


def test_nested_prefixes_share_blobs(tmp_path):
    store = KVStore(tmp_path, align=128)
    ids = list(range(40_064))
    big = {"pool": torch.randn(10_000, 256)}  # ~10 MB, 10 blobs
    store.save(IDENT, ids[:38_400], {"pool": big["pool"][:9_600]})
    one = store.usage_bytes()
    store.save(IDENT, ids, {"pool": big["pool"]})
    two = store.usage_bytes()
    assert two - one < 2 * BLOB_BYTES  # only the new rows (and the old last partial blob)
    assert torch.equal(store.find(IDENT, ids).state["pool"], big["pool"])


@pytest.mark.parametrize(
    "damage", ["blob_bits", "blob_missing", "manifest_bits", "manifest_identity"]
)
def test_damaged_entries_are_ignored(tmp_path, damage):
    store = KVStore(tmp_path, align=128)
    ids = list(range(512))
    store.save(IDENT, ids[:256], _state(256))
    store.save(IDENT, ids, _state(512, seed=3))
    newest = max(
        (tmp_path / "entries").iterdir(), key=lambda p: json.loads(p.read_text())["tokens"]
    )
    manifest = json.loads(newest.read_text())
    blob_name = manifest["tensors"]["window"]["blobs"][0]
    blob = tmp_path / "blobs" / blob_name[:2] / blob_name
    if damage == "blob_bits":
        data = bytearray(blob.read_bytes())
        data[10] ^= 0x40
        blob.write_bytes(bytes(data))
    elif damage == "blob_missing":
        blob.unlink()
    elif damage == "manifest_bits":
        newest.write_text(newest.read_text().replace('"tokens": 512', '"tokens": 513'))
    else:
        manifest["identity"] = "0" * 64
        newest.write_text(json.dumps(manifest))
    hit = store.find(IDENT, ids)
    assert hit.tokens == 256  # falls back to the intact shorter prefix
    assert store.problems and "ignored" in store.problems[0]
    assert not newest.exists()  # the bad entry is removed


def test_garbage_files_do_not_break_lookup(tmp_path):
    store = KVStore(tmp_path, align=128)
    ids = list(range(256))
    store.save(IDENT, ids, _state(256))
    (tmp_path / "entries" / "junk.json").write_text("{not json")
    for p in (tmp_path / "entries").iterdir():
        if p.name != "junk.json":
            p.write_bytes(b"\x00\xff" * 10)
    assert store.find(IDENT, ids) is None
    store.evict()  # tolerates the junk too


def test_writes_in_flight_are_not_counted_or_evicted_and_files_are_private(tmp_path):
    store = KVStore(tmp_path, align=128, max_bytes=1 << 20)
    assert store.save(IDENT, list(range(128)), {"x": torch.zeros(1000)})
    stored = store.usage_bytes()
    # Another process between writing a blob and renaming it into place.
    in_flight = tmp_path / "blobs" / "ab" / f".ab12.x{TEMP_SUFFIX}"
    in_flight.parent.mkdir(parents=True, exist_ok=True)
    in_flight.write_bytes(b"\0" * 4096)
    store.evict()
    assert in_flight.exists() and store.usage_bytes() == stored
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != in_flight]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}


def test_lru_eviction_keeps_the_bound(tmp_path):
    store = KVStore(tmp_path, align=128, max_bytes=3 * 1_100_000)
    entries = []
    for i in range(5):
        ids = [i] * 128
        store.save(IDENT, ids, {"x": torch.full((1_000_000,), i, dtype=torch.uint8)})
        entries.append(ids)
        if i == 2:
            assert store.find(IDENT, entries[0]) is not None  # touch: 0 is now the most recent
    assert store.usage_bytes() <= store.max_bytes
    kept = [i for i, ids in enumerate(entries) if store.find(IDENT, ids) is not None]
    assert kept == [0, 3, 4]


def test_entry_larger_than_the_bound_is_not_kept(tmp_path):
    store = KVStore(tmp_path, align=128, max_bytes=1000)
    assert not store.save(IDENT, list(range(128)), {"x": torch.zeros(10_000)})
    assert store.usage_bytes() == 0


def test_a_disk_that_refuses_writes_is_not_an_error(tmp_path):
    (tmp_path / "blobs").write_text("a file where the blob directory should be")
    store = KVStore(tmp_path, align=128)
    assert store.save(IDENT, list(range(128)), _state(128)) is False
    assert "could not store" in store.problems[0]
    assert store.find(IDENT, list(range(128))) is None


def test_saving_and_loading_never_hold_a_second_copy_of_the_state(tmp_path):
    """A V4-Flash prefix state is GiBs: blobs are hashed and written from the tensor's own memory
    and read back straight into the new tensor, so no bytes buffer as large as the state is ever
    allocated (tracemalloc sees every Python-level buffer)."""
    import tracemalloc

    state = {"pool": torch.randn((8 << 20) // 4 // 256, 256), "length": 1}  # 8 MiB
    store = KVStore(tmp_path, align=128)
    ids = list(range(128))
    tracemalloc.start()
    try:
        assert store.save(IDENT, ids, state)
        _, saving = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        hit = store.find(IDENT, ids)
        _, loading = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert torch.equal(hit.state["pool"], state["pool"])
    assert saving < 2 * BLOB_BYTES and loading < 2 * BLOB_BYTES, (saving, loading)


def test_a_blob_of_the_wrong_size_is_refused(tmp_path):
    store = KVStore(tmp_path, align=128)
    ids = list(range(128))
    store.save(IDENT, ids, {"x": torch.arange(64, dtype=torch.int64)})
    [entry] = (tmp_path / "entries").iterdir()
    manifest = json.loads(entry.read_text())
    manifest["tensors"]["x"]["shape"] = [32]  # the blob now holds more than the shape
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    from agent.providers import kvstore

    manifest["checksum"] = kvstore._digest(kvstore._canonical(body))
    entry.write_text(json.dumps(manifest))
    assert store.find(IDENT, ids) is None
    assert "more bytes" in store.problems[-1]
