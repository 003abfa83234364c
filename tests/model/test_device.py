"""Device choice, and the engine on an accelerator when one is present."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from model import build_engine  # noqa: E402
from model.device import accelerators, default_dtype, parse_dtype, pick_device  # noqa: E402
from tests.model.test_cache import CONFIG, ids_of  # noqa: E402


def test_explicit_and_default_choices():
    assert pick_device("cpu") == torch.device("cpu")
    assert default_dtype(torch.device("cpu")) == torch.float32
    assert parse_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert parse_dtype(None, torch.device("cpu")) == torch.float32
    assert accelerators()[-1]["device"] == "cpu"
    with pytest.raises(ValueError):
        pick_device("not-a-device")
    with pytest.raises(ValueError):
        parse_dtype("int7", torch.device("cpu"))
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "xpu", "mps", "npu")


def _accelerator() -> torch.device | None:
    device = pick_device("auto")
    return None if device.type == "cpu" else device


@pytest.mark.gpu
@pytest.mark.skipif(_accelerator() is None, reason="no accelerator present")
def test_engine_on_the_accelerator_matches_cpu():
    from tests.model.official_ckpt import random_weights

    weights = random_weights(CONFIG, 0)
    cpu = build_engine(CONFIG, weights, device="cpu", dtype=torch.float32)
    dev = build_engine(CONFIG, weights, device=_accelerator(), dtype=torch.float32)
    ids = ids_of(150)
    want = cpu.forward(ids, cpu.new_cache(150))
    cache = dev.new_cache(150)
    got = torch.cat([dev.forward(ids[:, :100], cache), dev.forward(ids[:, 100:], cache)], dim=1)
    assert (got.cpu() - want).abs().max().item() < 1e-3  # TF32/reduction order differ from CPU
    bf16 = build_engine(CONFIG, weights, device=_accelerator())  # default dtype there: bf16
    out = bf16.forward(ids, bf16.new_cache(150))
    assert torch.isfinite(out).all() and ((out.cpu() - want).norm() / want.norm()).item() < 0.1
