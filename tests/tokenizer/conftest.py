"""Fixtures for the tokenizer tests: our tokenizer and the `tokenizers` reference it must equal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from agent.tokenizer import V4Tokenizer, load_tokenizer, tokenizer_json_path


def reference_for(path: str | Path) -> Tokenizer:
    """The `tokenizers` pipeline of a tokenizer.json with its added tokens removed: the exact
    reference for ordinary text (special-token strings in text are plain text for us)."""
    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    spec["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(spec))


@pytest.fixture(scope="session")
def v4() -> V4Tokenizer:
    tok = load_tokenizer()
    assert tok.fast, tok
    return tok


@pytest.fixture(scope="session")
def reference() -> Tokenizer:
    return reference_for(tokenizer_json_path())


@pytest.fixture(scope="session")
def v4_spec() -> dict:
    return json.loads(Path(tokenizer_json_path()).read_text(encoding="utf-8"))
