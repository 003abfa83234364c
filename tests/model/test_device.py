"""Device choice, and the engine on an accelerator when one is present."""

from __future__ import annotations

from pathlib import Path

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


def test_an_unavailable_device_is_a_clear_error(tmp_path):
    import model.device as md

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' is not available here .*cpu"):
            pick_device("cuda")
        with pytest.raises(ValueError, match="not available"):
            build_engine(CONFIG, device="cuda")  # before any weight is allocated
    with pytest.raises(ValueError, match="not available"):
        pick_device("xpu:7")
    assert md.device_available(torch.device("cpu"))


def test_auto_order_cuda_xpu_mps_then_cpu(monkeypatch):
    """No accelerator is present here, so the backends' availability answers are simulated; the
    order is what is checked."""
    import model.device as md

    present: set[str] = set()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: "cuda" in present)
    monkeypatch.setattr(md, "_xpu_available", lambda: "xpu" in present)
    monkeypatch.setattr(md, "_mps_available", lambda: "mps" in present)
    monkeypatch.setattr(md, "_npu_available", lambda: False)
    monkeypatch.setattr(md, "_other_accelerator", lambda: None)
    order = []
    for kinds in ({"cuda", "xpu", "mps"}, {"xpu", "mps"}, {"mps"}, set()):
        present.clear()
        present.update(kinds)
        order.append(pick_device("auto").type)
    assert order == ["cuda", "xpu", "mps", "cpu"]


FAKE_TORCH_NPU = """
import types, torch
torch.utils.rename_privateuse1_backend("npu")  # what the real torch_npu does on import
torch.npu = types.SimpleNamespace(
    is_available=lambda: True, device_count=lambda: 2, is_bf16_supported=lambda: BF16
)
"""


@pytest.mark.parametrize("bf16", [True, False])
def test_ascend_npu_is_picked_when_torch_npu_imports(tmp_path, bf16):
    """Ascend: `torch_npu` is imported when importable and then registers the `npu` device. A
    stand-in package with the same effect runs in a subprocess (the rename is process-wide)."""
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("CUDA comes first")
    pkg = tmp_path / "torch_npu"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(FAKE_TORCH_NPU.replace("BF16", str(bf16)))
    code = (
        "from model.device import pick_device, default_dtype; d = pick_device('auto'); "
        "print(d, default_dtype(d), pick_device('npu:1'))"
    )
    env = {
        "PYTHONPATH": f"{tmp_path}:{Path(__file__).resolve().parents[2]}",
        "PATH": "/usr/bin:/bin",
    }
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    want = "torch.bfloat16" if bf16 else "torch.float16"
    assert r.stdout.split() == ["npu", want, "npu:1"]


def test_nothing_outside_device_py_names_a_device_backend():
    """The engine must not assume CUDA: backend modules and `.cuda()` appear only in device.py."""
    import re

    import model

    pattern = re.compile(r"\.cuda\(|torch\.(cuda|xpu|mps|npu|backends\.mps)\b|torch_npu")
    offenders = []
    for path in sorted(Path(model.__file__).parent.glob("*.py")):
        if path.name == "device.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.name}:{i}: {line.strip()}")
    assert not offenders, offenders
