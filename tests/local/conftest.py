"""Fixtures of the local-provider tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import v4code
from tests.support.threads import torch_threads

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tok():
    """The V4 tokenizer the provider uses (packaged tokenizer.json)."""
    from agent.tokenizer import load_tokenizer

    return load_tokenizer(None)


def golden_cases() -> list[str]:
    return sorted(p.stem for p in GOLDEN.glob("*.json"))


def golden(name: str) -> tuple[dict, str]:
    case = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return case, (GOLDEN / f"{name}.txt").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def tiny_engine():
    """The tiny random V4 (real vocabulary, window 128, ratios 4/128, all three layer kinds)."""
    pytest.importorskip("torch")
    from model import build_engine
    from model.presets import preset

    with torch_threads(1):
        return build_engine(preset("tiny"), device="cpu", seed=0)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random checkpoint written by `v4code model init` (once per session)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    proc = v4code(
        "model", "init", str(path), "--preset", "tiny", cwd=ROOT, timeout=300, OMP_NUM_THREADS="1"
    )
    if proc.returncode != 0:
        pytest.fail(f"v4code model init failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return path
