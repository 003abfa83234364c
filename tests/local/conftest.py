"""Fixtures of the local-provider tests."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


def load_tokenizer():
    """The V4 tokenizer the provider uses (packaged tokenizer.json)."""
    from agent import tokenizer

    if hasattr(tokenizer, "load_tokenizer"):
        return tokenizer.load_tokenizer(None)
    return tokenizer.get_tokenizer()


@pytest.fixture(scope="session")
def tok():
    return load_tokenizer()


def golden_cases() -> list[str]:
    return sorted(p.stem for p in GOLDEN.glob("*.json"))


def golden(name: str) -> tuple[dict, str]:
    case = json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))
    return case, (GOLDEN / f"{name}.txt").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-threaded torch: on busy shared cores OpenMP hand-offs make the tiny model's small
    ops an order of magnitude slower."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_engine():
    """The tiny random V4 (real vocabulary, window 128, ratios 4/128, all three layer kinds)."""
    pytest.importorskip("torch")
    import torch

    from model import build_engine
    from model.presets import preset

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_engine(preset("tiny"), device="cpu", seed=0)
    finally:
        torch.set_num_threads(previous)


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random checkpoint written by `v4code model init` (once per session)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "model", "init", str(path), "--preset", "tiny"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    if proc.returncode != 0:
        pytest.fail(f"v4code model init failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return path
