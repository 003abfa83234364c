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
from agent.providers import v4_format as fmt
from agent.providers.base import ContextLengthExceeded, Reply, StreamSink, Usage
from agent.providers.dsml import BLOCK_CLOSE, BLOCK_OPEN, parse_completion
from agent.providers.kvstore import DEFAULT_MAX_BYTES, KVStore
from agent.providers.sampling import LogitsProcessor, Sampler, SamplingParams, in_dsml_syntax

COMPLETE_OPTIONS = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "min_p",
        "stop",
        "seed",
        "response_format",
        "thinking",
        "reasoning_effort",
        "extra_body",
        "stream",
    }
)
DEFAULT_MAX_OUTPUT = 4096
PREFILL_CHUNK = 2048
MIN_STORED_PREFIX = 1024  # shorter prefixes prefill faster than a disk round trip pays off
BACK_OFFS = (256, 1024, 4096)
CACHE_STEP = 8192  # cache capacity grows in multiples of this  # tokens before the end of the opening, for a different question
PROCESSOR_ENV = "V4CODE_LOCAL_LOGITS_PROCESSOR"  # "module:factory" - a logits processor hook


@dataclass
class TurnStats:
    """What one complete() did with the cache (also in Reply.extra["_v4_stats"])."""

    prompt_tokens: int = 0
    reused_live: int = 0  # tokens already in this run's cache
    reused_disk: int = 0  # tokens loaded from the disk prefix cache
    prefilled: int = 0
    generated: int = 0
    saved_prefixes: list[int] = field(default_factory=list)
    prefill_s: float = 0.0
    decode_s: float = 0.0
    load_s: float = 0.0
    finish: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("prefill_s", "decode_s", "load_s"):
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
        self._cache: Any = None
        self._cached: list[int] = []  # the token ids whose state the live cache holds
        self._next_logits: torch.Tensor | None = None  # logits after the last cached token
        self._call_ids = 0
        self.last_stats = TurnStats()
        self.history: list[TurnStats] = []

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
        unknown = set(options) - COMPLETE_OPTIONS
        if unknown:
            raise TypeError(f"unknown option(s) for complete(): {', '.join(sorted(unknown))}")
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
        prompt = fmt.to_ids(pieces, self.tok)
        if len(prompt) + 1 > self.context_tokens:
            raise ContextLengthExceeded(
                f"the prompt has {len(prompt):,} tokens; the local model's context is {self.context_tokens:,}",
                limit=self.context_tokens,
                prompt_tokens=len(prompt),
                hint="lower --budget so the packed repository leaves room for the conversation",
            )
        max_tokens = max(1, min(max_tokens, self.context_tokens - len(prompt)))
        stats = TurnStats(prompt_tokens=len(prompt))
        self.last_stats = stats
        self.history.append(stats)
        try:
            logits = self._prefill(
                prompt, messages, tools, thinking, effort, stats, len(prompt) + max_tokens
            )
            ids, finish = self._decode(
                logits, max_tokens, sampler, thinking, stops, stream_to, stats
            )
        except BaseException:
            # an interrupted forward leaves the cache half-updated: never reuse it
            self.close()
            raise
        return self._reply(ids, finish, thinking, stats)

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
            if pos in marks and self.store.save(
                self.identity, prompt[:pos], self._cache.state_dict()
            ):
                stats.saved_prefixes.append(pos)
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
        """Aligned boundaries of the conversation's opening (the messages before the first
        answer) worth keeping on disk for later runs:
        * the end of each opening message (system prompt, a repository message, the task), as
          far as its tokens agree with this prompt (text merges where messages join);
        * a few points backing off from the end of the last one, which usually holds the
          repository followed by the task, so a later run asking something else still finds
          the repository: BACK_OFFS tokens before the end, within that message."""
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
        ends = []
        for k in range(1, len(opening)):
            ids = fmt.to_ids(
                fmt.render(opening[:k], tools, thinking=thinking, reasoning_effort=effort), self.tok
            )
            ends.append(min(_common_prefix(ids, prompt), last))
        floor = ends[-1] if ends else 0
        candidates = [*ends, last, *(last - b for b in BACK_OFFS if last - b > floor)]
        points = set()
        for n in candidates:
            n = n // self.align * self.align
            if (
                n >= max(self.min_stored_prefix, self.align)
                and n > start
                and not self.store.has(self.identity, prompt[:n])
            ):
                points.add(n)
        return points

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
    ) -> tuple[list[int], str]:
        started = time.monotonic()
        text = _TextDecoder(self.tok)
        stream = _Streamer(sink, thinking)
        ids: list[int] = []
        finish = "length"
        while len(ids) < max_tokens:
            for proc in self.processors:
                logits = proc(ids, logits)
            greedy = self.sampling.greedy_dsml and in_dsml_syntax(text.text)
            token = sampler.choose(logits, greedy=greedy)
            ids.append(token)
            if token == self.eos_id:
                finish = "stop"
                break
            text.add(token)
            stream.update(text.text)
            if text.text.endswith(BLOCK_CLOSE):
                finish = "tool_calls"  # nothing may follow a call block but the end token
                break
            if any(text.text.endswith(s) for s in stops):
                finish = "stop"
                break
            if len(ids) >= max_tokens:
                break
            logits = self._forward([token])
        stream.update(text.text, final=True)
        stats.generated = len(ids)
        stats.decode_s = time.monotonic() - started
        stats.finish = finish
        return ids, finish

    def _reply(self, ids: list[int], finish: str, thinking: bool, stats: TurnStats) -> Reply:
        completion = list(ids) if ids and ids[-1] == self.eos_id else [*ids, self.eos_id]
        text = _TextDecoder(self.tok)
        for t in completion:
            text.add(t)
        parsed = parse_completion(text.text, thinking=thinking, new_id=self._new_call_id)
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
    while i < n and a[i : i + step] == b[i : i + step]:  # compare in slices: fast in CPython
        i += step
    i = min(i, n)
    while i > 0 and a[:i] != b[:i]:
        i -= 1
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


class _TextDecoder:
    """Token ids -> text, byte-exact: a character split over several tokens appears once whole."""

    def __init__(self, tok: Any):
        self.tok = tok
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""

    def add(self, token: int) -> None:
        self.text += self.decoder.decode(_token_bytes(self.tok, token))


def _token_bytes(tok: Any, token: int) -> bytes:
    if hasattr(tok, "decode_bytes"):
        return tok.decode_bytes([token])
    return tok.decode([token]).encode("utf-8")


class _Streamer:
    """Streams reasoning and answer text to a sink as it is decoded, holding back any tail that
    may be the start of markup (`</think>`, a tool-call block, the end token)."""

    MARKERS_REASONING = (fmt.END_THINK, "\n\n" + BLOCK_OPEN, BLOCK_OPEN)
    MARKERS_TEXT = ("\n\n" + BLOCK_OPEN, BLOCK_OPEN, fmt.EOS)

    def __init__(self, sink: StreamSink | None, thinking: bool):
        self.sink, self.thinking = sink, thinking
        self.sent_reasoning = 0
        self.sent_text = 0

    def update(self, text: str, final: bool = False) -> None:
        if self.sink is None:
            return
        body = text
        if self.thinking:
            end = text.find(fmt.END_THINK)
            block = text.find(BLOCK_OPEN)
            if end < 0 or (0 <= block < end):
                reasoning = text if block < 0 else text[:block]
                self._emit(reasoning, self.MARKERS_REASONING, final, reasoning=True)
                return
            self._emit(text[:end], (), True, reasoning=True)
            body = text[end + len(fmt.END_THINK) :]
        block = body.find(BLOCK_OPEN)
        self._emit(
            body if block < 0 else body[:block],
            self.MARKERS_TEXT,
            final or block >= 0,
            reasoning=False,
        )

    def _emit(self, part: str, markers: tuple[str, ...], final: bool, *, reasoning: bool) -> None:
        visible = part.removesuffix("\n\n") if final and markers else part
        if not final:
            visible = part[: len(part) - _held_back(part, markers)]
        sent = self.sent_reasoning if reasoning else self.sent_text
        if len(visible) <= sent:
            return
        delta = visible[sent:]
        if reasoning:
            self.sent_reasoning = len(visible)
            self.sink.on_reasoning(delta)
        else:
            self.sent_text = len(visible)
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
