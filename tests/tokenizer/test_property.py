"""Random text (any code point, weighted towards the characters the split rules care about)
encodes exactly like `tokenizers`."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.tokenizer import V4Tokenizer

# Characters at the edges of the split rules: digits of several scripts, K letters, marks,
# punctuation and symbols, unassigned K code points, whitespace kinds, controls, format chars.
INTERESTING = list(
    "09²٣Ⅻ日本語ーゞ゚゛゠・カあ\u3040\u3097a Zé\u0301\u200b\ufeff\x00\x7f \t\r\n\u3000\u00a0\u2028!.-_'\"#(<>)"
)
chars = st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from(INTERESTING))
texts = st.text(chars, max_size=60)


def fixed(n: int) -> settings:
    """Reproducible by default (derandomized); the slow run explores new random examples."""
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


def check_text(text: str, v4: V4Tokenizer, reference) -> None:
    ids = v4.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False).ids
    assert v4.decode(ids) == text


@fixed(400)
@given(text=texts)
def test_random_text_matches_tokenizers(text: str, v4: V4Tokenizer, reference) -> None:
    check_text(text, v4, reference)


@fixed(100)
@given(parts=st.lists(texts, min_size=1, max_size=8))
def test_random_batches(parts: list[str], v4: V4Tokenizer, reference) -> None:
    expected = [len(e.ids) for e in reference.encode_batch(parts, add_special_tokens=False)]
    assert v4.count_many(parts) == expected


@pytest.mark.slow
@settings(
    max_examples=20_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(chars, max_size=400))
def test_many_random_texts(text: str, v4: V4Tokenizer, reference) -> None:
    check_text(text, v4, reference)
