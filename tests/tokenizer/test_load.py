"""Loading: the rank cache (keyed by the file's hash, corruption detected), the load-time checks
that decide between the fast and the exact path, checkpoint directories, and bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from agent import tokenizer as tk
from agent.errors import ConfigError
from agent.tokenizer import V4Tokenizer, load_tokenizer, tokenizer_json_path

from .conftest import reference_for

SAMPLE = "def the_answer():\n    return 42  # 日本語 ー・カナ 🙂 <｜User｜>\r\n\tthe end\n"


def cache_files() -> list[Path]:
    root = Path(os.environ["XDG_CACHE_HOME"])
    return sorted(root.rglob("*.bin"))


def write_variant(tmp_path: Path, spec: dict, name: str = "tokenizer.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return path


def test_packaged_file_is_verified(v4_spec) -> None:
    """_VERIFIED_SHA256 lets the packaged file skip the load-time checks; they must pass on it
    (and the equivalence tests must pass) before its hash goes into that set."""
    raw = Path(tokenizer_json_path()).read_text(encoding="utf-8")
    tables, reason = tk._tables_from_spec(v4_spec)
    assert reason is None
    assert tk._check_bpe_equivalence(v4_spec, tk._fast_tokenizer(tables, "packaged")) is None
    digest = tk.hashlib.sha256(raw.encode("utf-8")).hexdigest()
    assert digest in tk._VERIFIED_SHA256, f"new tokenizer.json {digest}: verify, then add it"


def test_unverified_copy_is_checked_cached_and_fast(tmp_path, v4_spec, v4, monkeypatch) -> None:
    path = write_variant(tmp_path, v4_spec)  # same content, new bytes, so a new hash
    assert cache_files() == [] or all(tk._CACHE_MAGIC in f.read_bytes()[:20] for f in cache_files())
    before = set(cache_files())
    tok = load_tokenizer(path)
    assert tok.fast and tok.source == str(path)
    assert tok.encode(SAMPLE) == v4.encode(SAMPLE)
    written = set(cache_files()) - before
    assert len(written) == 1
    # The second load reads the cache and neither parses the JSON nor re-verifies.
    monkeypatch.setattr(tk, "_tables_from_spec", _forbidden)
    monkeypatch.setattr(tk, "_check_bpe_equivalence", _forbidden)
    again = load_tokenizer(path)
    assert again.fast and again.encode(SAMPLE) == v4.encode(SAMPLE)
    assert again.decode(again.encode(SAMPLE)) == SAMPLE


def _forbidden(*args, **kwargs):
    raise AssertionError("the cache should have been used")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_cache_is_detected_and_rebuilt(damage: str, v4) -> None:
    load_tokenizer()
    (cache,) = cache_files()
    blob = cache.read_bytes()
    if damage == "flip":
        middle = len(blob) // 2
        cache.write_bytes(blob[:middle] + bytes([blob[middle] ^ 0x40]) + blob[middle + 1 :])
    else:
        cache.write_bytes(blob[: len(blob) - 1000])
    tok = load_tokenizer()
    assert tok.fast and tok.encode(SAMPLE) == v4.encode(SAMPLE)
    assert cache.read_bytes() == blob  # rewritten whole


def test_unwritable_cache_dir_still_loads(tmp_path, monkeypatch, v4) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    tok = load_tokenizer()
    assert tok.fast and tok.encode(SAMPLE) == v4.encode(SAMPLE)


def test_changed_pre_tokenizer_takes_exact_path(tmp_path, v4_spec, v4, monkeypatch) -> None:
    spec = json.loads(json.dumps(v4_spec))
    del spec["pre_tokenizer"]["pretokenizers"][0]  # no more digit groups
    path = write_variant(tmp_path, spec)
    tok = load_tokenizer(path)
    assert not tok.fast and "pre-tokenizer" in tok.fallback_reason
    text = "x = 1234567 + 89\n" + SAMPLE
    assert tok.encode(text) == reference_for(path).encode(text, add_special_tokens=False).ids
    assert tok.encode(text) != v4.encode(text)
    # The verdict is cached too: the next load does not re-examine the file.
    monkeypatch.setattr(tk, "_tables_from_spec", _forbidden)
    again = load_tokenizer(path)
    assert not again.fast and again.fallback_reason == tok.fallback_reason


def test_ids_out_of_merge_order_take_exact_path(tmp_path, v4_spec) -> None:
    spec = json.loads(json.dumps(v4_spec))
    vocab = spec["model"]["vocab"]
    first, second = (a + b for a, b in (m.split(" ", 1) for m in spec["model"]["merges"][100:102]))
    vocab[first], vocab[second] = vocab[second], vocab[first]
    path = write_variant(tmp_path, spec)
    tok = load_tokenizer(path)
    assert not tok.fast and "merge order" in tok.fallback_reason
    assert tok.encode(SAMPLE) == reference_for(path).encode(SAMPLE, add_special_tokens=False).ids


def test_token_unreachable_by_its_merges_takes_exact_path(tmp_path, v4_spec, v4) -> None:
    """Drop the merge rule that makes "Ġthe": the token stays in the vocabulary, so tiktoken
    would still produce it, but `tokenizers` no longer can. The load-time check catches it."""
    spec = json.loads(json.dumps(v4_spec))
    spec["model"]["merges"].remove("Ġt he")
    path = write_variant(tmp_path, spec)
    tok = load_tokenizer(path)
    assert not tok.fast and "Ġthe" in tok.fallback_reason
    expected = reference_for(path).encode(SAMPLE, add_special_tokens=False).ids
    assert tok.encode(SAMPLE) == expected != v4.encode(SAMPLE)


def test_checkpoint_directory(tmp_path, v4_spec, v4) -> None:
    with_json = tmp_path / "ckpt"
    with_json.mkdir()
    shutil.copyfile(tokenizer_json_path(), with_json / "tokenizer.json")
    assert load_tokenizer(with_json).source == str(with_json / "tokenizer.json")
    without = tmp_path / "bare"
    without.mkdir()
    tok = load_tokenizer(without)
    assert tok.source == tokenizer_json_path() and tok.encode(SAMPLE) == v4.encode(SAMPLE)


def test_non_v4_tokenizer_takes_exact_path(tmp_path) -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    other = Tokenizer(WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    other.pre_tokenizer = Whitespace()
    other.add_special_tokens(["<｜User｜>"])
    path = tmp_path / "tokenizer.json"
    other.save(str(path))
    tok = load_tokenizer(path)
    assert not tok.fast and "BPE" in tok.fallback_reason
    assert tok.encode("hello there world") == [1, 0, 2]
    assert tok.special_id("<｜User｜>") == 3
    assert tok.decode([1, 2]) == other.decode([1, 2])
    with pytest.raises(ValueError, match="token id"):
        tok.decode([7])


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "cannot read"),
        ("{not json", "not a tokenizer.json"),
        ('{"a": 1}', "no model"),
        ('{"model": {"type": "BPE", "vocab": [1, 2]}}', "not a usable tokenizer.json"),
        ('{"model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": [{}]}', "usable"),
    ],
)
def test_bad_tokenizer_files_are_config_errors(tmp_path, content, message) -> None:
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_tokenizer(path)


def test_warm_up_builds_the_shared_tokenizer() -> None:
    tk.warm_up().join(timeout=60)
    assert isinstance(tk._default, V4Tokenizer) and tk.get_tokenizer() is tk._default
