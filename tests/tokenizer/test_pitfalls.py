"""The combined split regex, case by case: its pieces equal the three-step pre-tokenizer's, and
each pitfall case really breaks the naive join of the three regexes (so the test can fail)."""

from __future__ import annotations

import pytest
import tiktoken

from agent.tokenizer import _V4_GPT_REGEX, V4_SPLIT_PATTERN, V4Tokenizer

NAIVE_PATTERN = r"\p{N}{1,3}|[一-龥぀-ゟ゠-ヿ]+|" + _V4_GPT_REGEX


def pieces(pattern: str, text: str) -> list[bytes]:
    """The pieces tiktoken's own regex engine cuts `text` into: with every substring of the text
    in the vocabulary, tiktoken returns each piece as one token (its whole-piece lookup)."""
    data = text.encode("utf-8")
    ranks = {bytes([b]): b for b in range(256)}
    for i in range(len(data)):
        for j in range(i + 2, len(data) + 1):
            ranks.setdefault(data[i:j], len(ranks))
    enc = tiktoken.Encoding("pieces", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    return [enc.decode_single_token_bytes(t) for t in enc.encode_ordinary(text)]


def reference_pieces(reference, text: str) -> list[bytes]:
    from agent.tokenizer import _byte_level_table

    byte_of = _byte_level_table()
    return [
        bytes(byte_of[ch] for ch in piece)
        for piece, _ in reference.pre_tokenizer.pre_tokenize_str(text)
    ]


# (case, why): each breaks the naive regex at the piece level.
PITFALLS = [
    ("abcー", "letter run swallows a K letter (ー is Lm)"),
    ("ab゙c", "letter run swallows a K mark (゙ is Mn)"),
    ("!!・", "punctuation run swallows K punctuation (・ is Po)"),
    ("?゛x", "punctuation run swallows a K symbol (゛ is Sk)"),
    ("-゠-", "K dash (゠ is Pd) inside a punctuation run"),
    ("カタ・カナ", "a CJK run is split again by the GPT regex"),
    ("ーー・", "K letters then K punctuation"),
    ("カ\u3097", "unassigned K code point after K letters is a gap piece"),
    ("x  1", r"\s+(?!\S) must end at a following digit"),
    ("x  日", r"\s+(?!\S) must end at a following CJK letter"),
    ("x  ー", r"\s+(?!\S) must end at a following K letter of category Lm"),
    ("a  ²", r"\s+(?!\S) must end at any \p{N}, not just ASCII digits"),
    ("\x00\x00ab", "control characters are kept as a gap piece"),
    ("a\u200b\u200bb", "format characters (Cf) are kept; the last one prefixes the letters"),
    ("\u200b", "a lone format character"),
    ("foo \u3000\u3000日本", "ideographic spaces before CJK"),
]

# Cases the naive regex happens to get right, kept because they guard the same rules.
OTHERS = [
    "1abc",  # the optional prefix may not be a digit
    "1234567abc",
    "゙abc",  # ... nor a K mark
    "\u3097abc",  # ... nor an unassigned K code point
    "\u3097カ",  # inside K an unassigned code point is a valid prefix
    "カ\u3097\u3098ア",
    "e\u0301 \u0301 \u0301\u0301x ー\u0301",  # combining marks, lone and after K
    "12日34ー56",
    "١٢٣٤٥ ⅫⅬ ½¾ 10²",
    "a\r\n\r\nb \r\n  !!\r\n\t\tx",
    "x \u3000ア",
]


@pytest.mark.parametrize("text,why", PITFALLS, ids=[w for _, w in PITFALLS])
def test_pitfall(text: str, why: str, reference, v4: V4Tokenizer) -> None:
    expected = reference_pieces(reference, text)
    assert pieces(V4_SPLIT_PATTERN, text) == expected, why
    assert pieces(NAIVE_PATTERN, text) != expected, f"not a pitfall for the naive regex: {why}"
    assert v4.encode(text) == reference.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("text", OTHERS)
def test_other_split_rules(text: str, reference, v4: V4Tokenizer) -> None:
    assert pieces(V4_SPLIT_PATTERN, text) == reference_pieces(reference, text)
    assert v4.encode(text) == reference.encode(text, add_special_tokens=False).ids


MARKDOWN = (
    "# Title\n\nSome *emphasis*, `code`, [a link](https://x.org/?q=1&r=2).\n\n- item\n  - sub\n"
)
JSON_TEXT = '{"name": "v4code", "n": [1, 22, 333, 4444], "ok": true, "nested": {"k": null}}\n'
C_TEXT = '#include <stdio.h>\nint main(int argc, char **argv) {\n\tprintf("%d\\n", argc);\n}\n'
CJK = "日本語の文章です。中文句子，包括标点！カタカナ・ひらがな混じり。한국어 문장도 있습니다."
EMOJI = "ok 👍🏽 family 👨‍👩‍👧 flag 🇯🇵 keycap 1️⃣ heart ❤️"

TEXTS = {
    "markdown": MARKDOWN,
    "json": JSON_TEXT,
    "c": C_TEXT,
    "cjk": CJK,
    "emoji": EMOJI,
    "crlf": "line one\r\nline two\r\n\r\n  indented\r\n",
    "tabs": "\tdef f():\n\t\treturn 1\t# tab\n\t\n",
    "long line": ("word " * 20000) + "end",
    "long identifier": "x" * 100_000,
    "long digit run": "9" * 100_001,
    "long whitespace": "a" + " " * 50_000 + "b" + "\n" * 30_000,
    "lone combining marks": "\u0301\u0302 \u20dd\u0301a \u0300",
    "mixed scripts": "Ünïcödé naïve Ελληνικά русский עברית العربية हिन्दी ไทย",
    "controls": "\x00\x01\x1b[31mred\x1b[0m\x7f\u0085\u2028\u2029",
    "private use and specials": "\ue000\uf8ff\ufffd\ufeff\U000f0000\U0010ffff",
}


@pytest.mark.parametrize("name", list(TEXTS))
def test_text_kinds(name: str, reference, v4: V4Tokenizer) -> None:
    text = TEXTS[name]
    ours = v4.encode(text)
    assert ours == reference.encode(text, add_special_tokens=False).ids
    assert v4.decode(ours) == text
    assert v4.count(text) == len(ours)


def test_lone_surrogates_are_replaced_like_tiktoken(v4: V4Tokenizer, reference) -> None:
    # Python strings can hold lone surrogates (os.fsdecode, surrogateescape); UTF-8 cannot.
    text = "ok \udc80 bad \ud800"
    ours = v4.encode(text)
    assert ours == reference.encode("ok \ufffd bad \ufffd", add_special_tokens=False).ids
    assert v4.count_many([text, "x"]) == [len(ours), 1]


def test_long_pieces_stay_fast(v4: V4Tokenizer) -> None:
    """tiktoken before 0.13 merged one piece in quadratic time: 100k letters took 6-10 s on the
    dev machine, 0.02 s with 0.13+. A minified file is one such piece; the bound has 100x slack."""
    import time

    start = time.perf_counter()
    assert v4.count("a" * 200_000) == 25_000
    assert time.perf_counter() - start < 5.0
