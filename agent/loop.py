"""The agent loop: query the model, run its tool calls, observe, repeat — until done or a limit.

Control flow is a tiny exception hierarchy (as in mini-swe-agent): `Recoverable` tells the model
something and the loop goes on; `Stop` ends the run with a status. The conversation only grows
(append-only), so a provider's prefix cache keeps hitting on the packed repository.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import prompts
from agent.errors import ExitCode, ProviderError, UsageError
from agent.providers.base import Provider, Reply, StreamSink, ToolCall, Usage
from agent.providers.v4_format import CACHE_BREAKPOINT
from agent.transcript import Listener, Transcript
from agent.undo import MUTATING_TOOLS, ChangeTracker, FileChange, deferred_interrupt
from tools.base import Observation, Tool

# The same failing call, or a reply that does nothing, this many times in a row ends the run.
REPEAT_LIMIT = 3

A = TypeVar("A", bound="Agent")


class Recoverable(Exception):
    """Tell the model (as a user message) and continue."""


class Stop(Exception):
    """End the run. `kind` says why: done | turns | cost | time | iterations | stuck | provider."""

    def __init__(self, kind: str, message: str = ""):
        super().__init__(message or kind)
        self.kind = kind
        self.message = message or kind


class RunTimeout(BaseException):
    """Raised by the wall-clock alarm; a BaseException so no `except Exception` swallows it."""


@dataclass
class Limits:
    max_turns: int = 30
    max_cost: float | None = None  # USD
    timeout_s: float | None = None


class Agent:
    """The loop shared by `ask` and `fix`; subclasses decide what a turn's outcome means."""

    def __init__(
        self,
        provider: Provider,
        tools: list[Tool],
        messages: list[dict[str, Any]],
        limits: Limits,
        transcript: Transcript,
        *,
        prompt_tokens: int = 0,
        tracker: ChangeTracker | None = None,
        stream_to: StreamSink | None = None,
    ):
        self.provider, self.tools, self.limits, self.log = (
            provider,
            {t.name: t for t in tools},
            limits,
            transcript,
        )
        self.schemas = [t.schema() for t in tools]
        # Their tokens are `prompt_tokens` (counted by the caller).
        self.messages: list[dict[str, Any]] = list(messages)
        self.tracker, self.stream_to = tracker, stream_to
        self.turns, self.usage, self.cost = 0, Usage(), 0.0
        self.started = time.monotonic()
        self._logged = 0  # messages already written to the transcript
        # What the next request re-sends: the last prompt plus everything added since (for --max-cost).
        self._last_prompt_tokens, self._unsent_tokens = 0, prompt_tokens
        self._repeats: tuple[Any, int] = (None, 0)

    def run(self) -> Stop:
        while True:
            try:
                self.step()
            except Recoverable as note:
                self.add({"role": "user", "content": str(note)})
            except Stop as stop:
                return stop
            except ProviderError as exc:
                return Stop("provider", str(exc))
            except RunTimeout:
                return Stop("time", f"the time limit of {self.limits.timeout_s:g}s was reached")

    def step(self) -> None:
        self.check_limits()
        reply = self.query()
        changed = [path for call in reply.tool_calls for path in self.execute(call)]
        self.after_turn(reply, changed)

    def query(self) -> Reply:
        sink = _RecordingSink(self.stream_to)
        with self._alarm():
            reply = self.provider.complete(self.messages, self.schemas, stream_to=sink)
        new = self.messages[self._logged :]
        self.turns += 1
        self.usage += reply.usage
        self.cost = self.provider.cost(self.usage)
        self._last_prompt_tokens, self._unsent_tokens = reply.usage.input_tokens, 0
        message = reply.to_message()
        self.add(message)
        self._logged = len(self.messages)
        self.log.emit(
            "turn",
            turn=self.turns,
            new_messages=new,
            reply=message,
            finish_reason=reply.finish_reason,
            usage=reply.usage.to_dict(),
            retries=sink.retries,  # the provider's retries before this reply (429, cut stream, ...)
        )
        self.log.emit(
            "usage", turn=self.turns, **self.usage.to_dict(), cost_usd=round(self.cost, 6)
        )
        return reply

    def execute(self, call: ToolCall) -> list[str]:
        """Run one tool call and append its observation; returns the paths it changed."""
        args = call.arguments if call.arguments is not None else call.raw_arguments
        self.log.emit("tool_call", turn=self.turns, id=call.id, name=call.name, arguments=args)
        started = time.monotonic()
        obs, changes = self.run_tool(call)
        repeats = self.count_repeat(call, obs)
        text = (
            obs.text if repeats < 2 else obs.text + "\n\n" + nudge("nudge_repeated", count=repeats)
        )
        self.add({"role": "tool", "tool_call_id": call.id, "content": text})
        self.log.emit(
            "tool_result",
            turn=self.turns,
            id=call.id,
            name=call.name,
            ok=obs.ok,
            text=text,
            data=obs.data,
            elapsed_s=round(time.monotonic() - started, 3),
        )
        self.on_changed(call, changes)
        if repeats >= REPEAT_LIMIT:
            raise Stop(
                "stuck", f"the model repeated the same failing {call.name} call {repeats} times"
            )
        return [c.path for c in changes]

    def run_tool(self, call: ToolCall) -> tuple[Observation, list[FileChange]]:
        """Dispatch; every failure becomes an observation the model can act on, never a crash."""
        from tools import dispatch

        known = call.arguments is not None and call.name in self.tools
        if known and self.tracker is not None:
            self.tracker.before_tool(call.name, call.arguments)
        for tool in self.tools.values():  # a command never outlives --timeout
            tool.ctx.command_timeout_s = max(1.0, min(tool.ctx.command_timeout_s, self.remaining()))
        # A file write finishes (or never starts) even if Ctrl-C arrives meanwhile.
        guard = deferred_interrupt() if call.name in MUTATING_TOOLS else nullcontext()
        try:
            with guard:
                obs = dispatch(
                    list(self.tools.values()),
                    call.name,
                    call.arguments if call.arguments is not None else call.parse_error,
                )
        except Exception as exc:  # noqa: BLE001 - a broken tool must not end the run
            obs = Observation(
                f"Error: {call.name} failed unexpectedly: {type(exc).__name__}: {exc}", ok=False
            )
        if call.parse_error and call.name not in self.tools:
            # A malformed call whose name was not read (or is unknown): "unknown tool" alone
            # would hide what was wrong with how it was written.
            obs = Observation(
                f"{obs.text}\nThe call could not be read either: {call.parse_error}",
                ok=False,
                data=obs.data,
            )
        changes = (
            self.tracker.after_tool(call.name, call.arguments) if known and self.tracker else []
        )
        return obs, changes

    def add(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._unsent_tokens += _count_tokens(message)

    def remaining(self) -> float:
        if self.limits.timeout_s is None:
            return float("inf")
        return self.limits.timeout_s - (time.monotonic() - self.started)

    def check_limits(self) -> None:
        lim = self.limits
        if self.turns >= lim.max_turns:
            raise Stop("turns", f"the turn limit ({lim.max_turns}) was reached")
        if self.remaining() <= 0:
            raise Stop("time", f"the time limit of {lim.timeout_s:g}s was reached")
        if lim.max_cost is not None:
            if self.cost >= lim.max_cost:
                raise Stop(
                    "cost",
                    f"the cost limit (${lim.max_cost:g}) was reached: spent ${self.cost:.4f}",
                )
            # The next request re-sends at least the whole conversation; even fully cached it costs this.
            tokens = self._last_prompt_tokens + self._unsent_tokens
            floor = self.provider.cost(Usage(input_tokens=tokens, cached_input_tokens=tokens))
            if self.cost + floor > lim.max_cost:
                raise Stop(
                    "cost",
                    f"the next request (~{tokens:,} input tokens, at least ${floor:.4f}) would "
                    f"exceed the cost limit (${lim.max_cost:g}); spent ${self.cost:.4f}",
                )

    def count_repeat(self, call: ToolCall, obs: Observation) -> int:
        """How many times in a row the model has now made this same failing call."""
        key = (call.name, call.raw_arguments, obs.text) if not obs.ok else None
        last, count = self._repeats
        self._repeats = (key, count + 1 if key is not None and key == last else 1)
        return self._repeats[1] if key is not None else 0

    def idle(self, note: str) -> None:
        """A reply that did nothing: nudge, but not forever."""
        last, count = self._repeats
        self._repeats = ("idle", count + 1 if last == "idle" else 1)
        if self._repeats[1] >= REPEAT_LIMIT:
            raise Stop("stuck", f"the model made no progress in {REPEAT_LIMIT} replies in a row")
        raise Recoverable(note)

    def after_turn(self, reply: Reply, changed: list[str]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_changed(self, call: ToolCall, changes: list[FileChange]) -> None:
        """Hook: files a tool call changed (fix records edits)."""

    @contextmanager
    def _alarm(self) -> Iterator[None]:
        """Interrupt a model call that would run past --timeout (main thread only)."""
        remaining = self.remaining()
        if remaining == float("inf") or threading.current_thread() is not threading.main_thread():
            yield
            return

        def fire(signum: int, frame: Any) -> None:
            raise RunTimeout

        previous = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.01))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


class _RecordingSink:
    """Passes the streamed answer on to the caller's sink and keeps the provider's retry notes,
    so the transcript shows a 429 or a cut stream that a turn survived."""

    def __init__(self, inner: StreamSink | None):
        self.inner = inner
        self.retries: list[str] = []

    def on_text(self, delta: str) -> None:
        if self.inner is not None:
            self.inner.on_text(delta)

    def on_reasoning(self, delta: str) -> None:
        if self.inner is not None:
            self.inner.on_reasoning(delta)

    def on_retry(self, message: str) -> None:
        self.retries.append(message)
        forward = getattr(self.inner, "on_retry", None)
        if callable(forward):
            forward(message)


def nudge(name: str, **values: object) -> str:
    return prompts.render(name, **values).strip()


def _count_tokens(message: dict[str, Any]) -> int:
    from agent.tokenizer import get_tokenizer

    text = str(message.get("content") or "") + str(message.get("reasoning_content") or "")
    for call in message.get("tool_calls") or ():
        text += call["function"]["name"] + call["function"]["arguments"]
    return get_tokenizer().count(text) if text else 0


# --- one run: settings, provider, tools, the packed prompt, the transcript and the result ------


@dataclass
class RunSetup:
    """What the caller (the CLI, a test, a script) decides about a run."""

    root: Path
    provider: Provider | None = None  # made from the settings when None
    # For load_settings: provider, model, base_url, model_path, ...
    flags: dict[str, Any] = field(default_factory=dict)
    budget: int | None = None
    listeners: list[Listener] = field(default_factory=list)
    stream_to: StreamSink | None = None
    yes: bool = False
    confirm: Callable[[str], bool] | None = None
    test_command: str | None = None
    test_timeout_s: float = 900.0


@dataclass
class RunResult:
    status: str = "error"
    exit_code: int = int(ExitCode.INTERNAL)
    error: str | None = None
    limit: str | None = None  # which limit stopped the run
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    context: dict[str, Any] | None = None
    provider: str = ""
    model: str = ""
    turns: int = 0
    elapsed_s: float = 0.0
    run_id: str = ""
    transcript: str | None = None
    # Values to redact from anything shown (the API key from any source); never in the JSON.
    secrets: list[str] = field(default_factory=list, repr=False, compare=False)

    def common_json(self, command: str) -> dict[str, Any]:
        return {
            "command": command,
            "status": self.status,
            "usage": {**self.usage.to_dict(), "cost_usd": round(self.cost_usd, 6)},
            "context": self.context,
            "provider": self.provider,
            "model": self.model,
            "turns": self.turns,
            "elapsed_s": round(self.elapsed_s, 3),
            "error": self.error,
            "limit": self.limit,
            "run_id": self.run_id,
            "transcript": self.transcript,
        }

    def to_json(self) -> dict[str, Any]:  # pragma: no cover - subclasses add their fields
        raise NotImplementedError


# Status and exit code per stop kind; `fix` maps turn/iteration limits to "tests still failing".
_OUTCOMES: dict[str, tuple[str, ExitCode]] = {
    "done": ("ok", ExitCode.OK),
    "turns": ("limit_reached", ExitCode.LIMIT),
    "cost": ("limit_reached", ExitCode.LIMIT),
    "time": ("limit_reached", ExitCode.LIMIT),
    "stuck": ("limit_reached", ExitCode.LIMIT),
    "iterations": ("tests_failing", ExitCode.TESTS_FAILING),
    "provider": ("provider_error", ExitCode.PROVIDER),
    "interrupted": ("interrupted", ExitCode.INTERRUPTED),
}


class Run:
    """The plumbing around an Agent: build everything, record everything, produce the result."""

    def __init__(self, setup: RunSetup, command: str, tool_kind: str):
        from agent.config import load_settings

        self.setup, self.command = setup, command
        self.root = setup.root.resolve()
        self.settings = load_settings(self.root, **setup.flags)
        if setup.provider is None:
            from agent.providers.factory import make_provider

            # ConfigError (exit 2) when no provider is configured or usable.
            self.provider: Provider = make_provider(self.settings)
        else:
            self.provider = setup.provider
        self.log = Transcript(command, secrets_=_provider_secrets(self.settings))
        for listener in setup.listeners:
            self.log.listen(listener)
        self.stream_to = setup.stream_to
        from tools import build_tools
        from tools.base import ToolContext

        self.tool_ctx = ToolContext(
            root=self.root, yes=setup.yes, confirm=setup.confirm, test_command=setup.test_command
        )
        self.tools = build_tools(tool_kind, self.tool_ctx)
        self.messages: list[dict[str, Any]] = []
        self.prompt_tokens = 0
        self.context: dict[str, Any] | None = None
        self.agent: Agent | None = None  # set by drive()
        self.log.emit(
            "start",
            command=command,
            root=str(self.root),
            provider=self.provider.name,
            model=self.provider.model,
            tools=[t.name for t in self.tools],
        )

    def pack_prompt(self, system: str, task: str) -> None:
        """System prompt + the packed repository (the stable prefix) + the task, in one user message."""
        from agent.context import pack_repository
        from agent.tokenizer import get_tokenizer

        budget = self.setup.budget or self.settings.default_budget
        framing = get_tokenizer().count(system) + get_tokenizer().count(task) + 64
        if budget - framing < 1:
            raise UsageError(
                f"the budget ({budget:,} tokens) does not even hold the prompt ({framing:,} tokens)"
            )
        self.log.status("packing the repository")
        pack = pack_repository(self.root, budget=budget - framing, settings=self.settings)
        repository = prompts.render(
            "repository", files=len(pack.files), tokens=pack.total_tokens, repository=pack.text
        ).rstrip("\n")
        self.messages = [
            {"role": "system", "content": system},
            # One user message (hosted DeepSeek models refuse two in a row), with a mark where
            # the repository ends: a provider that stores prompt prefixes across runs (the local
            # engine) keeps its state there, so a later run with another task reuses it.
            {
                "role": "user",
                "content": repository + "\n\n" + task,
                CACHE_BREAKPOINT: len(repository),
            },
        ]
        self.prompt_tokens = pack.total_tokens + framing
        self.context = {"files": len(pack.files), "tokens": pack.total_tokens, "budget": budget}
        manifest = pack.manifest()
        self.log.emit(
            "context",
            **self.context,
            excluded=len(manifest.get("excluded", [])) if isinstance(manifest, dict) else None,
        )

    def make_agent(self, cls: type[A], limits: Limits, **kwargs: Any) -> A:
        """An agent of `cls` on this run's provider, tools, packed prompt and transcript;
        `kwargs` are what the subclass adds."""
        return cls(
            self.provider,
            self.tools,
            self.messages,
            limits,
            self.log,
            prompt_tokens=self.prompt_tokens,
            stream_to=self.stream_to,
            **kwargs,
        )

    def drive(self, agent: Agent) -> Stop:
        self.agent = agent
        # --timeout is wall clock for the whole run: the first test run and the packing count.
        agent.started = self.log.started
        return agent.run()

    def finish(
        self, result: RunResult, stop: Stop, outcomes: dict[str, tuple[str, ExitCode]] | None = None
    ) -> RunResult:
        status, code = {**_OUTCOMES, **(outcomes or {})}[stop.kind]
        result.status, result.exit_code = status, int(code)
        if stop.kind != "done":
            result.error = stop.message
            result.limit = stop.kind if status in ("limit_reached", "tests_failing") else None
        agent = self.agent
        if agent is not None:
            result.usage, result.cost_usd, result.turns = agent.usage, agent.cost, agent.turns
        result.context = self.context
        result.provider, result.model = self.provider.name, self.provider.model
        result.elapsed_s = time.monotonic() - self.log.started
        result.run_id, result.transcript = (
            self.log.run_id,
            str(self.log.path) if self.log.path else None,
        )
        result.secrets = list(self.log.secrets)
        self.log.emit("result", **result.to_json())
        self.log.close()
        return result

    def fail(self, exc: BaseException) -> None:
        """An error that ends the run through the CLI's error path: keep it in the transcript."""
        self.log.emit("error", error=f"{type(exc).__name__}: {exc}")
        self.log.close()


def _provider_secrets(settings: Any) -> list[str]:
    """The configured API key (from any source), so the transcript can redact it."""
    key = getattr(settings, "api_key", None)
    for reveal in ("reveal", "get_secret_value"):
        if hasattr(key, reveal):
            key = getattr(key, reveal)()
    return [key] if isinstance(key, str) and key else []
