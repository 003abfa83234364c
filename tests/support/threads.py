"""Torch single-threaded for a block: on busy shared cores OpenMP's thread hand-offs make the
tiny model's small ops 10-30x slower than one thread (measured)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run the block with `n` torch threads, then restore the previous count (no-op without
    torch, so a base install can still collect the tests and skip them)."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
