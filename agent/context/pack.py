"""Pack a repository into one prompt within a token budget (`pack_repository`).

Pipeline: discover (RepoFiles) -> read, hash, decode and screen each file -> fit the budget
-> order by git history -> render. Token counts are exact V4 counts, additive by construction
(see `agent.context.render`), and cached per content hash, so a warm run reads and hashes every
file but tokenizes nothing that did not change.

Fitting, when everything does not fit whole:
  1. files are ranked: tier (source > tests > config > docs > data), then centrality within the
     tier (tree-sitter imports/definitions, `agent.context.rank`), then path;
  2. the highest-ranked files are kept whole until the whole files would take more than
     (1 - SKELETON_SHARE) of the room left after the header and a listed entry for every file;
  3. the following files become skeletons while they fit; the rest are listed (path and size);
  4. when every remaining file fitted as a skeleton, skeletons are promoted back to whole files
     from the top while they fit.
So modes only degrade down the ranking (whole, then skeleton, then listed), the most central
files stay whole, and the total never exceeds the budget. Only tiers the fitting reaches are
parsed; only files whose content enters the pack are scanned for secrets (a file found to hold
one is excluded and the pack is fitted again).
"""

from __future__ import annotations

import codecs
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.context import rules
from agent.context.cache import TOKENIZER_ID, Store, content_key, text_key
from agent.context.discovery import DEFAULT_MAX_FILE_BYTES, Candidate, Excluded, RepoFiles
from agent.context.render import Renderer, normalize, renderer, safe_split
from agent.errors import UsageError

SKELETON_SHARE = 0.5  # at most this share of the free room is planned for skeletons
MINIFIED_MIN_BYTES = 4096
MINIFIED_AVG_LINE = 500  # average characters per line above which a file counts as minified
_GENERATED_MARKERS = ("@generated", "DO NOT EDIT")
_CODING_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")
_BATCH_TOKENS = 262_144  # estimated tokens tokenized per batch while fitting

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class PackedFile:
    path: str
    tokens: int  # tokens of this file's block in the pack (delimiters included)
    mode: str  # "full" | "skeleton" | "listed"
    tier: str
    language: str
    bytes: int


@dataclass
class Pack:
    root: Path
    name: str
    fmt: str
    budget: int
    text: str
    total_tokens: int
    header_tokens: int
    files: list[PackedFile]
    excluded: list[Excluded]
    tokenizer: str
    elapsed_s: float
    cost_cold: float
    cost_cached: float
    model: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        """The JSON object of `v4code context --output-format json`."""
        return {
            "root": str(self.root),
            "budget": self.budget,
            "total_tokens": self.total_tokens,
            "tokenizer": self.tokenizer,
            "elapsed_s": round(self.elapsed_s, 3),
            "files": [
                {
                    "path": _json_safe(f.path),
                    "tokens": f.tokens,
                    "mode": f.mode,
                    "tier": f.tier,
                    "language": f.language,
                    "bytes": f.bytes,
                }
                for f in self.files
            ],
            "excluded": [{"path": _json_safe(e.path), "reason": e.reason} for e in self.excluded],
            "cost_usd": {"cold": round(self.cost_cold, 6), "cached": round(self.cost_cached, 6)},
            "format": self.fmt,
            "model": self.model,
            "header_tokens": self.header_tokens,
            "counts": self.counts(),
            "stats": self.stats,
        }

    def counts(self) -> dict[str, dict[str, int]]:
        """{tier: {mode: files}} plus {'total': {mode: files}}."""
        out: dict[str, dict[str, int]] = {}
        for f in self.files:
            for bucket in (f.tier, "total"):
                modes = out.setdefault(bucket, {"full": 0, "skeleton": 0, "listed": 0})
                modes[f.mode] += 1
        return out


def _json_safe(path: str) -> str:
    """Paths that are not valid UTF-8 carry surrogate escapes; JSON gets U+FFFD instead."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# -- reading and screening ---------------------------------------------------------------------


def decode(data: bytes) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason). UTF-8 (a BOM is dropped), UTF-16/32 with a BOM, or the
    codec named by a coding cookie in the first two lines; anything else is not text."""
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(codec), None
            except UnicodeDecodeError:
                return None, "binary or undecodable text"
    if b"\0" in data:
        return None, "binary (contains NUL bytes)"
    try:
        return data.decode("utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"), None
    except UnicodeDecodeError:
        pass
    for line in data.split(b"\n", 2)[:2]:
        match = _CODING_COOKIE.match(line)
        if match:
            try:
                return data.decode(match.group(1).decode("ascii")), None
            except (LookupError, UnicodeDecodeError, ValueError):
                break
    return None, "binary or not UTF-8 text (undecodable)"


def content_reason(text: str, path: str) -> str | None:
    """Minified or generated content (the name-based rules ran in discovery)."""
    if len(text) >= MINIFIED_MIN_BYTES:
        average = len(text) / (text.count("\n") + 1)
        if average >= MINIFIED_AVG_LINE:
            return f"minified (average line {int(average):,} characters)"
    head = text[:2048]
    for marker in _GENERATED_MARKERS:
        if marker in head:
            return f"generated file (marked {marker!r})"
    if rules.token_config_file(path) and rules.has_auth_token_line(text):
        return "secret: auth token in a package-manager config file"
    return None


@dataclass(eq=False)
class _File:
    path: str
    size: int
    key: bytes
    text: str  # normalised content
    language: str
    tier: str
    included: bool
    record: dict[str, Any]
    dirty: bool = False
    full: int | None = None  # block tokens in each mode, once known
    skeleton: int | None = None
    listed: int | None = None
    low: int | None = None  # tokens in the lower band (see _Packer.ensure_low)
    low_mode: str = "listed"
    score: tuple[int, int] = (0, 0)

    @property
    def nbytes(self) -> int:
        return self.size + 1

    def set(self, **values: Any) -> None:
        self.record.update(values)
        self.dirty = True


# -- counting ----------------------------------------------------------------------------------


class _Counter:
    """Exact token counts through the cache; the tokenizer is loaded only on a miss."""

    def __init__(self, store: Store):
        self.store = store
        self.memo: dict[bytes, int] = {}
        self.new: dict[bytes, int] = {}
        self.tokenized_tokens = 0
        self.seconds = 0.0  # spent loading the tokenizer and tokenizing
        self._tok: Any = None

    @property
    def tok(self) -> Any:
        if self._tok is None:
            started = time.perf_counter()
            from agent.tokenizer import get_tokenizer

            self._tok = get_tokenizer()
            self.seconds += time.perf_counter() - started
        return self._tok

    def count_texts(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        started = time.perf_counter()
        counts = self.tok.count_many(list(texts))
        self.tokenized_tokens += sum(counts)
        self.seconds += time.perf_counter() - started
        return counts

    def small(self, texts: Sequence[str]) -> list[int]:
        """Counts of short strings (delimiters, headers), cached by their hash."""
        keys = [text_key(t) for t in texts]
        missing = [k for k in set(keys) if k not in self.memo]
        if missing:
            self.memo.update(self.store.get_counts(missing))
        todo: dict[bytes, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in self.memo:
                todo[k] = t
        if todo:
            counted = self.count_texts(list(todo.values()))
            for k, n in zip(todo, counted, strict=True):
                self.memo[k] = n
                self.new[k] = n
        return [self.memo[k] for k in keys]


# -- the packer --------------------------------------------------------------------------------


class _Packer:
    def __init__(
        self,
        root: Path,
        fmt: str,
        budget: int,
        store: Store,
        progress: Progress | None,
        untracked: frozenset[str] = frozenset(),
    ):
        self.root = root
        # Untracked files (new work) stay out of the tree and appear only as blocks at the end,
        # so creating a file mid-session does not change the header, i.e. the cached prefix.
        self.untracked = untracked
        self.name = root.name or str(root)
        self.r: Renderer = renderer(fmt)
        self.budget = budget
        self.store = store
        self.counter = _Counter(store)
        self.progress = progress
        self.ranked_tiers: list[str] = []
        self.skeletons: dict[bytes, str | None] = {}
        self.stats: dict[str, Any] = {
            "tokenized_tokens": 0,
            "import_files": 0,
            "skeleton_files": 0,
            "scanned_files": 0,
        }
        self.timings: dict[str, float] = {}

    def _timed(self, phase: str, started: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - started

    def _progress(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    # -- per-file token counts -----------------------------------------------------------------

    def ensure_full(self, files: Sequence[_File]) -> None:
        todo = [f for f in files if f.full is None]
        if not todo:
            return
        fresh = [f for f in todo if "t" not in f.record]
        if fresh:
            tails = []
            for f in fresh:
                q = safe_split(f.text)
                f.record["q"] = q
                tails.append(f.text[q:])
            counts = self.counter.count_texts(tails)
            for f, n in zip(fresh, counts, strict=True):
                f.set(t=n)
        pieces: list[str] = []
        for f in todo:
            q = f.record["q"]
            pieces.append(self.r.open(f.path, f.language, "full", f.text) + f.text[:q])
            pieces.append(self.r.close(f.text))
        counts = self.counter.small(pieces)
        for i, f in enumerate(todo):
            f.full = counts[2 * i] + f.record["t"] + counts[2 * i + 1]

    def ensure_listed(self, files: Sequence[_File]) -> None:
        todo = [f for f in files if f.listed is None]
        counts = self.counter.small([self.r.listed(f.path, f.size) for f in todo])
        for f, n in zip(todo, counts, strict=True):
            f.listed = n

    def ensure_low(self, files: Sequence[_File]) -> None:
        """Each file's cost in the lower band: its skeleton block; the whole file when a
        skeleton would be no shorter; a listed entry when it has no skeleton."""
        todo = [f for f in files if f.low is None]
        if not todo:
            return
        unloaded = [f for f in todo if f.record.get("sk") == 1 and f.key not in self.skeletons]
        if unloaded:
            self.skeletons.update(self.store.get_skeletons(f.key for f in unloaded))
            for f in unloaded:
                if f.key not in self.skeletons:  # the record outlived its text (interrupted write)
                    f.record.pop("sk", None)
                    f.record.pop("st", None)
        self.make_skeletons([f for f in todo if "sk" not in f.record])
        fresh = [f for f in todo if f.record["sk"] == 1 and "st" not in f.record]
        if fresh:
            texts = [self.skeletons[f.key] or "" for f in fresh]
            for f, n in zip(fresh, self.counter.count_texts(texts), strict=True):
                f.set(st=n)
        self.ensure_full([f for f in todo if f.record["sk"] == 2])
        with_skeleton = [f for f in todo if f.record["sk"] == 1]
        pieces: list[str] = []
        for f in with_skeleton:
            text = self.skeletons[f.key] or ""
            pieces.append(self.r.open(f.path, f.language, "skeleton", text))
            pieces.append(self.r.close(text))
        counts = self.counter.small(pieces)
        for i, f in enumerate(with_skeleton):
            f.skeleton = counts[2 * i] + f.record["st"] + counts[2 * i + 1]
        for f in todo:
            kind = f.record["sk"]
            f.low_mode = "skeleton" if kind == 1 else "full" if kind == 2 else "listed"
            f.low = f.skeleton if kind == 1 else f.full if kind == 2 else f.listed

    def make_skeletons(self, files: Sequence[_File]) -> None:
        from agent.context import skeleton as sk

        todo = [f for f in files if f.language in sk.SUPPORTED]
        for f in files:
            if f.language not in sk.SUPPORTED:
                f.set(sk=0)
        if not todo:
            return
        self._progress("skeletons", 0, len(todo))
        started = time.perf_counter()
        texts = sk.run_many(sk.skeleton_of, [(f.language, f.text) for f in todo])
        self._timed("skeletons", started)
        self.stats["skeleton_files"] += len(todo)
        for f, text in zip(todo, texts, strict=True):
            if text is not None and len(text) >= len(f.text):
                f.set(sk=2)  # no shorter than the file: the lower band keeps the file whole
                continue
            self.skeletons[f.key] = text
            f.set(sk=1 if text else 0)

    # -- ranking ---------------------------------------------------------------------------------

    def find_imports(self, files: Sequence[_File]) -> None:
        from agent.context import skeleton as sk

        todo = [f for f in files if "imp" not in f.record]
        if not todo:
            return
        self._progress("imports", 0, len(todo))
        started = time.perf_counter()
        found = sk.run_many(sk.imports_of, [(f.language, f.text) for f in todo])
        self._timed("imports", started)
        self.stats["import_files"] += len(todo)
        for f, imports in zip(todo, found, strict=True):
            f.set(imp=imports)

    def ranked(self, files: Sequence[_File]) -> Iterator[list[_File]]:
        """Each tier's files in rank order; a tier's imports are parsed only when it is reached."""
        from agent.context.rank import centrality

        by_tier: dict[str, list[_File]] = {t: [] for t in rules.TIERS}
        for f in files:
            by_tier[f.tier].append(f)
        universe = {f.path: f.language for f in files}
        importers: dict[str, list[str]] = {}
        for tier in rules.TIERS:
            members = by_tier[tier]
            if not members:
                continue
            self.find_imports(members)
            self.ranked_tiers.append(tier)
            for f in members:
                importers[f.path] = f.record["imp"]
            # Imports from the tiers reached so far only: the ranking must not depend on what
            # happens to be cached, or the same tree could pack differently.
            scores = centrality(universe, importers)
            for f in members:
                f.score = scores[f.path].key()
            yield sorted(members, key=lambda f: (f.score, f.path))

    # -- fitting ---------------------------------------------------------------------------------

    def fit(self, files: list[_File]) -> tuple[dict[_File, str], str, int, int, list[_File]]:
        """({file: mode}, header, header tokens, fixed tokens, files without room even to be listed)."""
        paths = sorted(f.path for f in files if f.path not in self.untracked)
        header = self.r.header(self.name, paths)
        header_tokens, footer_tokens = self.counter.small([header, self.r.footer()])
        fixed = header_tokens + footer_tokens
        if fixed > self.budget:
            raise UsageError(
                f"the budget ({self.budget:,} tokens) is smaller than the pack's header alone "
                f"({fixed:,} tokens for the tree of {len(files):,} files)",
                hint="raise --budget, or narrow the repository with .v4codeignore",
            )
        self.ensure_listed(files)
        floor = sum(f.listed or 0 for f in files)
        avail = self.budget - fixed - floor
        cheap_order = sorted(files, key=lambda f: (rules.TIER_RANK[f.tier], f.path))
        if avail < 0:  # not even a listed entry for every file: list in tier order, drop the rest
            modes: dict[_File, str] = {}
            room = self.budget - fixed
            dropped: list[_File] = []
            for f in cheap_order:
                if not dropped and (f.listed or 0) <= room:
                    modes[f] = "listed"
                    room -= f.listed or 0
                else:
                    dropped.append(f)
            return modes, header, header_tokens, fixed, dropped

        # 1. Does everything fit whole? A token is at least one byte, so sizes bound the count;
        # when even 2.5 bytes per token (dense code runs 3.5-4.5) would not fit, go straight to
        # ranking, which reaches the same answer without tokenizing in the wrong order.
        size = sum(f.nbytes + 200 + len(f.path) for f in files)
        if size <= avail + floor:
            self.ensure_full(files)
        elif size / 2.5 <= avail + floor:
            gain = 0
            for batch in _batches(cheap_order):
                self.ensure_full(batch)
                gain += sum((f.full or 0) - (f.listed or 0) for f in batch)
                if gain > avail:
                    break
        if (
            all(f.full is not None for f in files)
            and sum((f.full or 0) - (f.listed or 0) for f in files) <= avail
        ):
            return {f: "full" for f in files}, header, header_tokens, fixed, []

        # 2-4. Rank; whole files first, then the lower band (skeletons), then listed entries.
        # Tiers are ranked (their imports parsed) only when the fitting reaches them.
        tiers = self.ranked(files)
        order: list[_File] = []
        room = _Room(avail - int(avail * SKELETON_SHARE))
        k0 = None
        for tier in tiers:
            offset = len(order)
            order.extend(tier)
            for i, f in enumerate(_prefetched(tier, room, _full_estimate, self.ensure_full)):
                gain = (f.full or 0) - (f.listed or 0)
                if gain > room.left:
                    k0 = offset + i
                    break
                room.left -= gain
            if k0 is not None:
                break
        k0 = len(order) if k0 is None else k0
        used = avail - int(avail * SKELETON_SHARE) - room.left
        modes = {f: "listed" for f in files}
        for f in order[:k0]:
            modes[f] = "full"
        ranked = set(order)
        unranked = [f for f in files if f not in ranked]
        promoted = None
        if _fits_estimate(order[k0:] + unranked, avail - used):
            order.extend(f for tier in tiers for f in tier)
            promoted = self.promote(order[k0:], avail - used)
        if promoted is not None:
            for i, f in enumerate(order[k0:]):
                modes[f] = "full" if i < promoted else f.low_mode
        else:  # the lower band does not hold every file: fill it top-down
            room = _Room(avail - used)

            def rest() -> Iterator[list[_File]]:
                yield order[k0:]
                yield from tiers

            done = False
            for tier in rest():
                for f in _prefetched(tier, room, _low_estimate, self.ensure_low):
                    gain = (f.low or 0) - (f.listed or 0)
                    if gain > room.left:
                        done = True
                        break
                    modes[f] = f.low_mode
                    room.left -= gain
                if done:
                    break
        return modes, header, header_tokens, fixed, []

    def promote(self, tail: list[_File], room: int) -> int | None:
        """When every file of `tail` fits in its lower-band form within `room`: how many of its
        first files can be whole instead (the largest k with whole(tail[:k]) + low(tail[k:]) <=
        room; the cost only grows with k). None when they do not all fit.

        Only the lower-band forms of files that stay below k are needed, so they are computed
        bottom-up from an estimate of k, widening the window until it is confirmed."""
        n = len(tail)
        full_gain = [_full_estimate(f) - (f.listed or 0) for f in tail]
        low_gain = [_low_estimate(f) - (f.listed or 0) for f in tail]
        guess, cost = 0, sum(low_gain)
        while guess < n and cost + full_gain[guess] - low_gain[guess] <= room:
            cost += full_gain[guess] - low_gain[guess]
            guess += 1
        lo = max(0, guess - max(8, guess // 4))
        while True:
            self.ensure_low(tail[lo:])
            self.ensure_full(tail[:lo])
            whole = sum((f.full or 0) - (f.listed or 0) for f in tail[:lo])
            low = sum((f.low or 0) - (f.listed or 0) for f in tail[lo:])
            if whole + low <= room:
                break
            if lo == 0:
                return None
            lo = max(0, lo - max(8, (guess - lo) * 2, lo // 2))
        k = lo
        left = _Room(room - whole - low)
        for f in _prefetched(tail[lo:], left, _full_estimate, self.ensure_full):
            extra = (f.full or 0) - (f.low or 0)
            if extra > left.left:
                break
            left.left -= extra
            k += 1
        return k

    # -- secrets ---------------------------------------------------------------------------------

    def secret_files(self, files: Sequence[_File]) -> list[tuple[_File, str]]:
        from agent.context.secrets import scan

        found: list[tuple[_File, str]] = []
        started = time.perf_counter()
        for f in files:
            if f.included:
                continue
            if "sec" not in f.record:
                f.set(sec=scan(f.text) or "")
                self.stats["scanned_files"] += 1
            if f.record["sec"]:
                found.append((f, f.record["sec"]))
        self._timed("secrets", started)
        return found

    def run(
        self, files: list[_File], excluded: list[Excluded], order_of: Callable[[_File], Any]
    ) -> tuple[str, list[PackedFile], int, int]:
        while True:
            started = time.perf_counter()
            modes, header, header_tokens, fixed, dropped = self.fit(files)
            self._timed("fit", started)
            visible = [f for f, m in modes.items() if m in ("full", "skeleton")]
            secrets = self.secret_files(visible)
            if not secrets:
                break
            bad = {id(f) for f, _ in secrets}
            for f, rule in secrets:
                excluded.append(Excluded(f.path, f"secret: {rule} (by content)"))
            files = [f for f in files if id(f) not in bad]
        for f in dropped:
            excluded.append(Excluded(f.path, "no room in the budget even for a listed entry"))

        started = time.perf_counter()
        parts = [header]
        packed: list[PackedFile] = []
        total = fixed
        for f in sorted(modes, key=order_of):
            mode = modes[f]
            if mode == "full":
                block = (
                    self.r.open(f.path, f.language, "full", f.text) + f.text + self.r.close(f.text)
                )
                tokens = f.full or 0
            elif mode == "skeleton":
                text = self.skeletons.get(f.key) or ""
                block = (
                    self.r.open(f.path, f.language, "skeleton", text) + text + self.r.close(text)
                )
                tokens = f.skeleton or 0
            else:
                block = self.r.listed(f.path, f.size)
                tokens = f.listed or 0
            parts.append(block)
            packed.append(PackedFile(f.path, tokens, mode, f.tier, f.language, f.size))
            total += tokens
        parts.append(self.r.footer())
        if total > self.budget:  # the fitting arithmetic guarantees this; never ship a lie
            raise AssertionError(f"packed {total} tokens into a budget of {self.budget}")
        text = "".join(parts)
        self._timed("render", started)
        self.stats["tokenized_tokens"] = self.counter.tokenized_tokens
        self.timings["tokenize"] = self.counter.seconds
        return text, packed, total, header_tokens

    def save(self, files: Sequence[_File]) -> None:
        for f in files:
            if not f.record:  # remember the content was seen, so the next run knows it is warm
                f.set(seen=1)
        dirty = {f.key: f.record for f in files if f.dirty}
        self.store.put_files(dirty)
        fresh = {
            f.key: self.skeletons[f.key] for f in files if f.dirty and self.skeletons.get(f.key)
        }
        self.store.put_skeletons(fresh)
        self.store.put_counts(self.counter.new)


# Estimates size the prefetch windows. They look at the content only (never at what happens to
# be cached), so a warm run prefetches exactly what the cold run computed: no new work.
def _full_estimate(f: _File) -> int:
    return f.nbytes // 4


def _low_estimate(f: _File) -> int:
    return f.nbytes // 20  # skeleton blocks run ~1/20 of the file's bytes in tokens (stdlib: 1/23)


def _fits_estimate(tail: Sequence[_File], room: int) -> bool:
    return sum(_low_estimate(f) - (f.listed or 0) for f in tail) <= room


@dataclass
class _Room:
    left: int  # tokens still free; the caller spends them as it accepts files


def _prefetched(
    files: Sequence[_File],
    room: _Room,
    estimate: Callable[[_File], int],
    prefetch: Callable[[Sequence[_File]], None],
) -> Iterator[_File]:
    """Yield `files` in order, fetching exact counts one window at a time: the window covers
    the estimated room left (at least one file, at most 256), so little is tokenized or parsed
    beyond where the caller stops."""
    i, n = 0, len(files)
    while i < n:
        covered, j = 0, i
        while j < n and j - i < 256:
            covered += estimate(files[j])
            j += 1
            if covered > room.left:
                break
        prefetch(files[i:j])
        yield from files[i:j]
        i = j


def _batches(files: Sequence[_File]) -> Iterator[list[_File]]:
    batch: list[_File] = []
    estimate = 0
    for f in files:
        batch.append(f)
        estimate += f.nbytes // 4
        if estimate >= _BATCH_TOKENS:
            yield batch
            batch, estimate = [], 0
    if batch:
        yield batch


# -- public entry point ------------------------------------------------------------------------


def pack_repository(
    root: str | os.PathLike[str],
    budget: int | None = None,
    fmt: str = "xml",
    settings: Any = None,
    console: Any = None,
    *,
    include: Sequence[str] = (),
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    store: Store | None = None,
    progress: Progress | None = None,
    skip: Sequence[str | os.PathLike[str]] = (),
) -> Pack:
    """Pack the repository at `root` within `budget` tokens (default: settings.default_budget).

    fmt: "xml" or "markdown". include: gitignore-style globs that override the engine's own
    exclusion rules (secrets, lock/minified/generated files, vendored directories, size limit).
    skip: files to leave out whatever the rules say (the pack's own output file: packing it
    into the next pack would double the repository).
    console: a Rich console on a terminal shows a progress bar on long packs (unless `progress`
    is given). store: the per-file cache (default: SQLite in the XDG cache directory).
    """
    started = time.perf_counter()
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UsageError(f"repository path is not a directory: {path}")
    path = path.resolve()
    renderer(fmt)  # validates the format early
    if settings is None:
        from agent.config import load_settings

        settings = load_settings(path)
    budget = int(budget if budget is not None else settings.default_budget)
    if budget < 1:
        raise UsageError(f"the budget must be a positive number of tokens (got {budget})")
    own_store = store is None
    store = Store.default() if store is None else store
    bar = None
    if progress is None and console is not None and getattr(console, "is_terminal", False):
        bar = _ProgressBar(console)
        progress = bar.update
    timings: dict[str, float] = {}
    try:
        mark = time.perf_counter()
        repo = RepoFiles(path, include=include, max_file_bytes=max_file_bytes)
        candidates = repo.candidates()
        excluded = repo.excluded()
        skipped = _relative_to(path, skip)
        if skipped:
            excluded.extend(
                Excluded(c.path, "output of v4code context")
                for c in candidates
                if c.path in skipped
            )
            candidates = [c for c in candidates if c.path not in skipped]
        timings["discover"] = time.perf_counter() - mark
        mark = time.perf_counter()
        files = _read(path, candidates, excluded, store, progress)
        timings["read"] = time.perf_counter() - mark
        if any(not f.record for f in files):
            _warm_up_tokenizer()  # new content will be tokenized: load it while we rank and parse
        mark = time.perf_counter()
        from agent.context.history import order_keys

        keys = order_keys(repo, [f.path for f in files], store)
        timings["history"] = time.perf_counter() - mark
        new_files = (
            frozenset(repo.untracked) if repo.git is not None and repo.git.head else frozenset()
        )
        packer = _Packer(path, fmt, budget, store, progress, new_files)
        text, packed, total, header_tokens = packer.run(
            files, excluded, order_of=lambda f: (keys.get(f.path, 0.0), f.path)
        )
        mark = time.perf_counter()
        packer.save(files)
        timings["save"] = time.perf_counter() - mark
        cache_enabled = store.enabled
    finally:
        if bar is not None:
            bar.close()
        if own_store:
            store.close()
    prices = getattr(settings, "prices", None)
    cost_cold = prices.cost(total, 0) if prices is not None else 0.0
    cost_cached = prices.cost(total, total) if prices is not None else 0.0
    excluded.sort(key=lambda e: e.path)
    timings.update(packer.timings)
    stats = dict(
        packer.stats,
        ranked_tiers=list(packer.ranked_tiers),
        cache=cache_enabled,
        timings={k: round(v, 4) for k, v in timings.items()},
    )
    return Pack(
        root=path,
        name=packer.name,
        fmt=packer.r.fmt,
        budget=budget,
        text=text,
        total_tokens=total,
        header_tokens=header_tokens,
        files=packed,
        excluded=excluded,
        tokenizer=TOKENIZER_ID,
        elapsed_s=time.perf_counter() - started,
        cost_cold=cost_cold,
        cost_cached=cost_cached,
        model=getattr(settings, "model", None),
        stats=stats,
    )


def _relative_to(root: Path, paths: Sequence[str | os.PathLike[str]]) -> set[str]:
    out: set[str] = set()
    for p in paths:
        try:
            out.add(Path(p).expanduser().resolve().relative_to(root).as_posix())
        except (ValueError, OSError):
            continue  # outside the repository: nothing to skip
    return out


def _warm_up_tokenizer() -> None:
    from agent import tokenizer

    warm_up = getattr(tokenizer, "warm_up", None)
    if warm_up is not None:
        warm_up()


def _read(
    root: Path,
    candidates: Sequence[Candidate],
    excluded: list[Excluded],
    store: Store,
    progress: Progress | None,
) -> list[_File]:
    blobs: list[tuple[Candidate, bytes]] = []
    total = len(candidates)
    for i, c in enumerate(candidates):
        try:
            with open(root / c.path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            excluded.append(Excluded(c.path, f"unreadable ({exc.strerror or exc})"))
            continue
        blobs.append((c, data))
        if progress is not None and i % 500 == 0:
            progress("reading", i, total)
    languages = [rules.language(c.path) for c, _ in blobs]
    keys = [content_key(data, lang) for (_, data), lang in zip(blobs, languages, strict=True)]
    records = store.get_files(keys)
    files: list[_File] = []
    for (c, data), key, language in zip(blobs, keys, languages, strict=True):
        text, reason = decode(data)
        if text is None:
            excluded.append(Excluded(c.path, reason or "undecodable"))
            continue
        if not c.included:
            reason = content_reason(text, c.path)
            if reason is not None:
                excluded.append(Excluded(c.path, reason))
                continue
        record = records.setdefault(key, {})  # one dict per content: identical files share facts
        files.append(
            _File(
                c.path,
                len(data),
                key,
                normalize(text),
                language,
                rules.tier(c.path),
                c.included,
                record,
            )
        )
    return files


class _ProgressBar:
    """A Rich progress bar on stderr for long packs (shown only on a terminal)."""

    def __init__(self, console: Any):
        self.console = console
        self._progress: Any = None
        self._task: Any = None
        self._phase = ""
        self._started = time.perf_counter()

    def update(self, phase: str, done: int, total: int) -> None:
        if self._progress is None:
            if time.perf_counter() - self._started < 0.5 and done < total:
                return  # short packs never show a bar
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        if phase != self._phase or self._task is None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(phase, total=max(total, 1))
            self._phase = phase
        self._progress.update(self._task, completed=done, total=max(total, 1))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
