"""A scripted OpenAI-compatible chat server for tests: real HTTP on 127.0.0.1, its own thread.

Stable API (other test packages build on it; extend, do not break):

    from tests.support.scripted_server import ScriptedServer, Scenario, Turn, Fault, call

    scenario = Scenario([
        Turn.tool_calls([call("read_file", {"path": "a.py"})], reasoning="Look at a.py first."),
        Fault.rate_limit(retry_after=0),              # one request answered 429, then ...
        Turn.text("`a.py:3` defines main.", expect=["def main"]),
    ])
    with ScriptedServer(scenario) as srv:
        srv.base_url          # "http://127.0.0.1:PORT/v1"
        srv.api_key           # a fake key; srv.env() -> OPENAI_BASE_URL/OPENAI_API_KEY for a subprocess
        ...                   # run the client / the CLI against it
        srv.requests          # every chat request: .body (parsed JSON), .headers, .messages, .text
        srv.assert_done()     # every step used, no broken expectation or protocol rule

Each POST to /v1/chat/completions consumes the next *step* of the scenario. A step is either a
`Turn` (what the model answers) or a `Fault` (what goes wrong on that request).

Turns
    Turn.text("answer", reasoning="...")       final answer (finish_reason "stop")
    Turn.tool_calls([call(name, {args}), ...])  one or several tool calls (finish_reason "tool_calls")
    call(name, raw='{"path": "a.py"')           arguments sent verbatim (malformed JSON on purpose)
    Turn(...) keywords: stream=None (follow the request) | True | False, usage={"prompt_tokens",
    "cached_tokens", "completion_tokens"} (override the computed numbers), finish_reason,
    chunk_chars / arg_chunk_chars (how finely text and arguments are split across SSE chunks),
    first_byte_delay_s, chunk_delay_s, tail_delay_s, expect=[substring | callable(request) -> error or None],
    expect_tools=[tool names that must be offered].

Faults
    Fault.status(code, message=..., retry_after=None)  any HTTP error with an OpenAI error body
    Fault.rate_limit(retry_after=1)                   429 + Retry-After
    Fault.server_error(503)                           500/502/503/...
    Fault.unauthorized()                              401; the body echoes the key it got, like
                                                      some real APIs, so clients must scrub it
    Fault.context_length(limit=..., style="deepseek"|"vllm"|"openai"|"llamacpp")
    Fault.cut_stream(Turn.text("..."), after_chunks=3, clean=False)
                                                      stream stops mid-answer: clean=False drops
                                                      the connection inside the chunked body;
                                                      clean=True ends the body without a finish
                                                      reason or [DONE]
    Fault.disconnect()                                connection closed before any response
    Fault.slow_first_byte(seconds, Turn.text(...))    nothing is sent for `seconds`, then the turn
    Fault.garbage()                                   200 with a body that is not JSON
    Fault.raw_sse([{...chunk...}, "text", ...])       200 with exactly these SSE `data:` events
                                                      (dicts as JSON), for servers whose chunks
                                                      have an odd shape; no [DONE] is added
    Fault.status(...) / server_error / rate_limit take headers={...} (e.g. retry-after-ms)

Scenario options
    usage="deepseek" (prompt_cache_hit/miss_tokens, usage in the last chunk)
        | "openai" (prompt_tokens_details.cached_tokens, separate usage chunk only when the request
          asks for stream_options.include_usage) | "none"
    reasoning_rule=True   DeepSeek's rule: an assistant turn that made tool calls with reasoning
                          must carry that reasoning_content in every later request, else HTTP 400
    strict_messages=True  OpenAI's message rules (every tool call answered by a tool message
                          before the next turn, no tool message without its call, no
                          "_"-prefixed keys leaking into a message), else HTTP 400
    keepalive=False       send ": keep-alive" SSE comments before the first chunk (DeepSeek does)
    split_bytes=None      split every network write into pieces of this many bytes (splits
                          UTF-8 characters and SSE lines across chunks)
    cache_unit=64         cached prompt tokens = longest common prefix with an earlier request,
                          rounded down to this many tokens (realistic prefix caching)
    Scenario.load(path) / Scenario.from_dict(d) read the same from a .json or .toml file; see
    tests/support/scenarios/*.toml.

Failing loudly: a request after the last step is answered with HTTP 500 (body type
"scenario_exhausted", Retry-After: 0 so retrying clients fail fast) and sets `srv.exhausted`;
broken expectations (the step is used up) and rule violations (the step is not) answer 400 and
are listed in `srv.errors`. `assert_done()` raises on any of these and on unused steps.

More: `ScriptedServer(scenario, api_key=..., check_key=True)` answers 401 to any other key
without using a step; `GET /v1/models` works (`srv.other_requests`); `srv.add(*steps)` extends
a running scenario; `srv.steps_left`; each RecordedRequest has `.bearer`, `.tool_names`,
`.status`, and perf_counter timestamps (`first_byte_at`, `body_done_at`, `last_byte_sent_at`);
`retry_after_date(seconds)` makes an HTTP-date Retry-After value.
Tokens are estimated as ceil(chars / 4) unless `Scenario(tokenizer=callable)` is given.
"""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEFAULT_API_KEY = "sk-scripted-0123456789abcdef0123456789abcdef"


def approx_tokens(text: str) -> int:
    return (len(text) + 3) // 4


# ----------------------------------------------------------------------------- scenario model


@dataclass
class ScriptedCall:
    name: str
    arguments: dict[str, Any] | None = None
    raw: str | None = None  # sent verbatim when given (malformed JSON on purpose)
    id: str | None = None  # default: call_<n>, unique per server

    def raw_arguments(self) -> str:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.arguments or {}, ensure_ascii=False)


def call(
    name: str,
    arguments: dict[str, Any] | None = None,
    *,
    raw: str | None = None,
    id: str | None = None,
) -> ScriptedCall:
    """A tool call the scripted model makes."""
    return ScriptedCall(name, arguments, raw, id)


Expectation = str | Callable[["RecordedRequest"], str | None]


@dataclass
class Turn:
    text: str = ""
    reasoning: str = ""
    calls: list[ScriptedCall] = field(default_factory=list)
    finish_reason: str | None = None
    stream: bool | None = None
    usage: dict[str, int] | None = None
    chunk_chars: int = 7
    arg_chunk_chars: int = 5
    first_byte_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    tail_delay_s: float = 0.0  # pause before the finishing chunk (benchmarks: tail latency alone)
    expect: list[Expectation] = field(default_factory=list)
    expect_tools: list[str] | None = None

    @classmethod
    def text_(cls, text: str, **kw: Any) -> Turn:
        return cls(text=text, **kw)

    @classmethod
    def tool_calls(cls, calls: Iterable[ScriptedCall], *, text: str = "", **kw: Any) -> Turn:
        return cls(text=text, calls=list(calls), **kw)

    @property
    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.calls else "stop")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        d = dict(d)
        calls = [
            ScriptedCall(c["name"], c.get("arguments"), c.get("raw"), c.get("id"))
            for c in d.pop("tool_calls", [])
        ]
        known = set(cls.__dataclass_fields__) - {"calls"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown turn keys: {sorted(unknown)}")
        return cls(calls=calls, **d)


# `Turn.text("...")` reads better than `Turn(text="...")`, but `text` is also the field name; a
# descriptor lets the same name work on the class (constructor) and on instances (the field).
class _TextCtor:
    def __get__(self, obj: Turn | None, owner: type[Turn]) -> Any:
        if obj is None:
            return owner.text_
        return obj.__dict__.get("text", "")

    def __set__(self, obj: Turn, value: str) -> None:
        obj.__dict__["text"] = value


Turn.text = _TextCtor()  # type: ignore[assignment]


@dataclass
class Fault:
    kind: str
    status: int = 500
    message: str | None = None
    retry_after: float | str | None = None
    error_type: str | None = None
    turn: Turn | None = None
    after_chunks: int = 3
    clean: bool = False
    delay_s: float = 0.0
    limit: int = 1_048_576
    completion_tokens: int = 0
    style: str = "deepseek"
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers
    events: list[Any] = field(default_factory=list)  # raw_sse: data events, sent as given

    @classmethod
    def status_(
        cls,
        status: int,
        message: str | None = None,
        *,
        retry_after: float | str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        return cls(
            "status",
            status=status,
            message=message,
            retry_after=retry_after,
            error_type=error_type,
            headers=dict(headers or {}),
        )

    @classmethod
    def rate_limit(
        cls, retry_after: float | str | None = 1, *, headers: dict[str, str] | None = None
    ) -> Fault:
        return cls.status_(
            429,
            "Rate limit reached. Please retry later.",
            retry_after=retry_after,
            error_type="rate_limit_error",
            headers=headers,
        )

    @classmethod
    def server_error(
        cls,
        status: int = 500,
        *,
        retry_after: float | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        return cls.status_(
            status,
            f"scripted upstream failure ({status})",
            retry_after=retry_after,
            error_type="server_error",
            headers=headers,
        )

    @classmethod
    def raw_sse(cls, events: Iterable[Any]) -> Fault:
        return cls("raw_sse", status=200, events=list(events))

    @classmethod
    def unauthorized(cls) -> Fault:
        return cls("unauthorized", status=401)

    @classmethod
    def context_length(
        cls, limit: int = 1_048_576, *, completion_tokens: int = 0, style: str = "deepseek"
    ) -> Fault:
        return cls(
            "context_length",
            status=400,
            limit=limit,
            completion_tokens=completion_tokens,
            style=style,
        )

    @classmethod
    def cut_stream(
        cls, turn: Turn | None = None, *, after_chunks: int = 3, clean: bool = False
    ) -> Fault:
        turn = turn or Turn(text="This answer stops in the middle of a sentence because the conn")
        return cls("cut_stream", turn=turn, after_chunks=after_chunks, clean=clean)

    @classmethod
    def disconnect(cls) -> Fault:
        return cls("disconnect")

    @classmethod
    def slow_first_byte(cls, seconds: float, turn: Turn | None = None) -> Fault:
        return cls("slow", delay_s=seconds, turn=turn or Turn(text="late answer"))

    @classmethod
    def garbage(cls) -> Fault:
        return cls("garbage", status=200)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fault:
        d = dict(d)
        kind = d.pop("fault")
        turn = d.pop("turn", None)
        if turn is not None:
            d["turn"] = Turn.from_dict(turn)
        makers: dict[str, Callable[..., Fault]] = {
            "status": cls.status_,
            "rate_limit": cls.rate_limit,
            "server_error": cls.server_error,
            "unauthorized": cls.unauthorized,
            "context_length": cls.context_length,
            "cut_stream": cls.cut_stream,
            "disconnect": cls.disconnect,
            "slow_first_byte": cls.slow_first_byte,
            "garbage": cls.garbage,
            "raw_sse": cls.raw_sse,
        }
        if kind not in makers:
            raise ValueError(f"unknown fault {kind!r}; known: {sorted(makers)}")
        return makers[kind](**d)


class _StatusCtor:
    """`Fault.status(429, ...)` constructs; `fault.status` is the HTTP code (see _TextCtor)."""

    def __get__(self, obj: Fault | None, owner: type[Fault]) -> Any:
        if obj is None:
            return owner.status_
        return obj.__dict__.get("status", 500)

    def __set__(self, obj: Fault, value: int) -> None:
        obj.__dict__["status"] = value


Fault.status = _StatusCtor()  # type: ignore[assignment]

Step = Turn | Fault


@dataclass
class Scenario:
    steps: list[Step] = field(default_factory=list)
    usage: str = "deepseek"
    reasoning_rule: bool = True
    strict_messages: bool = True
    keepalive: bool = False
    split_bytes: int | None = None
    cache_unit: int = 64
    tokenizer: Callable[[str], int] | None = None

    def __post_init__(self) -> None:
        if self.usage not in ("deepseek", "openai", "none"):
            raise ValueError(f"usage must be deepseek|openai|none, not {self.usage!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scenario:
        d = dict(d)
        raw_steps = d.pop("steps", [])
        steps: list[Step] = [
            Fault.from_dict(s) if "fault" in s else Turn.from_dict(s) for s in raw_steps
        ]
        return cls(steps=steps, **d)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls.from_dict(data)


# ----------------------------------------------------------------------------- recorded requests


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    raw: bytes
    body: Any  # parsed JSON, or None when the body is not JSON
    step: int | None = None  # index of the scenario step that answered, None for rule violations
    status: int = 0  # the HTTP status the server answered with
    first_byte_at: float = 0.0  # time.perf_counter() when the request line arrived
    body_done_at: float = 0.0  # ... when the whole body had been read
    last_byte_sent_at: float = 0.0  # ... when the server wrote the last byte of its answer

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("messages") or [])

    @property
    def tool_names(self) -> list[str]:
        return [t.get("function", {}).get("name", "") for t in (self.body or {}).get("tools") or []]

    @property
    def text(self) -> str:
        """Every message's content, reasoning and tool-call arguments, joined (for `expect`)."""
        return "\n".join(_message_texts(self.messages))

    @property
    def bearer(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _message_texts(messages: list[dict[str, Any]]) -> Iterator[str]:
    for m in messages:
        yield _content_text(m.get("content"))
        if m.get("reasoning_content"):
            yield m["reasoning_content"]
        for c in m.get("tool_calls") or []:
            yield c.get("function", {}).get("arguments", "")


def _render_prompt(body: dict[str, Any]) -> str:
    """A canonical rendering whose prefixes behave like a chat template's (for cache hits)."""
    parts = [json.dumps(body.get("tools") or [], sort_keys=True)]
    for m in body.get("messages") or []:
        parts.append(f"<{m.get('role')}>")
        if m.get("reasoning_content"):
            parts.append(m["reasoning_content"])
        parts.append(_content_text(m.get("content")))
        for c in m.get("tool_calls") or []:
            parts.append(json.dumps(c, sort_keys=True))
    return "".join(parts)


def _common_prefix_len(a: str, b: str) -> int:
    # Binary search over slice equality: comparisons run in C, fine for multi-megabyte prompts.
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ----------------------------------------------------------------------------- the server


class _Abort(Exception):
    """The client went away; stop writing."""


class ScriptedServer:
    def __init__(
        self,
        scenario: Scenario | Iterable[Step],
        *,
        api_key: str = DEFAULT_API_KEY,
        check_key: bool = False,
        model: str = "deepseek-v4-flash",
    ):
        self.scenario = scenario if isinstance(scenario, Scenario) else Scenario(list(scenario))
        self.api_key = api_key
        self.check_key = check_key  # answer 401 to any other key (without consuming a step)
        self.model = model
        self.requests: list[RecordedRequest] = []  # chat requests (including rejected ones)
        self.other_requests: list[RecordedRequest] = []  # /models and unknown paths
        self.errors: list[str] = []
        self.exhausted = False
        self._next_step = 0
        self._call_counter = 0
        self._reasoning_by_call: dict[str, str] = {}
        self._prompts: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> ScriptedServer:
        handler = type("_BoundHandler", (_Handler,), {"server_state": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False  # keep-alive handler threads must not block shutdown
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="scripted-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def env(self) -> dict[str, str]:
        """Environment variables that point an `openai` provider (e.g. the CLI) at this server."""
        return {"OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": self.api_key}

    @property
    def steps_used(self) -> int:
        return self._next_step

    @property
    def steps_left(self) -> int:
        return len(self.scenario.steps) - self._next_step

    def add(self, *steps: Step) -> None:
        """Append steps while the server runs."""
        with self._lock:
            self.scenario.steps.extend(steps)

    def assert_done(self) -> None:
        problems = list(self.errors)
        if self.steps_left:
            problems.append(f"{self.steps_left} scenario step(s) never requested")
        if problems:
            raise AssertionError("scripted server: " + "; ".join(problems))

    # -- internals used by the handler
    def _take_step(self) -> tuple[int, Step] | None:
        with self._lock:
            if self._next_step >= len(self.scenario.steps):
                return None
            index = self._next_step
            self._next_step += 1
            return index, self.scenario.steps[index]

    def _new_call_id(self) -> str:
        with self._lock:
            self._call_counter += 1
            return f"call_{self._call_counter:04d}"

    def _tokens(self, text: str) -> int:
        return (self.scenario.tokenizer or approx_tokens)(text)

    def _prompt_usage(self, body: dict[str, Any]) -> tuple[int, int]:
        """(prompt tokens, cached prompt tokens) with cache hits from earlier requests' prefixes."""
        prompt = _render_prompt(body)
        with self._lock:
            previous = list(self._prompts[-16:])
            self._prompts.append(prompt)
        best = max((_common_prefix_len(prompt, p) for p in previous), default=0)
        total = self._tokens(prompt)
        unit = max(1, self.scenario.cache_unit)
        cached = min(total, self._tokens(prompt[:best]) // unit * unit) if best else 0
        return total, cached

    def _check_messages(self, req: RecordedRequest) -> str | None:
        body = req.body
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("messages"), list)
            or not body["messages"]
        ):
            return "request body must be a JSON object with a non-empty 'messages' list"
        messages = body["messages"]
        if self.scenario.strict_messages:
            pending: list[str] = []
            for i, m in enumerate(messages):
                if not isinstance(m, dict) or m.get("role") not in (
                    "system",
                    "user",
                    "assistant",
                    "tool",
                ):
                    return f"messages[{i}]: invalid message or role"
                leaked = [k for k in m if k.startswith("_")]
                if leaked:
                    return f"messages[{i}]: unknown field(s) {leaked} (client-private keys must not be sent)"
                if m["role"] == "tool":
                    cid = m.get("tool_call_id")
                    if cid not in pending:
                        return (
                            f"messages[{i}]: Messages with role 'tool' must be a response to a "
                            f"preceding message with 'tool_calls' (tool_call_id {cid!r})"
                        )
                    pending.remove(cid)
                    continue
                if pending:
                    return (
                        f"messages[{i}]: An assistant message with 'tool_calls' must be followed by "
                        f"tool messages responding to each 'tool_call_id'. Missing: {pending}"
                    )
                if m["role"] == "assistant":
                    pending = [c.get("id") for c in m.get("tool_calls") or []]
        thinking_off = (body.get("thinking") or {}).get("type") == "disabled"
        if self.scenario.reasoning_rule and not thinking_off:
            for i, m in enumerate(messages):
                if m.get("role") != "assistant" or not m.get("tool_calls"):
                    continue
                ids = [c.get("id") for c in m["tool_calls"]]
                wanted = next(
                    (self._reasoning_by_call[c] for c in ids if c in self._reasoning_by_call), None
                )
                if wanted and m.get("reasoning_content") != wanted:
                    return (
                        "The reasoning_content in the thinking mode must be passed back to the API. "
                        f"(messages[{i}])"
                    )
        return None

    def _check_expectations(self, turn: Turn, req: RecordedRequest) -> str | None:
        for exp in turn.expect:
            if isinstance(exp, str):
                if exp not in req.text:
                    return f"expected the request to contain {exp!r}"
            else:
                problem = exp(req)
                if problem:
                    return problem
        if turn.expect_tools is not None:
            missing = sorted(set(turn.expect_tools) - set(req.tool_names))
            if missing:
                return f"expected tools {missing} to be offered; got {req.tool_names}"
        return None


class _Handler(BaseHTTPRequestHandler):
    server_state: ScriptedServer
    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections end eventually

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def handle_one_request(self) -> None:
        self._first_byte_at = 0.0
        # The stdlib reads the request line inside handle_one_request; peek so the arrival time
        # of the first request byte is recorded (the benchmark's time-to-first-byte).
        try:
            self.rfile.peek(1)  # type: ignore[attr-defined]
        except (OSError, ValueError):
            pass
        self._first_byte_at = time.perf_counter()
        super().handle_one_request()

    # -- plumbing
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self) -> RecordedRequest:
        raw = self._read_body()
        done = time.perf_counter()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            raw=raw,
            body=body,
            first_byte_at=self._first_byte_at,
            body_done_at=done,
        )

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            raise _Abort() from exc

    def _send_json(
        self, req: RecordedRequest, status: int, obj: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(obj).encode()
        req.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self._write(data)
        req.last_byte_sent_at = time.perf_counter()

    def _send_error(
        self,
        req: RecordedRequest,
        status: int,
        message: str,
        error_type: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        err = {
            "message": message,
            "type": error_type,
            "param": None,
            "code": extra.pop("code", error_type),
        }
        err.update(extra)
        self._send_json(req, status, {"error": err}, headers)

    def _chunk(self, data: bytes) -> None:
        """One HTTP chunk per piece (pieces smaller than `split_bytes` when configured)."""
        split = self.server_state.scenario.split_bytes
        pieces = [data[i : i + split] for i in range(0, len(data), split)] if split else [data]
        for piece in pieces:
            self._write(b"%x\r\n%s\r\n" % (len(piece), piece))

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.server_state._stop.wait(seconds):
            raise _Abort()

    # -- routes
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        req = self._record()
        state = self.server_state
        with state._lock:
            state.other_requests.append(req)
        try:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                if state.check_key and req.bearer != state.api_key:
                    return self._unauthorized(req)
                self._send_json(
                    req, 200, {"object": "list", "data": [{"id": state.model, "object": "model"}]}
                )
            else:
                self._send_error(req, 404, f"no route {self.path}", "not_found")
        except _Abort:
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        req = self._record()
        state = self.server_state
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            with state._lock:
                state.other_requests.append(req)
            try:
                self._send_error(req, 404, f"no route {self.path}", "not_found")
            except _Abort:
                self.close_connection = True
            return
        with state._lock:
            state.requests.append(req)
        try:
            self._chat(req)
        except _Abort:
            self.close_connection = True

    def _unauthorized(self, req: RecordedRequest) -> None:
        # Echo the key like some real APIs do: the client must scrub it from what it reports.
        self._send_error(
            req,
            401,
            f"Authentication Fails, Your api key: {req.bearer or ''} is invalid",
            "authentication_error",
            code="invalid_api_key",
        )

    def _chat(self, req: RecordedRequest) -> None:
        state = self.server_state
        if state.check_key and req.bearer != state.api_key:
            return self._unauthorized(req)
        problem = state._check_messages(req)
        if problem:
            with state._lock:
                state.errors.append(f"request {len(state.requests)}: {problem}")
            return self._send_error(req, 400, problem, "invalid_request_error")
        taken = state._take_step()
        if taken is None:
            state.exhausted = True
            message = (
                f"scripted server: scenario exhausted — request {len(state.requests)} arrived "
                f"but the scenario has only {len(state.scenario.steps)} step(s)"
            )
            with state._lock:
                state.errors.append(message)
            return self._send_error(
                req, 500, message, "scenario_exhausted", headers={"Retry-After": "0"}
            )
        index, step = taken
        req.step = index
        if isinstance(step, Fault):
            return self._fault(req, step)
        return self._turn(req, step)

    def _fault(self, req: RecordedRequest, fault: Fault) -> None:
        if fault.kind == "status":
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["Retry-After"] = ra if isinstance(ra, str) else f"{ra:g}"
            default_type = (
                "rate_limit_error"
                if fault.status == 429
                else ("server_error" if fault.status >= 500 else "invalid_request_error")
            )
            return self._send_error(
                req,
                fault.status,
                fault.message or f"scripted error {fault.status}",
                fault.error_type or default_type,
                headers=headers,
            )
        if fault.kind == "unauthorized":
            return self._unauthorized(req)
        if fault.kind == "context_length":
            return self._context_length(req, fault)
        if fault.kind == "disconnect":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if fault.kind == "garbage":
            req.status = 200
            data = b"<html>502 Bad Gateway from a confused proxy"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return self._write(data)
        if fault.kind == "raw_sse":
            req.status = 200
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in fault.events:
                data = event if isinstance(event, str) else json.dumps(event)
                self._chunk(b"data: " + data.encode() + b"\n\n")
            self._write(b"0\r\n\r\n")
            req.last_byte_sent_at = time.perf_counter()
            return None
        if fault.kind == "slow":
            self._sleep(fault.delay_s)
            assert fault.turn is not None
            return self._turn(req, fault.turn)
        if fault.kind == "cut_stream":
            assert fault.turn is not None
            return self._turn(req, fault.turn, cut_after=fault.after_chunks, clean_cut=fault.clean)
        raise AssertionError(f"unknown fault {fault.kind}")  # pragma: no cover

    def _context_length(self, req: RecordedRequest, fault: Fault) -> None:
        prompt, _ = self.server_state._prompt_usage(req.body)
        completion = fault.completion_tokens or int(req.body.get("max_tokens") or 0)
        total = prompt + completion
        limit = fault.limit
        # DeepSeek and vLLM/SGLang word it alike; they differ in the error type and code.
        split_msg = (
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{total} tokens ({prompt} in the messages, {completion} in the completion). "
            "Please reduce the length of the messages or completion."
        )
        if fault.style == "vllm":
            return self._send_error(req, 400, split_msg, "BadRequestError", code=400)
        if fault.style == "openai":
            msg = (
                f"This model's maximum context length is {limit} tokens. However, your messages "
                f"resulted in {prompt} tokens. Please reduce the length of the messages."
            )
            return self._send_error(
                req, 400, msg, "invalid_request_error", code="context_length_exceeded"
            )
        if fault.style == "llamacpp":
            return self._send_error(
                req,
                400,
                "the request exceeds the available context size, try increasing it",
                "exceed_context_size_error",
                code=400,
                n_prompt_tokens=prompt,
                n_ctx=limit,
            )
        return self._send_error(req, 400, split_msg, "invalid_request_error")

    # -- answering a turn
    def _usage(
        self, req: RecordedRequest, turn: Turn, calls: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        state = self.server_state
        style = state.scenario.usage
        prompt, cached = state._prompt_usage(req.body)
        reasoning_tokens = state._tokens(turn.reasoning)
        completion = (
            state._tokens(turn.text)
            + reasoning_tokens
            + sum(state._tokens(c["function"]["name"] + c["function"]["arguments"]) for c in calls)
        )
        if turn.usage:
            prompt = turn.usage.get("prompt_tokens", prompt)
            cached = turn.usage.get("cached_tokens", cached)
            completion = turn.usage.get("completion_tokens", completion)
        if style == "none":
            return None
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if style == "deepseek":
            usage["prompt_cache_hit_tokens"] = cached
            usage["prompt_cache_miss_tokens"] = prompt - cached
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
        else:
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return usage

    def _turn(
        self,
        req: RecordedRequest,
        turn: Turn,
        *,
        cut_after: int | None = None,
        clean_cut: bool = False,
    ) -> None:
        state = self.server_state
        problem = state._check_expectations(turn, req)
        if problem:
            with state._lock:
                state.errors.append(f"step {req.step}: {problem}")
            return self._send_error(
                req, 400, f"scripted expectation failed: {problem}", "scenario_expectation"
            )
        calls = []
        for c in turn.calls:
            cid = c.id or state._new_call_id()
            calls.append(
                {
                    "id": cid,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.raw_arguments()},
                }
            )
            if turn.reasoning:
                with state._lock:
                    state._reasoning_by_call[cid] = turn.reasoning
        usage = self._usage(req, turn, calls)
        model = (req.body or {}).get("model") or state.model
        completion_id = f"chatcmpl-scripted-{len(state.requests)}"
        created = int(time.time())
        stream = turn.stream if turn.stream is not None else bool(req.body.get("stream"))
        self._sleep(turn.first_byte_delay_s)
        if not stream:
            message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
            if turn.reasoning:
                message["reasoning_content"] = turn.reasoning
            if calls:
                message["tool_calls"] = calls
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": turn.finish}],
            }
            if usage is not None:
                obj["usage"] = usage
            return self._send_json(req, 200, obj)

        req.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if state.scenario.keepalive:
            self._chunk(b": keep-alive\n\n")
            self._chunk(b": keep-alive\n\n")

        def chunk(
            delta: dict[str, Any] | None, finish: str | None = None, *, with_usage: bool = False
        ) -> bytes:
            obj = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            if with_usage:
                obj["usage"] = usage
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

        events: list[bytes] = [chunk({"role": "assistant", "content": ""})]
        for piece in _pieces(turn.reasoning, turn.chunk_chars):
            events.append(chunk({"reasoning_content": piece}))
        for piece in _pieces(turn.text, turn.chunk_chars):
            events.append(chunk({"content": piece}))
        for i, c in enumerate(calls):
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": c["id"],
                                "type": "function",
                                "function": {"name": c["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for piece in _pieces(c["function"]["arguments"], turn.arg_chunk_chars):
                events.append(
                    chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                )
        finish_at = len(events)
        deepseek_usage = usage is not None and state.scenario.usage == "deepseek"
        events.append(chunk({}, turn.finish, with_usage=deepseek_usage))
        wants_usage = bool((req.body.get("stream_options") or {}).get("include_usage"))
        if usage is not None and state.scenario.usage == "openai" and wants_usage:
            events.append(chunk(None, with_usage=True))
        events.append(b"data: [DONE]\n\n")

        last = len(events) - 1
        for n, event in enumerate(events):
            if cut_after is not None and n >= cut_after:
                if clean_cut:
                    self._write(b"0\r\n\r\n")
                    req.last_byte_sent_at = time.perf_counter()
                else:
                    # Drop the connection inside the chunked body: the client sees an incomplete read.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._sleep(turn.chunk_delay_s + (turn.tail_delay_s if n == finish_at else 0.0))
            if n == last and not state.scenario.split_bytes:
                # [DONE] and the end of the body in one write, so last_byte_sent_at is exact.
                self._write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))
            else:
                self._chunk(event)
        if state.scenario.split_bytes:
            self._write(b"0\r\n\r\n")
        req.last_byte_sent_at = time.perf_counter()


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)]


def retry_after_date(seconds_from_now: float) -> str:
    """An HTTP-date Retry-After value (the other form the header may take)."""
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)
