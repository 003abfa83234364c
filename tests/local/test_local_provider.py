"""LocalProvider on the tiny random engine, steered by forcing processors: a tool call is
tokenized, prefilled, decoded, parsed, answered and continued on the reused cache; a later
provider loads the prefix from disk; every logit it sampled from equals engine.forward over the
whole sequence at once."""

from __future__ import annotations

import json

import pytest
import torch

from agent.providers import v4_format as fmt
from agent.providers.base import ContextLengthExceeded, Usage
from agent.providers.kvstore import KVStore
from agent.providers.local import LocalProvider
from agent.providers.sampling import SamplingParams
from tests.local.forcing import ForceTokens, Recorder, script_ids

D = "｜DSML｜"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "start_line": {"type": "integer"}},
            },
        },
    }
]
CALL = (
    f'Read it.</think>\n\n<{D}tool_calls>\n<{D}invoke name="read_file">\n'
    f'<{D}parameter name="path" string="true">calc.py</{D}parameter>\n'
    f'<{D}parameter name="start_line" string="false">2</{D}parameter>\n'
    f"</{D}invoke>\n</{D}tool_calls><｜end▁of▁sentence｜>"
)
ANSWER = "Found it.</think>`add` subtracts (calc.py:2).<｜end▁of▁sentence｜>"
REPO = (
    '<file path="calc.py">\n'
    + "".join(f"def f{i}(a, b):\n    return a - b  # {i}\n" for i in range(40))
    + "</file>"
)


def _conversation(question: str = "Why does add fail?", *, mark: bool = True) -> list[dict]:
    """The agent's opening: the repository and the task in one user message, the repository's
    end marked as the cache breakpoint (as agent/loop.py does)."""
    user = {"role": "user", "content": REPO + "\n\n# Question\n\n" + question}
    if mark:
        user[fmt.CACHE_BREAKPOINT] = len(REPO)
    return [{"role": "system", "content": "You answer questions about a repository."}, user]


def _system_end(tok) -> int:
    return len(fmt.to_ids(fmt.render(_conversation()[:1], TOOLS), tok))


def _repository_end(tok) -> int:
    """Tokens of the prompt up to the end of the repository (where the breakpoint is)."""
    system, user = _conversation()
    cut = fmt.to_ids(fmt.render([system, dict(user, content=REPO)], TOOLS), tok)
    full = fmt.to_ids(fmt.render(_conversation(), TOOLS), tok)
    return next(i for i, (a, b) in enumerate(zip(cut, full, strict=False)) if a != b)


class Sink:
    def __init__(self):
        self.text, self.reasoning = [], []

    def on_text(self, d):
        self.text.append(d)

    def on_reasoning(self, d):
        self.reasoning.append(d)


def _provider(engine, tok, store=None, scripts=(), **kw) -> tuple[LocalProvider, Recorder]:
    rec = Recorder()
    procs = [rec, ForceTokens([script_ids(s, tok) for s in scripts])]
    kw.setdefault("sampling", SamplingParams(seed=0))
    kw.setdefault("context_tokens", 8192)
    return LocalProvider(
        engine, tok, store=store, processors=procs, min_stored_prefix=256, **kw
    ), rec


def _assert_logits_match_full_forward(engine, tok, rec, calls):
    """Every recorded step's logits == engine.forward(prompt + generated so far) in one pass,
    for each (messages, reply) in the order the provider was called."""
    steps = iter(rec.steps)
    for messages, reply in calls:
        prompt = fmt.to_ids(fmt.render(messages, TOOLS), tok)
        produced = reply.extra[fmt.REPLAY_IDS][: reply.extra["_v4_stats"]["generated"]]
        sequence = prompt + produced[:-1]
        full = engine.forward(torch.tensor([sequence]), engine.new_cache(len(sequence)))[0]
        for k in range(len(produced)):
            generated, logits = next(steps)
            assert generated == produced[:k]
            reference = full[len(prompt) + k - 1]
            torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
            assert int(logits.argmax()) == int(reference.argmax())
    assert next(steps, None) is None


def test_tool_call_then_answer_on_the_reused_cache(tiny_engine, tok, tmp_path):
    provider, rec = _provider(tiny_engine, tok, KVStore(tmp_path, align=128), [CALL, ANSWER])
    messages = _conversation()
    sink = Sink()
    first = provider.complete(messages, TOOLS, stream_to=sink)
    s1 = first.extra["_v4_stats"]
    assert (
        first.finish_reason == "tool_calls" and first.reasoning == "Read it." and first.text == ""
    )
    [call] = first.tool_calls
    assert (call.name, call.arguments, call.parse_error) == (
        "read_file",
        {"path": "calc.py", "start_line": 2},
        None,
    )
    assert "".join(sink.reasoning) == "Read it." and sink.text == []
    assert (
        s1["prefilled"] == s1["prompt_tokens"] == first.usage.input_tokens
        and first.usage.cached_input_tokens == 0
    )
    assert s1["saved_prefixes"], "the opening was stored for later runs"
    replay1 = first.extra[fmt.REPLAY_IDS]
    assert replay1 == script_ids(CALL, tok)  # exactly what was produced, EOS included

    messages += [
        first.to_message(),
        {"role": "tool", "tool_call_id": call.id, "content": "2\t    return a - b"},
    ]
    second = provider.complete(messages, TOOLS, stream_to=sink)
    s2 = second.extra["_v4_stats"]
    # only the tool result turn was prefilled: everything before it came from the live cache
    assert s1["generated"] == len(replay1) - 1  # it stopped at the block's end; EOS is implied
    assert (
        s2["reused_live"] == s1["prompt_tokens"] + s1["generated"] - 1
    )  # the last token was never fed
    assert s2["prefilled"] == s2["prompt_tokens"] - s2["reused_live"] < 40
    assert second.usage.cached_input_tokens == s2["reused_live"]
    assert (
        second.text == "`add` subtracts (calc.py:2)."
        and second.finish_reason == "stop"
        and not second.tool_calls
    )
    assert "".join(sink.text) == second.text
    _assert_logits_match_full_forward(
        tiny_engine, tok, rec, [(messages[:2], first), (messages, second)]
    )


def test_a_later_run_loads_the_repository_prefix_from_disk(tiny_engine, tok, tmp_path):
    """The first run - here with 1,100 tokens of pasted text after the repository, more than a
    fixed back-off from the end of its prompt would cover - stores one state, at the
    repository's end (rounded down to the compression block); a later run with another task
    loads it and prefills only the rest."""
    boundary = _repository_end(tok) // 128 * 128
    assert boundary >= 256
    pasted = "".join(f"line {i}: the value is {i * 7}\n" for i in range(120))
    opening = _conversation("Explain this log:\n" + pasted)
    assert len(fmt.to_ids(fmt.render(opening, TOOLS), tok)) - boundary > 1100
    store = KVStore(tmp_path, align=128)
    first, _ = _provider(tiny_engine, tok, store, [ANSWER])
    r1 = first.complete(opening, TOOLS)
    # the repository's end, and the end of the system prompt with the tools (small): no guesses
    saved = r1.extra["_v4_stats"]["saved_prefixes"]
    assert saved == [256, boundary] and 256 == _system_end(tok) // 128 * 128

    later, rec = _provider(tiny_engine, tok, KVStore(tmp_path, align=128), [ANSWER])
    messages = _conversation("Something else entirely?")
    prompt = fmt.to_ids(fmt.render(messages, TOOLS), tok)
    reply = later.complete(messages, TOOLS)
    stats = reply.extra["_v4_stats"]
    assert stats["reused_disk"] == boundary and stats["saved_prefixes"] == []
    assert stats["prefilled"] == len(prompt) - boundary < 128 + 20
    assert reply.usage.cached_input_tokens == boundary
    _assert_logits_match_full_forward(tiny_engine, tok, rec, [(messages, reply)])


def test_without_a_breakpoint_only_the_whole_opening_is_stored(tiny_engine, tok, tmp_path):
    """A caller that marks nothing gets the state after its whole opening (a rerun of the same
    prompt reuses it), still a single save."""
    provider, _ = _provider(tiny_engine, tok, KVStore(tmp_path, align=128), [ANSWER])
    messages = _conversation(mark=False)
    reply = provider.complete(messages, TOOLS)
    prompt = fmt.to_ids(fmt.render(messages, TOOLS), tok)
    assert reply.extra["_v4_stats"]["saved_prefixes"] == [256, (len(prompt) - 1) // 128 * 128]
    # a malformed hint is ignored, never an error
    bad = _conversation(mark=False)
    bad[1][fmt.CACHE_BREAKPOINT] = "12"
    again, _ = _provider(tiny_engine, tok, KVStore(tmp_path, align=128), [ANSWER])
    assert again.complete(bad, TOOLS).extra["_v4_stats"]["reused_disk"] > 0


def test_damaged_store_is_ignored_and_prefilled(tiny_engine, tok, tmp_path):
    store = KVStore(tmp_path, align=128)
    first, _ = _provider(tiny_engine, tok, store, [ANSWER])
    first.complete(_conversation(), TOOLS)
    for blob in (tmp_path / "blobs").rglob("*"):
        if blob.is_file():
            blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    later, rec = _provider(tiny_engine, tok, KVStore(tmp_path, align=128), [ANSWER])
    reply = later.complete(_conversation(), TOOLS)
    assert reply.extra["_v4_stats"]["reused_disk"] == 0
    assert later.store.problems
    _assert_logits_match_full_forward(tiny_engine, tok, rec, [(_conversation(), reply)])


def test_edited_history_falls_back_to_a_fresh_prefill(tiny_engine, tok):
    provider, rec = _provider(tiny_engine, tok, None, [CALL, ANSWER])
    messages = _conversation()
    first = provider.complete(messages, TOOLS)
    edited = [messages[0], dict(messages[1], content="A different repository.")]
    edited += [
        first.to_message(),
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "x"},
    ]
    second = provider.complete(edited, TOOLS)
    assert second.extra["_v4_stats"]["reused_live"] == 0
    _assert_logits_match_full_forward(tiny_engine, tok, rec, [(messages, first), (edited, second)])


def test_dsml_markup_is_chosen_greedily(tiny_engine, tok):
    """Force the start of a call, then let the random model continue: while inside the markup
    every token is the argmax; in a parameter value it is sampled."""
    opening = f'</think>\n\n<{D}tool_calls>\n<{D}invoke name="'
    provider, rec = _provider(
        tiny_engine, tok, None, [opening], sampling=SamplingParams(seed=3, min_p=0.0)
    )
    reply = provider.complete(_conversation(), TOOLS, max_tokens=len(script_ids(opening, tok)) + 12)
    produced = reply.extra[fmt.REPLAY_IDS][:-1]
    forced = len(script_ids(opening, tok))
    assert len(produced) > forced
    for generated, logits in rec.steps[forced:]:
        assert produced[len(generated)] == int(logits.argmax())


def test_unsteered_noise_ends_cleanly(tiny_engine, tok):
    provider, _ = _provider(tiny_engine, tok, None, [])
    reply = provider.complete(_conversation(), TOOLS, max_tokens=24, seed=5)
    assert reply.finish_reason in ("length", "stop", "tool_calls")
    assert reply.usage.output_tokens <= 24
    assert reply.extra[fmt.REPLAY_IDS][-1] == tok.eos_id
    assert all(c.parse_error or c.arguments is not None for c in reply.tool_calls)
    json.dumps(reply.to_message())  # the message is plain JSON (transcripts, jsonl)
    again, _ = _provider(tiny_engine, tok, None, [])
    assert (
        again.complete(_conversation(), TOOLS, max_tokens=24, seed=5).extra[fmt.REPLAY_IDS]
        == reply.extra[fmt.REPLAY_IDS]
    )


def test_context_overflow_is_a_provider_error(tiny_engine, tok):
    provider, _ = _provider(tiny_engine, tok, None, [], context_tokens=300)
    with pytest.raises(ContextLengthExceeded, match="context is 300"):
        provider.complete(_conversation(), TOOLS)


def test_unknown_option_is_refused(tiny_engine, tok):
    provider, _ = _provider(tiny_engine, tok, None, [])
    with pytest.raises(TypeError, match="nonsense"):
        provider.complete(_conversation(), TOOLS, nonsense=1)
    for server_only in ({"response_format": {"type": "json_object"}}, {"extra_body": {"k": 1}}):
        with pytest.raises(TypeError, match="unknown provider option"):
            provider.complete(_conversation(), TOOLS, **server_only)
    assert provider.cost(Usage(10, 5, 3)) == 0.0


def test_cache_grows_with_the_conversation(tiny_engine, tok, monkeypatch):
    """The cache is sized to the conversation, not the whole context, and grows by copying its
    state into a bigger one - without changing a single logit."""
    from agent.providers import local

    monkeypatch.setattr(local, "CACHE_STEP", 256)
    provider, rec = _provider(tiny_engine, tok, None, [CALL, ANSWER], max_output_tokens=80)
    messages = _conversation()
    first = provider.complete(messages, TOOLS)
    small = provider._cache.max_tokens
    assert small < provider.context_tokens
    messages += [
        first.to_message(),
        {"role": "tool", "tool_call_id": "call_1", "content": "x\n" * 150},
    ]
    second = provider.complete(messages, TOOLS)
    assert provider._cache.max_tokens > small
    assert second.extra["_v4_stats"]["reused_live"] > 0
    _assert_logits_match_full_forward(
        tiny_engine, tok, rec, [(messages[:2], first), (messages, second)]
    )


@pytest.mark.parametrize("thinking", [True, False])
def test_streaming_never_shows_markup(thinking):
    """Fed the completion a character at a time, the sink gets exactly the reasoning and the
    answer text: no `</think>`, no call block, not even the blank line before it."""
    from agent.providers.local import _Streamer

    completion = (
        ("Think a bit.</think>" if thinking else "") + "I will look.\n\n" + CALL.split("\n\n", 1)[1]
    )
    completion = completion.removesuffix("<｜end▁of▁sentence｜>")
    sink = Sink()
    stream = _Streamer(sink, thinking)
    for n in range(1, len(completion) + 1):
        stream.update(completion[:n])
    stream.update(completion, final=True)
    assert "".join(sink.reasoning) == ("Think a bit." if thinking else "")
    assert "".join(sink.text) == "I will look."


def test_from_settings_loads_the_checkpoint_and_its_options(checkpoint, tmp_path):
    from agent.config import load_settings

    (tmp_path / ".v4code.toml").write_text(
        "seed = 11\ntemperature = 0.5\nmax_output_tokens = 7\nthinking = false\n"
    )
    settings = load_settings(tmp_path, provider="local", model_path=str(checkpoint))
    provider = LocalProvider.from_settings(settings)
    assert provider.model == "local:tiny" and provider.thinking is False
    assert (provider.sampling.seed, provider.sampling.temperature, provider.max_output_tokens) == (
        11,
        0.5,
        7,
    )
    assert provider.store is not None and provider.store.align == 128
    assert provider.identity == provider.engine.identity()
    reply = provider.complete(_conversation(), TOOLS)
    assert reply.usage.output_tokens <= 7 and reply.extra[fmt.REPLAY_MODE] == "chat"
    no_disk = load_settings(
        tmp_path, provider="local", model_path=str(checkpoint), kv_cache_max_bytes=0
    )
    assert LocalProvider.from_settings(no_disk).store is None


def test_from_settings_explains_a_bad_model_path(tmp_path):
    from agent.config import load_settings
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match="--model-path"):
        LocalProvider.from_settings(load_settings(tmp_path, provider="local"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="cannot load the checkpoint"):
        LocalProvider.from_settings(
            load_settings(tmp_path, provider="local", model_path=str(tmp_path / "empty"))
        )
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        LocalProvider.from_settings(
            load_settings(tmp_path, provider="local", model_path=str(tmp_path / "file"))
        )


def test_markup_the_model_spells_with_ordinary_tokens_is_text(tiny_engine, tok):
    """Quoting a file that contains `</think>` or a DSML block (this repository has such files)
    must neither end the reasoning, nor start a call, nor stop generation: only the special
    tokens are markup. The ids are forced: ordinary tokens for the quotes, specials for the tags."""
    reasoning = "a.py writes </think> literally."
    quote = (
        f'It prints <{D}tool_calls>\n<{D}invoke name="read_file">\n</{D}invoke>\n'
        f"</{D}tool_calls> and stops."
    )
    script = [
        *tok.encode(reasoning),
        tok.special_id("</think>"),
        *tok.encode(quote),
        tok.eos_id,
    ]
    assert tok.special_id(D) not in script  # the quote is made of ordinary tokens only
    rec = Recorder()
    provider = LocalProvider(
        tiny_engine,
        tok,
        processors=[rec, ForceTokens([script])],
        sampling=SamplingParams(seed=0),
        context_tokens=8192,
    )
    sink = Sink()
    reply = provider.complete(_conversation(), TOOLS, stream_to=sink)
    assert reply.extra[fmt.REPLAY_IDS] == script  # generation ran to the end token
    assert (reply.reasoning, reply.text, reply.tool_calls) == (reasoning, quote, [])
    assert reply.finish_reason == "stop" and "_v4_problems" not in reply.extra
    assert "".join(sink.reasoning) == reasoning and "".join(sink.text) == quote


def test_a_block_closed_by_a_longer_token_still_ends_the_turn(tiny_engine, tok):
    """`tool_calls` followed by the single token ">\\n\\n" closes the block too: the turn ends
    there instead of running on to the output limit."""
    ids = script_ids(CALL.removesuffix("<｜end▁of▁sentence｜>"), tok)
    [gt_nn] = tok.encode(">\n\n")
    assert ids[-1] == tok.encode(">")[0]
    script = [*ids[:-1], gt_nn]
    provider, _ = _provider(tiny_engine, tok, None, [])
    provider.processors = [ForceTokens([script])]
    reply = provider.complete(_conversation(), TOOLS, max_tokens=len(script) + 16)
    assert reply.extra["_v4_stats"]["generated"] == len(script)
    assert reply.finish_reason == "tool_calls"
    [call] = reply.tool_calls
    assert call.arguments == {"path": "calc.py", "start_line": 2}


def test_text_streams_while_decoding_and_split_characters_arrive_whole(tiny_engine, tok):
    """Each delta reaches the sink during decoding (before the next forward pass), and a
    character whose bytes span several tokens is sent once, complete."""
    answer = "Crab 🦀, fraktur 𝔘𝔫𝔦, CJK 鿿 and ǅ."
    assert any(
        len(tok.decode_bytes([t]).decode("utf-8", "ignore")) == 0 for t in tok.encode(answer)
    )
    rec = Recorder()

    class TimedSink(Sink):
        def __init__(self):
            super().__init__()
            self.at_step = []

        def on_text(self, d):
            super().on_text(d)
            self.at_step.append(len(rec.steps))

    provider = LocalProvider(
        tiny_engine,
        tok,
        processors=[
            rec,
            ForceTokens([script_ids("</think>" + answer + "<｜end▁of▁sentence｜>", tok)]),
        ],
        sampling=SamplingParams(seed=0),
        context_tokens=8192,
    )
    sink = TimedSink()
    reply = provider.complete(_conversation(), TOOLS, stream_to=sink)
    assert reply.text == answer == "".join(sink.text)
    assert not any("\ufffd" in d for d in sink.text)
    assert len(sink.text) > 5 and sink.at_step == sorted(sink.at_step)
    assert sink.at_step[0] < len(rec.steps) // 2  # the first words came long before the end


def test_ids_beyond_the_tokenizer_are_never_chosen(tiny_engine, tok):
    """A checkpoint whose vocabulary is padded past the tokenizer's: a padded id the model
    favours is never sampled (it could not be decoded)."""

    class SmallerTokenizer:
        vocab_size = tiny_engine.config.vocab_size - 300

        def __getattr__(self, name):
            return getattr(tok, name)

        def decode_bytes(self, ids):
            if max(ids) >= self.vocab_size:
                raise ValueError("not in the vocabulary")
            return tok.decode_bytes(ids)

    def favour_padding(generated, logits):
        boosted = logits.clone()
        boosted[-1] += 100.0
        return boosted

    provider = LocalProvider(
        tiny_engine,
        SmallerTokenizer(),
        processors=[favour_padding],
        sampling=SamplingParams(seed=1),
        context_tokens=8192,
    )
    reply = provider.complete(_conversation(), TOOLS, max_tokens=8)
    assert max(reply.extra[fmt.REPLAY_IDS]) < SmallerTokenizer.vocab_size


def test_the_repository_is_tokenized_once_per_run(tiny_engine, tok):
    """Every turn renders the whole conversation again; the long repository text is not
    tokenized again (at 1M tokens that costs about half a second a turn)."""

    class CountingTokenizer:
        def __init__(self):
            self.texts = []

        def __getattr__(self, name):
            return getattr(tok, name)

        def encode(self, text):
            self.texts.append(text)
            return tok.encode(text)

    counting = CountingTokenizer()
    provider = LocalProvider(
        tiny_engine,
        counting,
        processors=[ForceTokens([script_ids(s, tok) for s in (CALL, ANSWER)])],
        sampling=SamplingParams(seed=0),
        context_tokens=8192,
    )
    messages = _conversation()
    first = provider.complete(messages, TOOLS)
    assert sum(REPO in t for t in counting.texts) == 1
    counting.texts.clear()
    messages += [
        first.to_message(),
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "2\treturn a - b"},
    ]
    second = provider.complete(messages, TOOLS)
    assert second.extra["_v4_stats"]["reused_live"] > 0
    assert counting.texts and not any(REPO in t for t in counting.texts)
