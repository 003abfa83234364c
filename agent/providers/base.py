"""The one interface the agent loop uses for every provider.

    reply = provider.complete(messages, tools, stream_to=sink, **options)

* `messages`: OpenAI chat format dicts: {"role": "system"|"user"|"assistant"|"tool", "content": str,
  "tool_calls"?: [...], "tool_call_id"?: str, "reasoning_content"?: str}. The loop appends
  `reply.to_message()` after each turn and one {"role": "tool"} message per tool call.
* `tools`: OpenAI function schemas ({"type": "function", "function": {name, description,
  parameters}}); the same tool names reach every provider.
* `stream_to`: optional sink that receives text / reasoning deltas as they arrive. A sink may also
  define `on_retry(message)`: called before a request is retried (after a 429, a 5xx, a dropped
  or cut stream); text already shown for the failed attempt is discarded, the next attempt
  streams the answer again from its start.
* `options` (all optional; None = the configured default): `max_tokens`, `temperature`,
  `top_p`, `stop`, `seed`, `response_format`, `thinking` (bool: DeepSeek's thinking mode),
  `reasoning_effort` ("low" | "high" | "max" ...), `extra_body` (dict merged into the request),
  `stream` (bool). An unknown option is a TypeError.

Errors: every failure is a ProviderError (agent.errors, exit code 5); the subclasses below let
the loop react (e.g. shrink the context after ContextLengthExceeded). Messages never contain
the API key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agent.errors import ProviderError

COMPLETE_OPTIONS = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "response_format",
        "thinking",
        "reasoning_effort",
        "extra_body",
        "stream",
    }
)


def check_options(options: dict[str, Any], known: frozenset[str] = COMPLETE_OPTIONS) -> None:
    """`complete(**options)` accepts only the documented options: a typo is a TypeError, never
    a silently ignored setting."""
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unknown provider option(s): {sorted(unknown)}; known: {sorted(known)}")


class AuthError(ProviderError):
    """The server rejected the key (or none was sent). Never retried."""

    status = "auth_error"


class RateLimited(ProviderError):
    """Still rate limited when the retry count or time budget ran out."""

    status = "rate_limited"


class ContextLengthExceeded(ProviderError):
    """The prompt (plus the requested output) does not fit the model's context."""

    status = "context_length_exceeded"

    def __init__(
        self,
        message: str,
        *,
        limit: int | None = None,
        requested: int | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, hint=hint)
        self.limit = limit
        self.requested = requested
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens


class StreamInterrupted(ProviderError):
    """The answer stream stopped before the answer was complete, on every attempt."""

    status = "stream_interrupted"


class ProviderUnavailable(ProviderError):
    """Network failures, timeouts or 5xx answers until the retries ran out."""

    status = "provider_unavailable"


class BadRequest(ProviderError):
    """The server refused the request (4xx other than auth, rate limit and context length)."""

    status = "bad_request"


@dataclass
class ToolCall:
    id: str
    name: str
    raw_arguments: str
    arguments: dict[str, Any] | None = None  # None when raw_arguments is not a JSON object
    parse_error: str | None = None  # why `arguments` is None, phrased for the model

    @classmethod
    def parse(cls, id: str, name: str, raw_arguments: str) -> ToolCall:
        raw = raw_arguments or ""
        try:
            value = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            return cls(
                id, name, raw, None, f"arguments are not valid JSON ({exc.msg} at char {exc.pos})"
            )
        if not isinstance(value, dict):
            return cls(id, name, raw, None, "arguments must be a JSON object")
        return cls(id, name, raw, value, None)

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.raw_arguments},
        }


@dataclass
class Usage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    # True when the server reported no usage and the numbers are the client's estimate (so a
    # cost limit still works); not part of to_dict(), whose keys are the output contract.
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.output_tokens + other.output_tokens,
            self.estimated or other.estimated,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass
class Reply:
    text: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    # Provider-specific extras that must travel with the assistant message in later requests
    # (e.g. the exact DSML bytes the local engine produced). Keys start with "_" and are
    # stripped before anything is sent over HTTP.
    extra: dict[str, Any] = field(default_factory=dict)

    def to_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.reasoning:
            msg["reasoning_content"] = self.reasoning
        if self.tool_calls:
            msg["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        msg.update(self.extra)
        return msg


class StreamSink(Protocol):
    def on_text(self, delta: str) -> None: ...
    def on_reasoning(self, delta: str) -> None: ...


@runtime_checkable
class Provider(Protocol):
    name: str  # "deepseek" | "openai" | "local"
    model: str

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        stream_to: StreamSink | None = None,
        **options: Any,
    ) -> Reply: ...

    def cost(self, usage: Usage) -> float:
        """USD for `usage` at this provider's configured prices (0.0 for local)."""
        ...

    def close(self) -> None: ...
