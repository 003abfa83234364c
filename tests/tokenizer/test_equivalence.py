"""The fast path equals the `tokenizers` library, id for id, on a large real corpus (every .py file
of the installed standard library) and on every Unicode code point in several contexts."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from agent.tokenizer import V4Tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources() -> list[tuple[str, str]]:
    out = []
    for path in sorted(STDLIB.rglob("*.py")):
        rel = path.relative_to(STDLIB)
        if {"site-packages", "dist-packages"} & set(rel.parts):
            continue
        # A few test files are deliberately not UTF-8; decode them the way a packer would.
        text = path.read_bytes().decode("utf-8", errors="replace")
        out.append((rel.as_posix(), text))
    return out


def first_difference(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def test_stdlib_matches_tokenizers(v4: V4Tokenizer, reference) -> None:
    files = stdlib_sources()
    assert len(files) > 1000, f"expected the whole standard library under {STDLIB}"
    texts = [text for _, text in files]
    ours = v4.encode_many(texts)
    theirs = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
    differing = []
    for (name, _), a, b in zip(files, ours, theirs, strict=True):
        if a != b:
            i = first_difference(a, b)
            differing.append(f"{name}: token {i}: ours {a[i : i + 4]} vs tokenizers {b[i : i + 4]}")
    assert not differing, f"{len(differing)} files differ:\n" + "\n".join(differing[:20])
    total = sum(map(len, theirs))
    assert total > 5_000_000, total  # it really is the ~8M-token corpus
    assert v4.count_many(texts) == [len(ids) for ids in theirs]


# Each template is filled with every code point; joined in groups by "0日0", which is a hard
# piece boundary (a digit piece and a CJK piece), so a mismatch stays local to its group.
FAST_TEMPLATES = ["a{c}b", "x  {c} ", "1{c}{c}1", "日{c}ー"]
SLOW_TEMPLATES = [
    "{c}",
    "\t{c}\r\n",
    "é{c}{c}ß",
    "{c}{c}{c}",
    "・{c}.",
    "{c}\n",
    "  {c}a",
    "!{c}x",
    "{c}゙a",
    "ア{c}",
    "x {c}  ",
]


def code_points(everything: bool) -> list[str]:
    planes = range(0x110000) if everything else [*range(0x40000), *range(0xE0000, 0xF0000)]
    return [chr(c) for c in planes if not 0xD800 <= c <= 0xDFFF]


def compare_templates(v4: V4Tokenizer, reference, templates: list[str], everything: bool) -> None:
    chars = code_points(everything)
    for template in templates:
        texts = [
            "0日0".join(template.format(c=c) for c in chars[i : i + 64])
            for i in range(0, len(chars), 64)
        ]
        ours = v4.encode_many(texts)
        theirs = [e.ids for e in reference.encode_batch(texts, add_special_tokens=False)]
        bad = [t for t, a, b in zip(texts, ours, theirs, strict=True) if a != b]
        assert not bad, f"template {template!r}: {len(bad)} groups differ, first {bad[0]!r}"


def test_code_points_in_context(v4: V4Tokenizer, reference) -> None:
    """Planes 0-3 and 14 (everything assigned) in four contexts: catches any difference between
    Oniguruma's and Rust regex's Unicode tables that matters to the split."""
    compare_templates(v4, reference, FAST_TEMPLATES, everything=False)


@pytest.mark.slow
def test_all_code_points_all_contexts(v4: V4Tokenizer, reference) -> None:
    compare_templates(v4, reference, FAST_TEMPLATES + SLOW_TEMPLATES, everything=True)
