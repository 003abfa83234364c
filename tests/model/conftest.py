"""Engine tests run single-threaded: the machine is shared, and on busy cores OpenMP's
thread hand-offs make small ops 10-30x slower than with one thread (measured)."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
