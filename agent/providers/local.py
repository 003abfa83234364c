"""The project's own engine (`model/`) as a provider: V4 prompt in, DSML tool calls out.

    provider = LocalProvider.from_settings(settings)     # settings.model_path: a checkpoint dir
    reply = provider.complete(messages, tools, stream_to=sink)

One `complete()`:
1. render the conversation in the V4 format and tokenize it (special tokens as ids only);
2. reuse KV state: the live cache of this run when the prompt extends what it holds (every turn
   after the first prefills only its new tokens), else the longest prefix stored on disk by an
   earlier run (the packed repository), else nothing;
3. prefill the rest in chunks, saving the state at aligned boundaries of the conversation's
   opening (system prompt, repository) for later runs;
4. decode token by token — sampling with a seed, DSML markup greedily — streaming text and
   reasoning to the sink, until the end-of-sentence token, the end of a tool-call block, or the
   output limit;
5. parse the completion (reasoning, answer, DSML calls) and keep its exact token ids in
   `Reply.extra`, so the next turn's prompt replays them and matches the live cache.

Cost is 0: usage reports input tokens, cached input tokens (served from reused KV state) and
output tokens like any provider.
"""

from __future__ import annotations

import codecs
import importlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from agent.errors import ConfigError, ProviderError
from agent.providers import base
from agent.providers import v4_format as fmt
from agent.providers.base import ContextLengthExceeded, Reply, StreamSink, Usage, check_options
from agent.providers.dsml import BLOCK_CLOSE, BLOCK_OPEN, MASK, mask_literal, parse_completion
from agent.providers.kvstore import DEFAULT_MAX_BYTES, KVStore
from agent.providers.sampling import LogitsProcessor, Sampler, SamplingParams, in_dsml_syntax

# The engine samples with min_p too; a server's request shaping (`response_format`, `extra_body`)
# has no meaning here, so it is refused rather than silently ignored. `stream` is accepted: the
# reply is the same either way (tokens go to `stream_to` when one is given).
COMPLETE_OPTIONS = (base.COMPLETE_OPTIONS - {"response_format", "extra_body"}) | {"min_p"}
DEFAULT_MAX_OUTPUT = 4096
PREFILL_CHUNK = 2048
MIN_STORED_PREFIX = 1024  # shorter prefixes prefill faster than a disk round trip pays off
CACHE_STEP = 8192  # cache capacity grows in multiples of this
PROCESSOR_ENV = "V4CODE_LOCAL_LOGITS_PROCESSOR"  # "module:factory" - a logits processor hook


@dataclass
class TurnStats:
    """What one complete() did with the cache (reported in Reply.extra["_v4_stats"])."""

    prompt_tokens: int = 0
    reused_live: int = 0  # tokens already in this run's cache
    reused_disk: int = 0  # tokens loaded from the disk prefix cache
    prefilled: int = 0
    generated: int = 0
    saved_prefixes: list[int] = field(default_factory=list)
    prefill_s: float = 0.0  # includes save_s
    decode_s: float = 0.0
    load_s: float = 0.0
    save_s: float = 0.0  # copying the state and writing it to the disk cache
    finish: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("prefill_s", "decode_s", "load_s", "save_s"):
            d[k] = round(d[k], 4)
        return d


class LocalProvider:
    name = "local"

    def __init__(
        self,
        engine: Any,
        tokenizer: Any,
        *,
        model: str = "local",
        thinking: bool = True,
        reasoning_effort: str | None = None,
        sampling: SamplingParams | None = None,
        max_output_tokens: int = DEFAULT_MAX_OUTPUT,
        context_tokens: int | None = None,
        store: KVStore | None = None,
        processors: Sequence[LogitsProcessor] = (),
        prefill_chunk: int = PREFILL_CHUNK,
        min_stored_prefix: int = MIN_STORED_PREFIX,
    ):
        self.engine, self.tok, self.model = engine, tokenizer, model
        # a long text (the repository) is tokenized once per run, not once per turn (the first
        # turn's save points tokenize the repository cut at its breakpoint once more)
        self.encoder = _MemoEncoder(tokenizer)
        self.thinking, self.reasoning_effort = thinking, reasoning_effort
        self.sampling = sampling or SamplingParams()
        self.sampler = Sampler(self.sampling)
        self.max_output_tokens = max_output_tokens
        self.context_tokens = context_tokens or _engine_context(engine)
        self.store = store
        self.processors = list(processors)
        self.prefill_chunk = max(1, prefill_chunk)
        self.min_stored_prefix = min_stored_prefix
        self.identity = engine.identity()
        self.align = block_alignment(engine)
        self.eos_id = tokenizer.special_id(fmt.EOS)
        # ids of the format's special tokens: only these can be markup in a completion
        self.specials = {tokenizer.special_id(t): t for t in fmt.SPECIAL_TOKENS}
        # A checkpoint's vocabulary may be padded beyond the tokenizer's: those ids decode to
        # nothing, so they are never chosen.
        self.vocab_size = int(getattr(tokenizer, "vocab_size", 0) or 0) or None
        self._cache: Any = None
        self._cached: list[int] = []  # the token ids whose state the live cache holds
        self._next_logits: torch.Tensor | None = None  # logits after the last cached token
        self._call_ids = 0

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Any) -> LocalProvider:
        """Load the checkpoint at settings.model_path on the best device torch finds."""
        path = getattr(settings, "model_path", None)
        if not path:
            raise ConfigError(
                "the local provider needs a checkpoint directory.",
                hint="pass --model-path DIR (try `v4code model init DIR --preset tiny` for a random one)",
            )
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ConfigError(f"model path is not a directory: {path}")
        try:
            from model import load_model
        except ImportError as exc:  # torch or the engine is missing
            raise ConfigError(
                f"the local engine is not available ({exc}).",
                hint='install it with: pip install -e ".[local]"',
            ) from None
        from agent.paths import cache_dir
        from agent.tokenizer import load_tokenizer

        # device, dtype, kv_cache_max_bytes (0: no disk cache) and sampling are optional settings
        device = getattr(settings, "device", None) or "auto"
        dtype = getattr(settings, "dtype", None)
        try:
            engine = load_model(path, device=device, dtype=dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ConfigError(f"cannot load the checkpoint in {path}: {exc}") from None
        tokenizer = load_tokenizer(path)
        max_bytes = getattr(settings, "kv_cache_max_bytes", None)
        max_bytes = DEFAULT_MAX_BYTES if max_bytes is None else int(max_bytes)
        store = (
            KVStore(cache_dir() / "kv", align=block_alignment(engine), max_bytes=max_bytes)
            if max_bytes
            else None
        )
        sampling = SamplingParams(
            temperature=_num(settings, "temperature", 1.0),
            top_p=_num(settings, "top_p", 1.0),
            min_p=_num(settings, "min_p", 0.05),
            seed=getattr(settings, "seed", None),
        )
        window = int(getattr(settings, "context_window", 0) or 0)
        thinking = getattr(settings, "thinking", None)
        return cls(
            engine,
            tokenizer,
            model=f"local:{path.name}",
            thinking=True if thinking is None else bool(thinking),
            reasoning_effort=_effort(getattr(settings, "reasoning_effort", None)),
            sampling=sampling,
            max_output_tokens=int(
                getattr(settings, "max_output_tokens", None) or DEFAULT_MAX_OUTPUT
            ),
            context_tokens=min(window, _engine_context(engine)) if window else None,
            store=store,
            processors=processors_from_env(),
        )

    # -- the Provider interface -------------------------------------------------------------

    def cost(self, usage: Usage) -> float:
        return 0.0

    def close(self) -> None:
        self._cache, self._cached, self._next_logits = None, [], None

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        stream_to: StreamSink | None = None,
        **options: Any,
    ) -> Reply:
        check_options(options, COMPLETE_OPTIONS)
        thinking = self.thinking if options.get("thinking") is None else bool(options["thinking"])
        effort = (
            _effort(options.get("reasoning_effort"))
            if options.get("reasoning_effort")
            else self.reasoning_effort
        )
        max_tokens = int(options.get("max_tokens") or self.max_output_tokens)
        sampler = self.sampler
        if any(options.get(k) is not None for k in ("temperature", "top_p", "min_p", "seed")):
            sampler = Sampler(
                SamplingParams(
                    temperature=_opt(options, "temperature", self.sampling.temperature),
                    top_p=_opt(options, "top_p", self.sampling.top_p),
                    min_p=_opt(options, "min_p", self.sampling.min_p),
                    seed=options.get("seed", self.sampling.seed),
                    greedy_dsml=self.sampling.greedy_dsml,
                )
            )
        stops = options.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)

        try:
            pieces = fmt.render(messages, tools, thinking=thinking, reasoning_effort=effort)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(
                f"cannot render the conversation for the local model: {exc}"
            ) from None
        prompt = fmt.to_ids(pieces, self.encoder)
        if len(prompt) + 1 > self.context_tokens:
            raise ContextLengthExceeded(
                f"the prompt has {len(prompt):,} tokens; the local model's context is {self.context_tokens:,}",
                limit=self.context_tokens,
                prompt_tokens=len(prompt),
                hint="lower --budget so the packed repository leaves room for the conversation",
            )
        max_tokens = max(1, min(max_tokens, self.context_tokens - len(prompt)))
        stats = TurnStats(prompt_tokens=len(prompt))
        try:
            logits = self._prefill(
                prompt, messages, tools, thinking, effort, stats, len(prompt) + max_tokens
            )
            ids, text, finish = self._decode(
                logits, max_tokens, sampler, thinking, stops, stream_to, stats
            )
        except BaseException:
            # an interrupted forward leaves the cache half-updated: never reuse it
            self.close()
            raise
        return self._reply(ids, text, finish, thinking, stats)

    # -- prefill with reuse -----------------------------------------------------------------

    def _prefill(
        self, prompt, messages, tools, thinking, effort, stats: TurnStats, room: int
    ) -> torch.Tensor:
        """Bring the cache to the whole prompt (reusing what it can); the logits after it.
        `room`: tokens the cache must be able to hold by the end of the turn."""
        common = _common_prefix(self._cached, prompt)
        if self._cache is None or common < len(self._cached):
            self._reset(room)  # the cache holds tokens this prompt does not start with
        elif common == len(prompt):
            stats.reused_live = common  # the same prompt again: its next-token logits are known
            self._make_room(room)
            return self._next_logits
        stats.reused_live = len(self._cached)
        if self.store is not None and not self._cached:
            self._load_prefix(prompt, stats)
        self._make_room(room)
        start = len(self._cached)
        marks = self._save_points(prompt, messages, tools, thinking, effort, start)
        started = time.monotonic()
        logits = self._next_logits
        pos = start
        while pos < len(prompt):
            end = min(len(prompt), pos + self.prefill_chunk, *[m for m in marks if m > pos])
            logits = self._forward(prompt[pos:end])
            pos = end
            if pos in marks:
                saving = time.monotonic()
                if self.store.save(self.identity, prompt[:pos], self._cache.state_dict()):
                    stats.saved_prefixes.append(pos)
                stats.save_s += time.monotonic() - saving
        stats.prefilled = len(prompt) - start
        stats.prefill_s = time.monotonic() - started
        return logits

    def _load_prefix(self, prompt: list[int], stats: TurnStats) -> None:
        """Start from the longest prefix of `prompt` an earlier run stored on disk."""
        started = time.monotonic()
        hit = self.store.find(self.identity, prompt, limit=len(prompt) - 1)
        if hit is not None:
            try:
                self._cache.load_state_dict(hit.state)
                if int(self._cache.length) != hit.tokens:
                    raise ValueError(
                        f"the state holds {self._cache.length} tokens, expected {hit.tokens}"
                    )
                self._cached = list(prompt[: hit.tokens])
                stats.reused_disk = hit.tokens
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                self.store.problems.append(
                    f"a stored state did not load ({exc}); prefilling instead"
                )
                self._reset(self._cache.max_tokens)
        stats.load_s = time.monotonic() - started

    def _save_points(self, prompt, messages, tools, thinking, effort, start: int) -> set[int]:
        """Token counts at which the first turn stores its state for later runs:
        * each message's cache breakpoint: `_cache_breakpoint` = N on a message says the first
          N characters of its content stay the same from run to run (the agent marks the end of
          the packed repository, before the task);
        * the end of each message of the opening (the messages before the first answer) but
          the last one: the system prompt with the tools;
        * without a breakpoint, the end of the opening (a rerun of the same prompt).
        A point is where the rendering of the opening cut there still agrees with this prompt
        (BPE may merge text across the cut), rounded down to the compression block so that no
        compressor holds a half-filled block. So a first turn saves one or two states, not one
        per guess: each save copies the whole state."""
        if self.store is None:
            return set()
        opening = []
        for m in messages:
            if m.get("role") == "assistant":
                break
            opening.append(m)
        if len(opening) != len(messages):
            return set()  # a later turn: the first one stored the opening
        last = len(prompt) - 1  # a stored prefix must leave a token to prefill (for its logits)
        cuts, marked = [], False
        for k, msg in enumerate(opening):
            breakpoint_ = cache_breakpoint(msg)
            if breakpoint_ is not None:
                cuts.append([*opening[:k], dict(msg, content=msg["content"][:breakpoint_])])
                marked = True
            if k < len(opening) - 1:
                cuts.append(opening[: k + 1])
        ends = [last] if not marked else []
        for cut in cuts:
            ids = fmt.to_ids(
                fmt.render(cut, tools, thinking=thinking, reasoning_effort=effort), self.encoder
            )
            ends.append(_common_prefix(ids, prompt))
        floor = max(self.min_stored_prefix, self.align)
        points = {min(n, last) // self.align * self.align for n in ends}
        return {
            n
            for n in points
            if n >= floor and n > start and not self.store.has(self.identity, prompt[:n])
        }

    def _reset(self, room: int) -> None:
        self._cache = self.engine.new_cache(self._capacity(room))
        self._cached, self._next_logits = [], None

    def _capacity(self, room: int) -> int:
        # Preallocating the whole context (1M tokens) for a 10K-token conversation would waste
        # accelerator memory; grow by doubling instead (a copy of the state, cheap next to prefill).
        rounded_up = -(-room // CACHE_STEP) * CACHE_STEP
        return min(self.context_tokens, max(rounded_up, CACHE_STEP))

    def _make_room(self, room: int) -> None:
        if self._cache.max_tokens >= room:
            return
        bigger = self.engine.new_cache(self._capacity(max(room, 2 * self._cache.max_tokens)))
        bigger.load_state_dict(self._cache.state_dict())
        self._cache = bigger

    @torch.no_grad()
    def _forward(self, ids: Sequence[int]) -> torch.Tensor:
        x = torch.tensor([list(ids)], dtype=torch.long, device=_engine_device(self.engine))
        out = self.engine.forward(x, self._cache, last_only=True)
        self._cached.extend(ids)
        self._next_logits = out.reshape(-1, out.shape[-1])[-1]
        return self._next_logits

    # -- decode -----------------------------------------------------------------------------

    def _decode(
        self, logits, max_tokens, sampler, thinking, stops, sink, stats
    ) -> tuple[list[int], _TextDecoder, str]:
        """The completion's ids, their decoded text (all but a final end token) and why it ended."""
        started = time.monotonic()
        text = _TextDecoder(self.tok, self.specials)
        stream = _Streamer(sink, thinking)
        ids: list[int] = []
        finish = "length"
        while len(ids) < max_tokens:
            for proc in self.processors:
                logits = proc(ids, logits)
            if self.vocab_size is not None and logits.shape[-1] > self.vocab_size:
                logits = logits.clone()
                logits[..., self.vocab_size :] = float("-inf")
            greedy = self.sampling.greedy_dsml and in_dsml_syntax(text.markup)
            token = sampler.choose(logits, greedy=greedy)
            ids.append(token)
            if token == self.eos_id:
                finish = "stop"
                break
            seen = len(text.text)
            text.add(token)
            stream.update(text.text, text.markup)
            # a token may carry more than the tag's end (">\n\n"): look at all that is new
            if BLOCK_CLOSE in text.markup[max(0, seen - len(BLOCK_CLOSE) + 1) :]:
                finish = "tool_calls"  # nothing may follow a call block but the end token
                break
            if any(s in text.text[max(0, seen - len(s) + 1) :] for s in stops):
                finish = "stop"
                break
            if len(ids) >= max_tokens:
                break
            logits = self._forward([token])
        stream.update(text.text, text.markup, final=True)
        stats.generated = len(ids)
        stats.decode_s = time.monotonic() - started
        stats.finish = finish
        return ids, text, finish

    def _reply(
        self, ids: list[int], text: _TextDecoder, finish: str, thinking: bool, stats: TurnStats
    ) -> Reply:
        # the end token, produced (decoding stopped before decoding it) or implied: the format
        # requires it after every completion
        completion = list(ids) if ids and ids[-1] == self.eos_id else [*ids, self.eos_id]
        text.add(self.eos_id)
        parsed = parse_completion(
            text.text, thinking=thinking, new_id=self._new_call_id, markup=text.markup
        )
        if parsed.tool_calls and finish != "length":
            finish = "tool_calls"
        extra = {
            fmt.REPLAY_IDS: completion,
            fmt.REPLAY_TEXT: text.text,
            fmt.REPLAY_MODE: "thinking" if thinking else "chat",
            "_v4_stats": stats.to_dict(),
        }
        if parsed.problems:
            extra["_v4_problems"] = parsed.problems
        return Reply(
            text=parsed.content,
            reasoning=parsed.reasoning,
            tool_calls=parsed.tool_calls,
            finish_reason=finish,
            usage=Usage(
                stats.prompt_tokens, stats.reused_live + stats.reused_disk, stats.generated
            ),
            model=self.model,
            extra=extra,
        )

    def _new_call_id(self) -> str:
        self._call_ids += 1
        return f"call_{self._call_ids}"


# -----------------------------------------------------------------------------------------------
# helpers


def block_alignment(engine: Any) -> int:
    """Token multiple at which every compressor has flushed its block: lcm of the ratios."""
    config = getattr(engine, "config", None)
    ratios = getattr(config, "compress_ratios", None)
    if callable(ratios):
        ratios = ratios()
    ratios = [int(r) for r in ratios or () if r]
    return math.lcm(*ratios) if ratios else 128


def cache_breakpoint(message: dict[str, Any]) -> int | None:
    """The message's `_cache_breakpoint` (characters of its content that stay the same from run
    to run), when it is usable; anything else is ignored - it is only a hint for caching."""
    n, content = message.get(fmt.CACHE_BREAKPOINT), message.get("content")
    if type(n) is int and isinstance(content, str) and 0 < n < len(content):
        return n
    return None


def processors_from_env() -> list[LogitsProcessor]:
    """Logits processors named by $V4CODE_LOCAL_LOGITS_PROCESSOR ("module:factory", comma
    separated); each factory is called without arguments. Used to steer a random checkpoint
    in end-to-end tests; unset in normal use."""
    spec = os.environ.get(PROCESSOR_ENV, "").strip()
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        module, _, attr = item.partition(":")
        try:
            factory: Callable[[], LogitsProcessor] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{PROCESSOR_ENV}={item!r} cannot be loaded: {exc}") from None
        out.append(factory())
    return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    step = 4096
    # whole slices first (fast in CPython): a[:i] == b[:i] holds throughout, and the first
    # difference lies in the slice that stopped the loop
    while i < n and a[i : i + step] == b[i : i + step]:
        i += step
    i = min(i, n)
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _engine_device(engine: Any) -> torch.device:
    device = getattr(engine, "device", None)
    if device is not None:
        return torch.device(device)
    try:
        return next(engine.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _engine_context(engine: Any) -> int:
    config = getattr(engine, "config", None)
    return int(
        getattr(config, "max_seq_len", 0)
        or getattr(config, "max_position_embeddings", 0)
        or 1_048_576
    )


def _num(settings: Any, name: str, default: float) -> float:
    value = getattr(settings, name, None)
    return default if value is None else float(value)


def _opt(options: dict[str, Any], name: str, default: float) -> float:
    value = options.get(name)
    return default if value is None else float(value)


def _effort(value: Any) -> str | None:
    """DeepSeek's effort names: only "max" changes the V4 prompt; the rest render like "high"."""
    if value is None:
        return None
    return "max" if str(value).lower() in ("max", "xhigh", "ultra") else "high"


class _MemoEncoder:
    """The tokenizer, remembering the ids of the last few long texts: every turn renders the whole
    conversation again, and re-tokenizing a 1M-token repository costs ~0.5 s a turn."""

    MIN_CHARS = 512
    KEEP = 8

    def __init__(self, tok: Any):
        self.tok = tok
        self.memo: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        if len(text) < self.MIN_CHARS:
            return self.tok.encode(text)
        ids = self.memo.pop(text, None)
        if ids is None:
            ids = self.tok.encode(text)
        self.memo[text] = ids  # most recently used last
        while len(self.memo) > self.KEEP:
            del self.memo[next(iter(self.memo))]
        return ids

    def special_id(self, token: str) -> int:
        return self.tok.special_id(token)


class _TextDecoder:
    """Token ids -> text, byte-exact (a character split over several tokens appears once, whole),
    and its markup view (same length): what ordinary tokens spelled is masked, so only special
    tokens the model produced read as `</think>`, DSML tags or the end (dsml.mask_literal)."""

    def __init__(self, tok: Any, specials: dict[int, str]):
        self.tok, self.specials = tok, specials
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.markup = ""
        self._literal_from = 0  # where the current run of ordinary text starts

    def add(self, token: int) -> None:
        piece = self.decoder.decode(_token_bytes(self.tok, token))
        special = self.specials.get(token)
        if special is not None and piece.endswith(special):
            # (anything before it: the replaced bytes of a character left unfinished)
            self.text += piece
            self.markup += mask_literal(piece[: len(piece) - len(special)]) + special
            self._literal_from = len(self.text)
            return
        seen = len(self.markup)
        self.text += piece
        self.markup += mask_literal(piece)
        # `</think>` spelled by several ordinary tokens: mask it once it is complete
        pos = self.markup.find(
            fmt.END_THINK, max(self._literal_from, seen - len(fmt.END_THINK) + 1)
        )
        while pos >= 0:
            self.markup = self.markup[:pos] + MASK + self.markup[pos + 1 :]
            pos = self.markup.find(fmt.END_THINK, pos + 1)


def _token_bytes(tok: Any, token: int) -> bytes:
    if hasattr(tok, "decode_bytes"):
        return tok.decode_bytes([token])
    return tok.decode([token]).encode("utf-8")


def _markup_start(markup: str, start: int) -> int:
    """Where tool-call markup begins in the markup view after `start` (-1: none), including the
    `<` or `</` before the DSML token."""
    hit = markup.find(fmt.DSML, start)
    if hit < 0:
        return -1
    for opener in ("</", "<"):
        if markup.startswith(opener, hit - len(opener)) and hit - len(opener) >= start:
            return hit - len(opener)
    return hit


class _Streamer:
    """Streams reasoning and answer text to a sink as it is decoded, holding back any tail that
    may be the start of markup (`</think>`, a tool call, the end token). Positions come from the
    markup view, the text sent from the decoded text."""

    MARKERS_REASONING = (fmt.END_THINK, "\n\n" + BLOCK_OPEN, BLOCK_OPEN)
    MARKERS_TEXT = ("\n\n" + BLOCK_OPEN, "<" + fmt.DSML, "</" + fmt.DSML, fmt.EOS)

    def __init__(self, sink: StreamSink | None, thinking: bool):
        self.sink, self.thinking = sink, thinking
        self.sent_reasoning = 0
        self.sent_text = 0

    def update(self, text: str, markup: str | None = None, final: bool = False) -> None:
        if self.sink is None:
            return
        markup = text if markup is None else markup
        body = 0
        if self.thinking:
            end = markup.find(fmt.END_THINK)
            calls = markup.find(BLOCK_OPEN)  # where the parser ends the reasoning too
            if end < 0 or (0 <= calls < end):
                stop = len(markup) if calls < 0 else calls
                self._emit(text, markup, 0, stop, self.MARKERS_REASONING, final, reasoning=True)
                return
            self._emit(text, markup, 0, end, (), True, reasoning=True)
            body = end + len(fmt.END_THINK)
        calls = _markup_start(markup, body)
        stop = len(markup) if calls < 0 else calls
        self._emit(
            text, markup, body, stop, self.MARKERS_TEXT, final or calls >= 0, reasoning=False
        )

    def _emit(
        self,
        text: str,
        markup: str,
        start: int,
        stop: int,
        markers: tuple[str, ...],
        final: bool,
        *,
        reasoning: bool,
    ) -> None:
        part = markup[start:stop]
        if not final:
            visible = len(part) - _held_back(part, markers)
        elif markers:
            visible = len(part.removesuffix("\n\n"))
        else:
            visible = len(part)
        sent = self.sent_reasoning if reasoning else self.sent_text
        if visible <= sent:
            return
        delta = text[start + sent : start + visible]
        if reasoning:
            self.sent_reasoning = visible
            self.sink.on_reasoning(delta)
        else:
            self.sent_text = visible
            self.sink.on_text(delta)


def _held_back(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a marker."""
    best = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(text)), best, -1):
            if text.endswith(m[:n]):
                best = n
                break
    return best
