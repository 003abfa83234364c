"""Engine tests run single-threaded: the machine is shared (see tests/support/threads.py)."""

from __future__ import annotations

import pytest

from tests.support.threads import torch_threads


@pytest.fixture(autouse=True)
def _one_thread():
    with torch_threads(1):
        yield
