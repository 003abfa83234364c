"""Pack a repository into one prompt within a token budget (`pack_repository`).

Pipeline: discover (RepoFiles) -> read and hash each file -> look the plan up (the outcome of
a pack for exactly these contents, budget and format) -> on a miss: decode and screen, fit the
budget, save the plan -> order by git history -> render. Token counts are exact V4 counts,
additive by construction (see `agent.context.render`), and cached per content hash, so a warm
run reads and hashes every file but tokenizes nothing that did not change; with a plan hit it
does not even screen, rank or fit.

Fitting, when everything does not fit whole:
  1. files are ranked: tier (source > tests > config > docs > data), then centrality within the
     tier (tree-sitter imports/definitions, `agent.context.rank`), then path;
  2. the highest-ranked files are kept whole until the whole files would take more than
     (1 - SKELETON_SHARE) of the room left after the header and a listed entry for every file;
  3. the following files become skeletons while they fit; the rest are listed (path and size);
  4. when every remaining file fitted as a skeleton, skeletons are promoted back to whole files
     from the top while they fit; otherwise the lower band is filled top-down, a file that does
     not fit is listed and the smaller files after it still get the room left.
So the most central files stay whole, modes degrade down the ranking (except where one file is
too big for the room a smaller, lower-ranked one fits in), and the total never exceeds the
budget. Only tiers the fitting reaches are parsed; every file whose content enters the pack is
scanned for secrets, in full (a file found to hold one is excluded and the pack is fitted again).
"""

from __future__ import annotations

import codecs
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agent.context import rules
from agent.context.cache import TOKENIZER_ID, Store, content_key, plan_key, text_key
from agent.context.discovery import (
    DEFAULT_MAX_FILE_BYTES,
    Candidate,
    Excluded,
    RepoFiles,
    inside_git_dir,
)
from agent.context.render import Renderer, normalize, renderer, safe_split
from agent.errors import UsageError

SKELETON_SHARE = 0.5  # at most this share of the free room is planned for skeletons
MINIFIED_MIN_BYTES = 4096
MINIFIED_AVG_LINE = 500  # average characters per line above which a file counts as minified
_GENERATED_MARKERS = ("@generated", "DO NOT EDIT")
_CODING_COOKIE = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")
# C0 controls other than tab, newlines, form feed and escape, and DEL: rare in any text.
_CONTROL_BYTES = re.compile(rb"[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f]")
LEGACY_MAX_CONTROL_SHARE = 0.01
_BATCH_TOKENS = 262_144  # estimated tokens tokenized per batch while fitting
MAX_BYTES_PER_TOKEN = 5.0  # code runs 3-4.5 bytes per V4 token, English prose 4.5-5

Progress = Callable[[str, int, int], None]  # (phase, done, total)
_T = TypeVar("_T")


@dataclass(frozen=True)
class PackedFile:
    path: str
    tokens: int  # tokens of this file's block in the pack (delimiters included)
    mode: str  # "full" | "skeleton" | "listed"
    tier: str
    language: str
    bytes: int
    encoding: str = "utf-8"  # what the file's bytes were decoded from


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
    footer_tokens: int = 0  # the end of the pack (and its list of untracked files)

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
                    "encoding": f.encoding,
                }
                for f in self.files
            ],
            "excluded": [{"path": _json_safe(e.path), "reason": e.reason} for e in self.excluded],
            "cost_usd": {"cold": round(self.cost_cold, 6), "cached": round(self.cost_cached, 6)},
            "format": self.fmt,
            "model": self.model,
            "header_tokens": self.header_tokens,
            "footer_tokens": self.footer_tokens,
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


def decode(data: bytes) -> tuple[str | None, str]:
    """(text, encoding) or (None, the reason it is not text).

    UTF-8 (a BOM is dropped); UTF-16/32 with a BOM; the codec named by a PEP 263 coding cookie
    in the first two lines; otherwise, for bytes that look like text in a legacy 8-bit encoding
    (no NUL, almost no control characters), Windows-1252, or Latin-1 where Windows-1252 leaves
    a byte undefined. A legacy file is mostly ASCII code with a few accented characters in
    comments and strings: packing it beats dropping real source. Shift-JIS, GBK and other
    multi-byte legacy encodings come out garbled that way; the manifest names the encoding."""
    for bom, codec in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(codec), codec
            except UnicodeDecodeError:
                return None, "binary or undecodable text"
    if b"\0" in data:
        return None, "binary (contains NUL bytes)"
    try:
        return data.decode("utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for line in data.split(b"\n", 2)[:2]:
        match = _CODING_COOKIE.match(line)
        if match:
            codec = match.group(1).decode("ascii").lower()
            try:
                return data.decode(codec), codec
            except (LookupError, UnicodeDecodeError, ValueError):
                break
    if len(_CONTROL_BYTES.findall(data)) > len(data) * LEGACY_MAX_CONTROL_SHARE:
        return None, "binary (not text in any encoding tried)"
    try:
        return data.decode("cp1252"), "windows-1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


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
    encoding: str = "utf-8"
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
            counts = self.alongside_scan(lambda: self.counter.count_texts(tails), fresh)
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
        jobs = [(f.language, f.text) for f in todo]
        texts = self.alongside_scan(lambda: sk.run_many(sk.skeleton_of, jobs), todo)
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
        header, footer = self.frame([f.path for f in files])
        header_tokens, footer_tokens = self.counter.small([header, footer])
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

        # 1. Does everything fit whole? A token is at least one byte, so sizes bound the count.
        # Otherwise, when the tree could fit at a generous MAX_BYTES_PER_TOKEN, count it in
        # batches, projecting the rest at the density seen so far: a tree that clearly will not
        # fit goes to ranking (which tokenizes in rank order) after one batch, a tree that fits
        # is counted without parsing anything for ranks. Only exact counts and sizes steer
        # this, so the outcome does not depend on what the cache holds.
        size = sum(map(_block_bytes, files))
        if size <= avail + floor:
            self.ensure_full(files)
        elif size / MAX_BYTES_PER_TOKEN <= avail + floor:
            gain = counted = 0
            for batch in _batches(cheap_order):
                self.ensure_full(batch)
                gain += sum((f.full or 0) - (f.listed or 0) for f in batch)
                counted += sum(map(_block_bytes, batch))
                if gain > avail or gain + (size - counted) * gain / counted > avail * 1.1:
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
        whole_room = avail - int(avail * SKELETON_SHARE)
        room = _Room(whole_room)
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
        used = whole_room - room.left
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

            reached: set[_File] = set()
            leftovers: list[_File] = []
            for tier in rest():
                reached.update(tier)
                for i, f in enumerate(_prefetched(tier, room, _low_estimate, self.ensure_low)):
                    gain = (f.low or 0) - (f.listed or 0)
                    if gain > room.left:
                        leftovers = list(tier[i + 1 :])
                        break
                    modes[f] = f.low_mode
                    room.left -= gain
                if leftovers:
                    break
            if leftovers:
                unseen = [f for f in cheap_order if f not in reached]
                self.fill_leftovers(leftovers + unseen, modes, room)
        return modes, header, header_tokens, fixed, []

    def fill_leftovers(self, files: Sequence[_File], modes: dict[_File, str], room: _Room) -> None:
        """After the first file that does not fit (a huge one, say), smaller files further down
        may still fit in the room left: place them in order. Only files whose size estimate
        could fit are parsed, in small groups, so a large tree does not skeletonise everything."""
        i, n = 0, len(files)
        while i < n and room.left > 0:
            group: list[_File] = []
            while i < n and len(group) < 32:
                f = files[i]
                i += 1
                if _low_estimate(f) - (f.listed or 0) <= 2 * room.left:
                    group.append(f)
            self.ensure_low(group)
            for f in group:
                gain = (f.low or 0) - (f.listed or 0)
                if gain <= room.left:
                    modes[f] = f.low_mode
                    room.left -= gain

    def frame(self, paths: Sequence[str]) -> tuple[str, str]:
        """The pack's header (tree of tracked files) and footer (list of untracked files)."""
        tracked = sorted(p for p in paths if p not in self.untracked)
        new = sorted(p for p in paths if p in self.untracked)
        return self.r.header(self.name, tracked), self.r.footer(new)

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

    def scan(self, files: Sequence[_File]) -> None:
        """Scan for secrets the files not scanned yet (results are cached with the content)."""
        todo = [f for f in files if not f.included and "sec" not in f.record]
        if not todo:
            return  # a warm run never imports (and compiles) the rules
        from agent.context.secrets import scan

        started = time.perf_counter()
        for f in todo:
            f.set(sec=scan(f.text) or "")
        self.stats["scanned_files"] += len(todo)
        self._timed("secrets", started)

    def alongside_scan(self, work: Callable[[], _T], files: Sequence[_File]) -> _T:
        """work() on a helper thread while this thread scans `files` for secrets. The heavy
        work (tiktoken, tree-sitter) releases the GIL, so on a multi-core machine the scan,
        needed for nearly every file whose content is counted or parsed, costs no wall time."""
        if not any(not f.included and "sec" not in f.record for f in files):
            return work()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="v4pack") as pool:
            future = pool.submit(work)
            self.scan(files)
            return future.result()

    def secret_files(self, files: Sequence[_File]) -> list[tuple[_File, str]]:
        self.scan(files)
        return [(f, f.record["sec"]) for f in files if not f.included and f.record["sec"]]

    def run(self, files: list[_File], excluded: list[Excluded]) -> _Plan:
        """Fit `files` (refitting without any found to hold a secret) and return the plan."""
        while True:
            started = time.perf_counter()
            modes, _, header_tokens, fixed, dropped = self.fit(files)
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
            excluded.append(Excluded(f.path, NO_ROOM))
        placed: dict[str, tuple[str, int]] = {}
        for f, mode in modes.items():
            tokens = f.full if mode == "full" else f.skeleton if mode == "skeleton" else f.listed
            placed[f.path] = (mode, tokens or 0)
        total = fixed + sum(tokens for _, tokens in placed.values())
        if total > self.budget:  # the fitting arithmetic guarantees this; never ship a lie
            raise AssertionError(f"packed {total} tokens into a budget of {self.budget}")
        self.stats["tokenized_tokens"] = self.counter.tokenized_tokens
        self.timings["tokenize"] = self.counter.seconds
        encodings = {f.path: f.encoding for f in modes if f.encoding != "utf-8"}
        dropped_paths = [d.path for d in dropped]
        return _Plan(placed, dropped_paths, header_tokens, fixed, self.ranked_tiers, encodings)

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


def _block_bytes(f: _File) -> int:
    """The file's bytes plus room for its delimiters: with a token at least one byte, a bound
    on its whole block's tokens that steers the "does everything fit?" check (exact counts
    decide)."""
    return f.nbytes + 200 + len(f.path)


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
        estimate += _full_estimate(f)
        if estimate >= _BATCH_TOKENS:
            yield batch
            batch, estimate = [], 0
    if batch:
        yield batch


# -- plans: the outcome of one pack, cached for the exact same input ---------------------------

NO_ROOM = "no room in the budget even for a listed entry"
_MODE_CODES = {"full": "F", "skeleton": "S", "listed": "L"}
_CODE_MODES = {v: k for k, v in _MODE_CODES.items()}
_DROPPED, _EXCLUDED = "D", "X"  # dropped files still appear in the header's tree


@dataclass
class _Plan:
    placed: dict[str, tuple[str, int]]  # path -> (mode, block tokens)
    dropped: list[str]
    header_tokens: int
    fixed: int  # header + footer tokens
    ranked_tiers: list[str]
    encodings: dict[str, str] = field(default_factory=dict)  # path -> encoding, if not UTF-8

    def encode(self, blobs: Sequence[_Blob], excluded: Sequence[Excluded]) -> dict[str, Any]:
        """Compact JSON, aligned with `blobs` (the plan key fixes their paths and order).
        `excluded`: the exclusions found after reading (contents, secrets, no room)."""
        dropped = set(self.dropped)
        reasons = {e.path: e.reason for e in excluded}
        codes, tokens, notes = [], [], []
        for i, b in enumerate(blobs):
            if b.path in self.placed:
                mode, n = self.placed[b.path]
                codes.append(_MODE_CODES[mode])
                tokens.append(n)
                continue
            codes.append(_DROPPED if b.path in dropped else _EXCLUDED)
            tokens.append(0)
            notes.append([i, reasons.get(b.path, "excluded")])
        return {
            "modes": "".join(codes),
            "tokens": tokens,
            "excluded": notes,
            "header_tokens": self.header_tokens,
            "fixed": self.fixed,
            "ranked_tiers": self.ranked_tiers,
            "encodings": [
                [i, self.encodings[b.path]] for i, b in enumerate(blobs) if b.path in self.encodings
            ],
        }


def _plan_parts(
    name: str, fmt: str, budget: int, blobs: Sequence[_Blob], untracked: frozenset[str]
) -> Iterator[bytes]:
    """Everything a plan depends on: the pack's name, format and budget, and per file its
    path, content key, --include flag and whether it is untracked (the header lists only
    tracked files). Tiers and languages follow from the paths; the engine code is in the salt."""
    yield f"{name}\0{fmt}\0{budget}".encode("utf-8", "surrogatepass")
    for b in blobs:
        flags = b"%d%d" % (b.included, b.path in untracked)
        yield b.path.encode("utf-8", "surrogatepass") + b"\0" + flags + b.key


def _decode_plan(
    data: dict[str, Any] | None, blobs: Sequence[_Blob], budget: int
) -> dict[str, Any] | None:
    """The stored plan when it is well-formed for `blobs`, else None (recompute)."""
    if data is None:
        return None
    try:
        modes, tokens, notes = data["modes"], data["tokens"], data["excluded"]
        ok = (
            isinstance(modes, str)
            and len(modes) == len(tokens) == len(blobs)
            and set(modes) <= {*_CODE_MODES, _DROPPED, _EXCLUDED}
            and all(isinstance(n, int) and n >= 0 for n in tokens)
            and isinstance(data["header_tokens"], int)
            and isinstance(data["fixed"], int)
            and data["fixed"] + sum(tokens) <= budget
            and all(0 <= i < len(blobs) and modes[i] in "DX" for i, _ in notes)
            and len(notes) == modes.count("D") + modes.count("X")
        )
    except (KeyError, TypeError, ValueError):
        return None
    return data if ok else None


@dataclass
class _Placed:
    file: PackedFile
    body: str | None  # the content or skeleton (None for a listed entry)


def _from_plan(
    plan: dict[str, Any], blobs: Sequence[_Blob], store: Store
) -> tuple[list[_Placed], list[Excluded], list[str]] | None:
    """(placed files, exclusions, paths in the pack's tree) from a stored plan; None when a
    piece it needs is gone (a skeleton text, or a content that no longer decodes)."""
    modes: str = plan["modes"]
    skeleton_keys = [b.key for b, m in zip(blobs, modes, strict=True) if m == "S"]
    skeletons = store.get_skeletons(skeleton_keys) if skeleton_keys else {}
    placed: list[_Placed] = []
    excluded: list[Excluded] = []
    reasons = {i: reason for i, reason in plan["excluded"]}
    encodings = {i: str(encoding) for i, encoding in plan.get("encodings") or ()}
    paths: list[str] = []
    for i, (b, code, tokens) in enumerate(zip(blobs, modes, plan["tokens"], strict=True)):
        if code in (_DROPPED, _EXCLUDED):
            excluded.append(Excluded(b.path, str(reasons[i])))
            if code == _DROPPED:
                paths.append(b.path)
            continue
        mode = _CODE_MODES[code]
        body = None
        if mode == "full":
            text, _ = decode(b.data)
            if text is None:
                return None
            body = normalize(text)
        elif mode == "skeleton":
            body = skeletons.get(b.key)
            if not body:
                return None
        tier = rules.tier(b.path)
        encoding = encodings.get(i, "utf-8")
        packed = PackedFile(b.path, tokens, mode, tier, b.language, len(b.data), encoding)
        placed.append(_Placed(packed, body))
        paths.append(b.path)
    return placed, excluded, paths


def _render(r: Renderer, header: str, footer: str, placed: Sequence[_Placed]) -> str:
    parts = [header]
    for p in placed:
        f = p.file
        if p.body is None:
            parts.append(r.listed(f.path, f.bytes))
        else:
            parts.append(r.open(f.path, f.language, f.mode, p.body) + p.body + r.close(p.body))
    parts.append(footer)
    return "".join(parts)


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
    if inside_git_dir(path):
        raise UsageError(f"repository path is inside a .git directory: {path}")
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
        with store.batch():  # every cache write of the run in one transaction
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
            blobs = _read(path, candidates, excluded, progress)
            untracked = (
                frozenset(repo.untracked) if repo.git is not None and repo.git.head else frozenset()
            )
            packer = _Packer(path, fmt, budget, store, progress, untracked)
            key = plan_key(_plan_parts(packer.name, packer.r.fmt, budget, blobs, untracked))
            stored = _decode_plan(store.get_plan(key), blobs, budget)
            from_plan = _from_plan(stored, blobs, store) if stored is not None else None
            timings["read"] = time.perf_counter() - mark
            if from_plan is not None and stored is not None:
                placed, late, tree_paths = from_plan
                plan_hit = True
                header_tokens, fixed = stored["header_tokens"], stored["fixed"]
                ranked_tiers = list(stored.get("ranked_tiers") or [])
            else:
                plan_hit = False
                mark = time.perf_counter()
                late = []
                files = _screen(blobs, late, store)
                timings["screen"] = time.perf_counter() - mark
                if any(not f.record for f in files):
                    _warm_up_tokenizer()  # new content will be tokenized: load it while we rank
                plan = packer.run(files, late)
                by_path = {f.path: f for f in files}
                placed = []
                for p, (mode, tokens) in plan.placed.items():
                    f = by_path[p]
                    body = f.text if mode == "full" else packer.skeletons.get(f.key)
                    file = PackedFile(p, tokens, mode, f.tier, f.language, f.size, f.encoding)
                    placed.append(_Placed(file, None if mode == "listed" else body or ""))
                tree_paths = [*plan.placed, *plan.dropped]
                header_tokens, fixed, ranked_tiers = (
                    plan.header_tokens,
                    plan.fixed,
                    plan.ranked_tiers,
                )
                mark = time.perf_counter()
                packer.save(files)
                store.put_plan(key, plan.encode(blobs, late))
                timings["save"] = time.perf_counter() - mark
            excluded.extend(late)
            mark = time.perf_counter()
            from agent.context.history import order_keys

            keys = order_keys(repo, [p.file.path for p in placed], store)
            timings["history"] = time.perf_counter() - mark
            mark = time.perf_counter()
            placed.sort(key=lambda p: (keys.get(p.file.path, 0.0), p.file.path))
            header, footer = packer.frame(tree_paths)
            text = _render(packer.r, header, footer, placed)
            total = fixed + sum(p.file.tokens for p in placed)
            timings["render"] = time.perf_counter() - mark
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
        ranked_tiers=ranked_tiers,
        cache=cache_enabled,
        plan="hit" if plan_hit else "miss",
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
        footer_tokens=fixed - header_tokens,
        files=[p.file for p in placed],
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
    from agent.tokenizer import warm_up

    warm_up()


@dataclass(eq=False)
class _Blob:
    path: str
    data: bytes
    key: bytes
    language: str
    included: bool


def _read_bytes(path: str) -> bytes:
    # os.read into one buffer of the stat'ed size: half the cost of open().read() per file.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)
        if len(data) == size:
            return data
        chunks = [data]  # it changed size since the stat (or a short read): read to the end
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read(
    root: Path, candidates: Sequence[Candidate], excluded: list[Excluded], progress: Progress | None
) -> list[_Blob]:
    """Read and hash every candidate (in path order)."""
    blobs: list[_Blob] = []
    total = len(candidates)
    for i, c in enumerate(candidates):
        try:
            data = _read_bytes(os.path.join(root, c.path))
        except OSError as exc:
            excluded.append(Excluded(c.path, f"unreadable ({exc.strerror or exc})"))
            continue
        language = rules.language(c.path)
        blobs.append(_Blob(c.path, data, content_key(data, language), language, c.included))
        if progress is not None and i % 500 == 0:
            progress("reading", i, total)
    return blobs


def _screen(blobs: Sequence[_Blob], excluded: list[Excluded], store: Store) -> list[_File]:
    """Decode and screen the contents (binary, minified, generated, token configs); attach
    each content's cached facts."""
    records = store.get_files(b.key for b in blobs)
    files: list[_File] = []
    for b in blobs:
        text, encoding = decode(b.data)
        if text is None:
            excluded.append(Excluded(b.path, encoding))
            continue
        if not b.included:
            reason = content_reason(text, b.path)
            if reason is not None:
                excluded.append(Excluded(b.path, reason))
                continue
        record = records.setdefault(b.key, {})  # one dict per content: identical files share facts
        files.append(
            _File(
                b.path,
                len(b.data),
                b.key,
                normalize(text),
                b.language,
                rules.tier(b.path),
                b.included,
                record,
                encoding,
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
