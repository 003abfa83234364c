"""Client overhead of v4code's OpenAI-compatible provider, against the official `openai` SDK.

    python bench/client.py [--repeats 7] [--prompt-tokens 1000000] [--events 4000]

Two measurements, both against the scripted server running in a separate process (so its
work does not compete with the client for the GIL; time.perf_counter is CLOCK_MONOTONIC,
comparable across processes on Linux):

1. Stream tail: time from the server writing the last byte of a long streamed answer (text,
   reasoning and three tool calls with long arguments, ~N SSE events) to the client holding
   the finished reply object. The server pauses 1 s before the final chunk so every client
   has drained its buffer: the figure is the tail alone. Also the client process's CPU time
   for the whole request (its parse cost over the stream; the server runs elsewhere).
2. 1M-token prompt: time from calling the client to the first request byte arriving at the
   server (building + serialising + starting to send), and to the whole body having arrived.

Peers in the same run: `openai` SDK (if installed; `pip install openai`, not a dependency),
both `chat.completions.create(stream=True)` with a hand-written accumulation loop and the SDK's
own `chat.completions.stream()` helper. Medians over --repeats, runs interleaved.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.config import Prices, Secret  # noqa: E402
from agent.providers.openai_compat import OpenAICompatProvider  # noqa: E402
from tests.support.scripted_server import Scenario, ScriptedServer, Turn, call  # noqa: E402

TAIL_PAUSE_S = 1.0
TOOLS = [
    {
        "type": "function",
        "function": {"name": n, "description": n, "parameters": {"type": "object"}},
    }
    for n in ("read_file", "search", "edit_file")
]


def big_turn(events: int) -> Turn:
    """About `events` SSE events: reasoning, text and three tool calls with long arguments."""
    per = max(1, events // 4)
    chunk = 6
    reasoning = ("Let me think about where the bug is. " * 400)[: per * chunk]
    text = ("Here is what I found in the repository. " * 400)[: per * chunk]
    body = ("x = compute(value) + 1\n" * 400)[: per * chunk // 3]
    calls = [
        call("read_file", {"path": "pkg/module.py", "start_line": 1, "end_line": 400}),
        call("search", {"pattern": "compute(", "glob": "*.py"}),
        call(
            "edit_file",
            {"path": "pkg/module.py", "old_string": body, "new_string": body.replace("1", "2")},
        ),
    ]
    # The pause before the final chunk lets every client drain what it has buffered, so "last byte
    # -> reply" is the tail alone; parse cost shows in "client CPU".
    return Turn.tool_calls(
        calls,
        text=text,
        reasoning=reasoning,
        chunk_chars=chunk,
        arg_chunk_chars=chunk,
        tail_delay_s=TAIL_PAUSE_S,
    )


def _serve(conn: Any, steps: list[Any], usage: str) -> None:
    with ScriptedServer(
        Scenario(steps, usage=usage, reasoning_rule=False, strict_messages=False)
    ) as srv:
        conn.send(srv.base_url)
        while (msg := conn.recv()) != "stop":
            if msg == "timings":
                conn.send(
                    [
                        (r.first_byte_at, r.body_done_at, r.last_byte_sent_at, r.status)
                        for r in srv.requests
                    ]
                )
        conn.send(len(srv.errors))


class ServerProcess:
    def __init__(self, steps: list[Any], usage: str = "deepseek"):
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, steps, usage), daemon=True)

    def __enter__(self) -> ServerProcess:
        self.proc.start()
        self.base_url = self.conn.recv()
        return self

    def timings(self) -> list[tuple[float, float, float, int]]:
        self.conn.send("timings")
        return self.conn.recv()

    def __exit__(self, *exc: object) -> None:
        self.conn.send("stop")
        errors = self.conn.recv()
        self.proc.join(timeout=10)
        if errors:
            raise RuntimeError(f"scripted server reported {errors} error(s)")


# ----------------------------------------------------------------------------- the clients


def ours(base_url: str) -> Any:
    client = OpenAICompatProvider(
        name="openai",
        model="bench",
        base_url=base_url,
        api_key=Secret("sk-bench-000000000000"),
        prices=Prices(0, 0, 0),
        read_timeout=600,
    )

    def run(messages: list[dict[str, Any]]) -> Any:
        return client.complete(messages, TOOLS)

    return run, client.close


def openai_loop(base_url: str) -> Any:
    import openai

    client = openai.OpenAI(
        base_url=base_url, api_key="sk-bench-000000000000", max_retries=0, timeout=600
    )

    def run(messages: list[dict[str, Any]]) -> Any:
        stream = client.chat.completions.create(
            model="bench",
            messages=messages,
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, reasoning, calls, usage, finish = [], [], {}, None, None
        for chunk in stream:
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                d = choice.delta
                if d.content:
                    text.append(d.content)
                extra = d.model_extra or {}
                if extra.get("reasoning_content"):
                    reasoning.append(extra["reasoning_content"])
                for tc in d.tool_calls or []:
                    entry = calls.setdefault(tc.index, {"id": None, "name": None, "args": []})
                    entry["id"] = entry["id"] or tc.id
                    if tc.function:
                        entry["name"] = entry["name"] or tc.function.name
                        if tc.function.arguments:
                            entry["args"].append(tc.function.arguments)
                finish = choice.finish_reason or finish
        return {
            "text": "".join(text),
            "reasoning": "".join(reasoning),
            "finish": finish,
            "usage": usage,
            "calls": [
                (c["id"], c["name"], json.loads("".join(c["args"]) or "{}")) for c in calls.values()
            ],
        }

    return run, client.close


def openai_helper(base_url: str) -> Any:
    import openai

    client = openai.OpenAI(
        base_url=base_url, api_key="sk-bench-000000000000", max_retries=0, timeout=600
    )

    def run(messages: list[dict[str, Any]]) -> Any:
        with client.chat.completions.stream(
            model="bench", messages=messages, tools=TOOLS, stream_options={"include_usage": True}
        ) as stream:
            return stream.get_final_completion()

    return run, client.close


def peers() -> dict[str, Any]:
    found = {"v4code": ours}
    try:
        import openai
    except ModuleNotFoundError:
        print(
            "openai SDK not installed: only v4code measured (pip install openai for the peer)",
            file=sys.stderr,
        )
        return found
    found[f"openai {openai.__version__} create+loop"] = openai_loop
    found[f"openai {openai.__version__} .stream() helper"] = openai_helper
    return found


# ----------------------------------------------------------------------------- the prompt


def build_prompt(target_tokens: int) -> str:
    """Real code from the standard library, cut to `target_tokens` exact V4 tokens."""
    from agent.tokenizer import get_tokenizer

    tok = get_tokenizer()
    parts, chars = [], 0
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    budget_chars = int(target_tokens * 4.2)
    for path in sorted(stdlib.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(f'<file path="{path.relative_to(stdlib)}">\n{text}</file>\n')
        chars += len(parts[-1])
        if chars >= budget_chars:
            break
    text = "".join(parts)
    ids = tok.encode(text)
    if len(ids) < target_tokens:
        raise SystemExit(f"stdlib too small for {target_tokens} tokens")
    return tok.decode(ids[:target_tokens])


# ----------------------------------------------------------------------------- measurements


def bench_stream(repeats: int, events: int) -> dict[str, dict[str, float]]:
    clients = peers()
    turn = big_turn(events)
    steps = [turn] * (repeats * len(clients) + len(clients))
    messages = [{"role": "user", "content": "Fix the bug."}]
    results: dict[str, dict[str, list[float]]] = {name: {"tail": [], "cpu": []} for name in clients}
    with ServerProcess(steps) as server:
        made = {name: make(server.base_url) for name, make in clients.items()}
        for run, _ in made.values():
            run(messages)  # warm-up: connection, imports, caches
        served = len(clients)
        for _ in range(repeats):
            for name, (run, _) in made.items():
                # The server is another process: this is the client's own work.
                cpu = time.process_time()
                run(messages)
                end = time.perf_counter()
                cpu = time.process_time() - cpu
                _, _, last, status = server.timings()[served]
                served += 1
                assert status == 200
                results[name]["tail"].append(end - last)
                results[name]["cpu"].append(cpu)
        for _, close in made.values():
            close()
    return {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}


def bench_big_prompt(repeats: int, prompt_tokens: int) -> tuple[dict[str, dict[str, float]], int]:
    clients = peers()
    t0 = time.perf_counter()
    repo = build_prompt(prompt_tokens)
    print(
        f"built a {prompt_tokens:,}-token prompt ({len(repo):,} chars) in {time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )
    steps = [Turn.text("ok")] * (repeats * len(clients))
    results: dict[str, dict[str, list[float]]] = {
        name: {"first": [], "body": []} for name in clients
    }
    with ServerProcess(steps, usage="none") as server:
        made = {name: make(server.base_url) for name, make in clients.items()}
        served = 0
        for i in range(repeats):
            for name, (run, _) in made.items():
                # A fresh list each time, as an agent loop would have: no client caches the body.
                messages = [
                    {"role": "system", "content": repo},
                    {"role": "user", "content": f"question {i}"},
                ]
                start = time.perf_counter()
                run(messages)
                first, body_done, _, status = server.timings()[served]
                served += 1
                assert status == 200
                results[name]["first"].append(first - start)
                results[name]["body"].append(body_done - start)
        for _, close in made.values():
            close()
    return {
        name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()
    }, len(repo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--events", type=int, default=4000, help="SSE events in the streamed answer")
    ap.add_argument("--prompt-tokens", type=int, default=1_000_000)
    args = ap.parse_args()

    stream = bench_stream(args.repeats, args.events)
    base = stream["v4code"]
    print(
        f"\n### Streamed answer (~{args.events} SSE events, text + reasoning + 3 tool calls), median of {args.repeats}\n"
    )
    print(
        "| client | last byte -> reply (ms) | ratio | client CPU for the whole stream (ms) | ratio |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, r in stream.items():
        print(
            f"| {name} | {r['tail'] * 1e3:.2f} | {r['tail'] / base['tail']:.2f}x | "
            f"{r['cpu'] * 1e3:.1f} | {r['cpu'] / base['cpu']:.2f}x |"
        )

    big, chars = bench_big_prompt(args.repeats, args.prompt_tokens)
    base = big["v4code"]
    print(
        f"\n### {args.prompt_tokens:,}-token prompt ({chars / 1e6:.1f} M chars), median of {args.repeats}\n"
    )
    print(
        "| client | call -> first request byte (ms) | ratio | call -> whole body received (ms) | ratio |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, r in big.items():
        print(
            f"| {name} | {r['first'] * 1e3:.1f} | {r['first'] / base['first']:.2f}x | "
            f"{r['body'] * 1e3:.1f} | {r['body'] / base['body']:.2f}x |"
        )


if __name__ == "__main__":
    main()
