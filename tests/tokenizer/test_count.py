"""count_many: batched and multi-threaded, with very long texts cut at safe piece boundaries."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.tokenizer import V4Tokenizer, split_at_piece_boundaries

from .test_equivalence import stdlib_sources


def test_count_many_equals_single_counts(v4: V4Tokenizer) -> None:
    texts = [text for _, text in stdlib_sources()[:300]]
    big = "\n".join(texts)  # one long text: cut into chunks and counted on several threads
    batch = [*texts, big, "", "x"]
    counts = v4.count_many(batch)
    assert counts == [len(v4.encode(t)) for t in batch]
    assert v4._pool is not None  # the threaded path really ran
    assert v4.encode_many(batch[:50]) == [v4.encode(t) for t in batch[:50]]


def test_split_points_are_piece_boundaries(v4: V4Tokenizer) -> None:
    text = "\n".join(t for _, t in stdlib_sources()[:200])
    text += "\r\n\r\nx  \n  y\n\t\n日本\n123\n\n\n!!\n ー\n"
    chunks = split_at_piece_boundaries(text, 1)
    assert len(chunks) > 1000 and "".join(chunks) == text
    assert sum(v4.count_many(chunks)) == v4.count(text)
    assert [c for c in chunks[:-1] if not c.endswith("\n")] == []


lines = st.text(st.sampled_from(list("ab 1日ー・!\t\r\n\u3000\u00a0\u2028\x1c\u200b")), max_size=40)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=lines)
def test_any_cut_keeps_the_tokens(text: str, v4: V4Tokenizer) -> None:
    chunks = split_at_piece_boundaries(text, 1)
    assert "".join(chunks) == text
    assert [t for c in chunks for t in v4.encode(c)] == v4.encode(text)


def _count_in_child(texts: list[str]) -> list[int]:
    from agent.tokenizer import get_tokenizer

    return get_tokenizer().count_many(texts)


def test_count_many_in_a_forked_child() -> None:
    import multiprocessing

    from agent.tokenizer import get_tokenizer

    texts = [text for _, text in stdlib_sources()[:150]]
    expected = get_tokenizer().count_many(texts)  # the parent's pool exists before the fork
    assert get_tokenizer()._pool is not None
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_count_in_child, (texts,)).get(timeout=60) == expected
