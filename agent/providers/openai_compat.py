"""The OpenAI-compatible chat client: DeepSeek's API, vLLM, SGLang, llama.cpp, Ollama, OpenAI.

    provider = OpenAICompatProvider.from_settings(settings)
    reply = provider.complete(messages, tools, stream_to=sink, thinking=True)

One request = `POST {base_url}/chat/completions`, streamed (SSE via httpx-sse) with usage in the
stream. Tool-call deltas are assembled per index (several calls per turn, arguments split across
chunks, ids and names arriving once). DeepSeek's `reasoning_content` is received, streamed to the
sink, and sent back on later requests for the turns that made tool calls (the API answers 400
otherwise); reasoning of turns without tool calls is not sent back (the API ignores it; it only
costs bandwidth).

Retries are a small explicit loop rather than tenacity: each attempt must restart a stream from
scratch, Retry-After overrides the backoff, and the total time is bounded, and all three read
more plainly inline than as tenacity callbacks. Retried: 408/409/425/429/5xx, connect and read
failures, timeouts, a stream cut mid-answer, a body that is not JSON. Never retried: auth,
context length, other 4xx.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import EventSource

from agent import __version__
from agent.config import FREE, HEADER_SAFE, Prices, Secret, Settings
from agent.errors import ConfigError, ProviderError
from agent.providers.base import (
    AuthError,
    BadRequest,
    ContextLengthExceeded,
    ProviderUnavailable,
    RateLimited,
    Reply,
    StreamInterrupted,
    StreamSink,
    ToolCall,
    Usage,
    check_options,
)

log = logging.getLogger("v4code.providers")

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0


class _Retry(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        kind: str = "unavailable",
        streamed: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.kind = kind  # "rate_limit" | "unavailable" | "stream"
        self.streamed = streamed  # part of the answer had already reached the sink


@dataclass
class _CallParts:
    id: str = ""
    name: str = ""
    args: list[str] = field(default_factory=list)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_from(headers: httpx.Headers) -> float | None:
    """Retry-After, or OpenAI's finer `retry-after-ms` when it is present and sane."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    return parse_retry_after(headers.get("retry-after"))


def parse_usage(raw: dict[str, Any] | None) -> Usage:
    """DeepSeek's prompt_cache_hit_tokens, or OpenAI's prompt_tokens_details.cached_tokens."""
    if not isinstance(raw, dict) or not raw:
        return Usage()
    prompt = _count(raw.get("prompt_tokens"))
    output = _count(raw.get("completion_tokens"))
    if raw.get("prompt_cache_hit_tokens") is not None:
        cached = _count(raw["prompt_cache_hit_tokens"])
        if not prompt:
            prompt = cached + _count(raw.get("prompt_cache_miss_tokens"))
    else:
        details = raw.get("prompt_tokens_details")
        cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(prompt, min(cached, prompt) if prompt else cached, output)


def _count(value: Any) -> int:
    """A token count from a server; anything that is not a sane number counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def estimate_usage(request_bytes: int, reply: Reply) -> Usage:
    """Usage for a server that reported none: ~4 bytes per token, flagged as an estimate.

    Rounded up, so a cost limit errs towards stopping early rather than overspending."""
    out_chars = len(reply.text) + len(reply.reasoning)
    out_chars += sum(len(c.name) + len(c.raw_arguments) for c in reply.tool_calls)
    return Usage(
        input_tokens=-(-request_bytes // 4),
        output_tokens=-(-out_chars // 4),
        estimated=True,
    )


_CTX_LIMIT = re.compile(r"maximum context length is (\d+)")
_CTX_REQUESTED = re.compile(r"(?:you requested|resulted in) (\d+) tokens")
_CTX_SPLIT = re.compile(r"\((\d+) in the messages, (\d+) in the completion\)")
_CTX_WORDS = (
    "maximum context length",
    "context length",
    "context_length_exceeded",
    "exceed_context_size",
    "exceeds the available context",
    "context window",
    "prompt is too long",
    "too many tokens",
)


def context_length_error(
    status: int, message: str, error: dict[str, Any]
) -> ContextLengthExceeded | None:
    """Recognise the context-length phrasings of DeepSeek, vLLM/SGLang, OpenAI and llama.cpp."""
    haystack = f"{message} {error.get('code', '')} {error.get('type', '')}".lower()
    if status not in (400, 413, 422) or not any(w in haystack for w in _CTX_WORDS):
        return None
    limit = requested = prompt = completion = None
    if m := _CTX_LIMIT.search(message):
        limit = int(m.group(1))
    if m := _CTX_REQUESTED.search(message):
        requested = int(m.group(1))
    if m := _CTX_SPLIT.search(message):
        prompt, completion = int(m.group(1)), int(m.group(2))
    if isinstance(error.get("n_ctx"), int):  # llama.cpp puts the numbers in fields
        limit = error["n_ctx"]
    if isinstance(error.get("n_prompt_tokens"), int):
        prompt = error["n_prompt_tokens"]
    if prompt is None and requested is not None and completion is None:
        prompt = requested
    if requested is None and prompt is not None:
        requested = prompt + (completion or 0)

    parts = []
    if requested is not None:
        detail = (
            f" ({prompt:,} prompt + {completion:,} output)"
            if prompt is not None and completion
            else ""
        )
        parts.append(f"{requested:,} tokens requested{detail}")
    if limit is not None:
        parts.append(f"the model's limit is {limit:,}")
    numbers = "; ".join(parts) if parts else "the server gave no token numbers"
    return ContextLengthExceeded(
        f"the prompt does not fit the model's context: {numbers} (server said: {message})",
        limit=limit,
        requested=requested,
        prompt_tokens=prompt,
        completion_tokens=completion,
        hint="Lower --budget (or `reserve`/`context_window` in the config) so the packed repository "
        "leaves room for the conversation and the answer.",
    )


def prepare_messages(
    messages: list[dict[str, Any]], *, roundtrip_reasoning: bool = True
) -> list[dict[str, Any]]:
    """Messages as sent over HTTP: private "_" keys removed; reasoning kept only where required."""
    out = []
    for m in messages:
        msg = {k: v for k, v in m.items() if not k.startswith("_")}
        if msg.get("role") == "assistant":
            msg.pop("reasoning", None)
            if not (roundtrip_reasoning and msg.get("tool_calls") and msg.get("reasoning_content")):
                msg.pop("reasoning_content", None)
        out.append(msg)
    return out


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            into[k] = {**into[k], **v}
        else:
            into[k] = v


class OpenAICompatProvider:
    """`Provider` for every OpenAI-compatible chat server (see agent.providers.base)."""

    def __init__(
        self,
        *,
        name: str = "openai",
        model: str,
        base_url: str,
        api_key: Secret | None = None,
        api_key_env: str | None = None,
        key_source: str | None = None,
        key_withheld: str | None = None,
        prices: Prices | None = None,
        thinking: bool | None = None,
        reasoning_effort: str | None = None,
        max_output_tokens: int | None = None,
        sampling: dict[str, Any] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        max_retries: int = 4,
        retry_max_time: float = 120.0,
        stream: bool = True,
        stream_usage: bool = True,
        roundtrip_reasoning: bool = True,
        extra_body: dict[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.name = name
        self.model = model
        self.base_url = base_url.rstrip("/")
        if api_key is not None and not HEADER_SAFE.fullmatch(api_key.reveal()):
            # httpx would refuse the header and quote it, key included, in its error message.
            raise ConfigError(
                f"the {name} API key ({key_source or 'as configured'}) contains spaces, control or "
                "non-ASCII characters and cannot be sent (the value is not shown); copy it again"
            )
        self._key = api_key
        self.api_key_env = api_key_env
        self.key_source = key_source
        self.key_withheld = key_withheld
        self.prices = prices or FREE
        self.thinking = thinking
        self.reasoning_effort = reasoning_effort
        self.max_output_tokens = max_output_tokens
        # Configured defaults for temperature / top_p / seed; a complete() option overrides them.
        self.sampling = {k: v for k, v in (sampling or {}).items() if v is not None}
        self.max_retries = max_retries
        self.retry_max_time = retry_max_time
        self.stream = stream
        self.stream_usage = stream_usage
        self.roundtrip_reasoning = roundtrip_reasoning
        self.extra_body = dict(extra_body or {})
        self._sleep = sleep
        self._call_seq = 0
        self.last_attempts = 0  # attempts the last complete() needed (tests, transcripts)
        headers = {"User-Agent": f"v4code/{__version__}", "Content-Type": "application/json"}
        self._client = httpx.Client(
            timeout=httpx.Timeout(
                read_timeout,
                connect=connect_timeout,
                write=max(60.0, read_timeout),
                pool=connect_timeout,
            ),
            headers=headers,
            transport=transport,
            follow_redirects=False,  # a redirect must not carry the key to another host
        )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> OpenAICompatProvider:
        provider = settings.provider or "openai"
        kwargs: dict[str, Any] = dict(
            name=provider,
            model=settings.model,
            base_url=settings.base_url or "",
            api_key=settings.api_key,
            api_key_env=settings.api_key_env,
            key_source=settings.sources.get("api_key"),
            key_withheld=settings.key_withheld,
            prices=settings.prices,
            thinking=settings.thinking,
            reasoning_effort=settings.reasoning_effort,
            max_output_tokens=settings.max_output_tokens,
            sampling={
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "seed": settings.seed,
            },
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_retries=settings.max_retries,
            retry_max_time=settings.retry_max_time,
            stream_usage=settings.stream_usage,
            extra_body=settings.extra_body,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:
        key = self._key.masked() if self._key else None
        return f"OpenAICompatProvider(name={self.name!r}, model={self.model!r}, base_url={self.base_url!r}, key={key!r})"

    # -- the Provider interface
    def cost(self, usage: Usage) -> float:
        return self.prices.cost(usage.input_tokens, usage.cached_input_tokens, usage.output_tokens)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build_body(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], **options: Any
    ) -> dict[str, Any]:
        """The JSON request body (public so tests and the benchmark can inspect it)."""
        check_options(options)
        stream = options.get("stream")
        stream = self.stream if stream is None else bool(stream)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": prepare_messages(messages, roundtrip_reasoning=self.roundtrip_reasoning),
            "stream": stream,
        }
        if tools:
            body["tools"] = tools
        if stream and self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        max_tokens = options.get("max_tokens") or self.max_output_tokens
        if max_tokens:
            body["max_tokens"] = int(max_tokens)
        for key in ("temperature", "top_p", "stop", "seed", "response_format"):
            value = options.get(key)
            value = self.sampling.get(key) if value is None else value
            if value is not None:
                body[key] = value
        thinking = options.get("thinking")
        thinking = self.thinking if thinking is None else thinking
        if thinking is not None:
            if self.name == "deepseek":
                body["thinking"] = {"type": "enabled" if thinking else "disabled"}
            else:  # vLLM / SGLang pass it to DeepSeek-V4's chat template
                body["chat_template_kwargs"] = {"thinking": bool(thinking)}
        effort = options.get("reasoning_effort") or self.reasoning_effort
        if effort:
            body["reasoning_effort"] = effort
        _merge(body, self.extra_body)
        if options.get("extra_body"):
            _merge(body, options["extra_body"])
        return body

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        stream_to: StreamSink | None = None,
        **options: Any,
    ) -> Reply:
        body = self.build_body(messages, tools, **options)
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            reply = self._with_retries(data, bool(body["stream"]), stream_to)
        except BadRequest as exc:
            # Some OpenAI-compatible servers reject stream_options; ask once more without it
            # (usage is then estimated unless the server sends it anyway) and remember.
            if "stream_options" not in body or "stream_options" not in exc.message:
                raise
            log.info("%s rejected stream_options; retrying without it", self.name)
            self.stream_usage = False
            del body["stream_options"]
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            reply = self._with_retries(data, True, stream_to)
        if reply.usage == Usage():
            # No usage from the server: an estimate keeps --max-cost and the cost report honest.
            reply.usage = estimate_usage(len(data), reply)
            log.info(
                "%s sent no token usage; estimated %d input / %d output tokens",
                self.name,
                reply.usage.input_tokens,
                reply.usage.output_tokens,
            )
        return reply

    # -- retries
    def _backoff(self, attempt: int) -> float:
        # Exponential with "equal jitter": never below half the step, so a burst of clients spreads
        # out without any of them retrying immediately.
        step = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
        return step / 2 + random.uniform(0, step / 2)

    def _with_retries(self, data: bytes, stream: bool, sink: StreamSink | None) -> Reply:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            self.last_attempts = attempt
            try:
                return self._attempt(data, stream, sink)
            except _Retry as exc:
                elapsed = time.monotonic() - started
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                if attempt > self.max_retries:
                    raise self._gave_up(
                        exc, f"after {attempt} attempts in {elapsed:.1f}s"
                    ) from None
                if elapsed + delay > self.retry_max_time:
                    why = (
                        f"the server asked to wait {delay:.0f}s"
                        if exc.retry_after is not None
                        else f"the next retry would start after {elapsed + delay:.1f}s"
                    )
                    raise self._gave_up(
                        exc,
                        f"after {attempt} attempt(s): {why}, beyond the retry budget of "
                        f"{self.retry_max_time:g}s (retry_max_time)",
                    ) from None
                note = f"retrying in {delay:.1f}s (attempt {attempt + 1}/{self.max_retries + 1}): {exc.reason}"
                if exc.streamed:
                    note += "; the partial answer is discarded and requested again"
                log.info("%s", note)
                on_retry = getattr(sink, "on_retry", None)
                if callable(on_retry):
                    on_retry(note)
                self._sleep(delay)

    def _gave_up(self, exc: _Retry, how: str) -> ProviderError:
        hint = None
        if exc.kind == "rate_limit":
            cls: type[ProviderError] = RateLimited
            hint = "The provider is rate limiting this key; wait and run again, or raise max_retries/retry_max_time."
        elif exc.kind == "stream":
            cls = StreamInterrupted
        else:
            cls = ProviderUnavailable
        return cls(f"{self.name} at {self.base_url} failed {how}: {exc.reason}", hint=hint)

    # -- one attempt
    def _headers(self, stream: bool) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key.reveal()}"
        return headers

    def _scrub(self, text: str) -> str:
        return scrub_key(text, self._key)

    def _attempt(self, data: bytes, stream: bool, sink: StreamSink | None) -> Reply:
        url = f"{self.base_url}/chat/completions"
        try:
            with self._client.stream(
                "POST", url, content=data, headers=self._headers(stream)
            ) as resp:
                if resp.status_code >= 300:  # an error, or a redirect (not followed)
                    resp.read()
                    raise self._http_error(resp)
                ctype = resp.headers.get("content-type", "")
                if "text/event-stream" in ctype:
                    return self._read_stream(resp, sink)
                resp.read()
                return self._read_json(resp, sink)
        except httpx.TimeoutException as exc:
            what = (
                "connecting"
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
                else "waiting for data"
            )
            raise _Retry(
                f"timed out {what} ({type(exc).__name__}; connect_timeout/read_timeout)"
            ) from None
        except httpx.ConnectError as exc:
            raise _Retry(
                f"cannot connect to {self.base_url}: {self._scrub(str(exc)) or type(exc).__name__}"
                " (is the server running and the URL right?)"
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise _Retry(
                f"connection dropped: {self._scrub(str(exc)) or type(exc).__name__}"
            ) from None
        except httpx.UnsupportedProtocol:
            raise ProviderError(
                f"base URL {self.base_url!r} is not an http:// or https:// URL"
            ) from None
        except httpx.HTTPError as exc:  # anything else httpx may raise (decoding, invalid URL)
            raise ProviderError(
                f"{self.name} at {self.base_url}: {type(exc).__name__}: {self._scrub(str(exc))}"
            ) from None

    def _http_error(self, resp: httpx.Response) -> Exception:
        status = resp.status_code
        error: dict[str, Any] = {}
        text = self._scrub(resp.text.strip())
        try:
            payload = resp.json()
        except (ValueError, UnicodeDecodeError):
            payload = None
        if isinstance(payload, dict):
            if isinstance(payload.get("error"), dict):
                error = payload["error"]
            elif isinstance(payload.get("error"), str):
                error = {"message": payload["error"]}
            elif isinstance(payload.get("detail"), str):
                error = {"message": payload["detail"]}
            elif isinstance(payload.get("message"), str):
                error = {"message": payload["message"]}
        message = self._scrub(str(error.get("message") or text[:500] or resp.reason_phrase))
        where = f"{self.name} at {self.base_url}"

        if 300 <= status < 400:
            return ProviderError(
                f"{where} answered with a redirect (HTTP {status}) to "
                f"{resp.headers.get('location', '?')}; set the final URL as the base URL"
            )
        if status in (401, 403):
            return AuthError(
                f"{where} rejected the request (HTTP {status}: {message})", hint=self._auth_hint()
            )
        if status == 402:
            return ProviderError(
                f"{where}: payment required (HTTP 402: {message}); top up the account"
            )
        ctx = context_length_error(status, message, error)
        if ctx is not None:
            return ctx
        if status in RETRY_STATUSES:
            return _Retry(
                f"HTTP {status}: {message}",
                retry_after=retry_after_from(resp.headers),
                kind="rate_limit" if status == 429 else "unavailable",
            )
        if status == 404:
            return BadRequest(
                f"{where}: not found (HTTP 404: {message})",
                hint=f"Check the base URL (OpenAI-compatible servers usually end in /v1) and the model id {self.model!r}.",
            )
        return BadRequest(f"{where} refused the request (HTTP {status}: {message})")

    def _auth_hint(self) -> str:
        env = self.api_key_env or "the provider's API key variable"
        if self._key is None:
            if self.key_withheld:
                return self.key_withheld
            return f"No API key was sent: set {env}."
        return f"The key from {self.key_source or env} ({self._key.masked()}) was rejected: set {env} to a valid key."

    # -- parsing answers
    def _new_call_id(self) -> str:
        self._call_seq += 1
        return f"call_v4code_{self._call_seq}"

    def _read_json(self, resp: httpx.Response, sink: StreamSink | None) -> Reply:
        try:
            payload = resp.json()
            choice = payload["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError):
            raise _Retry(
                f"the server's answer is not a chat completion: {self._scrub(resp.text[:200])!r}"
            ) from None
        text = message.get("content") or ""
        if isinstance(text, list):
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        calls = []
        for c in message.get("tool_calls") or []:
            fn = c.get("function") or {}
            args = fn.get("arguments")
            raw = args if isinstance(args, str) else json.dumps(args if args is not None else {})
            calls.append(
                ToolCall.parse(c.get("id") or self._new_call_id(), fn.get("name") or "", raw)
            )
        if sink is not None:
            if reasoning:
                sink.on_reasoning(reasoning)
            if text:
                sink.on_text(text)
        return Reply(
            text=text,
            reasoning=reasoning,
            tool_calls=calls,
            finish_reason=choice.get("finish_reason"),
            usage=parse_usage(payload.get("usage")),
            model=payload.get("model") or self.model,
        )

    def _read_stream(self, resp: httpx.Response, sink: StreamSink | None) -> Reply:
        text: list[str] = []
        reasoning: list[str] = []
        calls = _CallAssembler()
        finish: str | None = None
        usage_raw: dict[str, Any] | None = None
        model = self.model
        done = False
        streamed = False
        chunks = 0
        on_text = getattr(sink, "on_text", None)
        on_reasoning = getattr(sink, "on_reasoning", None)
        try:
            for event in EventSource(resp).iter_sse():
                data = event.data
                if not data:
                    continue
                if data.strip() == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise _Retry(
                        f"the stream carried invalid JSON after {chunks} chunk(s)",
                        kind="stream",
                        streamed=streamed,
                    ) from None
                chunks += 1
                if not isinstance(chunk, dict):
                    continue
                if chunk.get("error"):
                    err = chunk["error"]
                    msg = err.get("message") if isinstance(err, dict) else str(err)
                    raise _Retry(
                        f"the server reported an error mid-stream: {self._scrub(str(msg))}",
                        kind="stream",
                        streamed=streamed,
                    )
                if isinstance(chunk.get("model"), str):
                    model = chunk["model"] or model
                if isinstance(chunk.get("usage"), dict) and chunk["usage"]:
                    usage_raw = chunk["usage"]
                try:
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        piece = delta.get("reasoning_content") or delta.get("reasoning")
                        if isinstance(piece, str) and piece:
                            reasoning.append(piece)
                            streamed = True
                            if on_reasoning:
                                on_reasoning(piece)
                        piece = delta.get("content")
                        if isinstance(piece, str) and piece:
                            text.append(piece)
                            streamed = True
                            if on_text:
                                on_text(piece)
                        for tc in delta.get("tool_calls") or []:
                            calls.add(tc)
                        if choice.get("finish_reason"):
                            finish = str(choice["finish_reason"])
                except (AttributeError, TypeError) as exc:
                    # A chunk of the wrong shape: the answer cannot be trusted; ask again.
                    raise _Retry(
                        f"the stream carried a malformed chunk after {chunks - 1} chunk(s) "
                        f"({type(exc).__name__})",
                        kind="stream",
                        streamed=streamed,
                    ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            if finish is None:
                raise _Retry(
                    f"the stream was cut after {chunks} chunk(s) ({type(exc).__name__})",
                    kind="stream",
                    streamed=streamed,
                ) from None
        except httpx.ReadTimeout:
            if finish is None:
                raise _Retry(
                    f"the stream stalled after {chunks} chunk(s) (read_timeout)",
                    kind="stream",
                    streamed=streamed,
                ) from None
        if finish is None and not done:
            raise _Retry(
                f"the stream ended after {chunks} chunk(s) without finishing the answer",
                kind="stream",
                streamed=streamed,
            )
        tool_calls = [
            ToolCall.parse(parts.id or self._new_call_id(), parts.name, "".join(parts.args))
            for parts in calls.ordered()
        ]
        return Reply(
            text="".join(text),
            reasoning="".join(reasoning),
            tool_calls=tool_calls,
            finish_reason=finish or "stop",
            usage=parse_usage(usage_raw),
            model=model,
        )


class _CallAssembler:
    """Tool-call deltas into whole calls: keyed by `index`, ids and names arriving once.

    Servers differ: some omit `index` (match by id, else a new id starts a new call, else the
    last call continues); a few give every call index 0 with distinct ids, which must not be
    glued into one call with arguments like `{...}{...}`."""

    def __init__(self) -> None:
        self._slots: list[_CallParts] = []
        self._by_index: dict[int, int] = {}  # server index -> slot

    def ordered(self) -> list[_CallParts]:
        return list(self._slots)  # in order of first appearance, which is index order

    def _new(self) -> int:
        self._slots.append(_CallParts())
        return len(self._slots) - 1

    def add(self, tc: dict[str, Any]) -> None:
        index = tc.get("index")
        tc_id = tc.get("id") if isinstance(tc.get("id"), str) else None
        by_id = (
            next((k for k, p in enumerate(self._slots) if p.id == tc_id), None) if tc_id else None
        )
        if isinstance(index, int) and not isinstance(index, bool):
            slot = self._by_index.get(index)
            if slot is None:
                slot = by_id if by_id is not None else self._new()
            elif tc_id and self._slots[slot].id and self._slots[slot].id != tc_id:
                slot = by_id if by_id is not None else self._new()  # same index, another call
            self._by_index[index] = slot
        elif by_id is not None:
            slot = by_id
        elif tc_id or not self._slots:
            slot = self._new()
        else:
            slot = len(self._slots) - 1
        parts = self._slots[slot]
        if tc_id and not parts.id:
            parts.id = tc_id
        fn = tc.get("function") or {}
        if isinstance(fn.get("name"), str) and fn["name"] and not parts.name:
            parts.name = fn["name"]
        args = fn.get("arguments")
        if isinstance(args, str):
            parts.args.append(args)
        elif args is not None:  # a few servers send the arguments as an object
            parts.args.append(json.dumps(args))


def scrub_key(text: str, key: Secret | None) -> str:
    """`text` with the key masked, also where it appears escaped (e.g. in a repr of bytes)."""
    if key is None or not key.reveal():
        return text
    value = key.reveal()
    for form in {value, value.strip(), repr(value)[1:-1], repr(value.encode())[2:-1]}:
        if form and form in text:
            text = text.replace(form, key.masked())
    return text
