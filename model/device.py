"""Accelerator choice: CUDA (NVIDIA or ROCm), XPU, MPS, Ascend NPU, else CPU.

Nothing else in the engine names a device type; this is the one place that does.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def _npu_available() -> bool:
    try:
        importlib.import_module("torch_npu")  # registers torch.npu
    except Exception:  # noqa: BLE001 - any import failure means no usable NPU
        return False
    npu = getattr(torch, "npu", None)
    return bool(npu and npu.is_available())


def _xpu_available() -> bool:
    xpu = getattr(torch, "xpu", None)
    return bool(xpu and xpu.is_available())


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def accelerators() -> list[dict[str, Any]]:
    """What torch can see, for `doctor` and `model bench` (never raises)."""
    found = []
    try:
        if torch.cuda.is_available():
            kind = "rocm" if getattr(torch.version, "hip", None) else "cuda"
            for i in range(torch.cuda.device_count()):
                found.append(
                    {"device": f"cuda:{i}", "kind": kind, "name": torch.cuda.get_device_name(i)}
                )
        if _xpu_available():
            found.append({"device": "xpu", "kind": "xpu", "name": "Intel XPU"})
        if _mps_available():
            found.append({"device": "mps", "kind": "mps", "name": "Apple MPS"})
        if _npu_available():
            found.append({"device": "npu", "kind": "npu", "name": "Ascend NPU"})
    except Exception:  # noqa: BLE001
        pass
    found.append({"device": "cpu", "kind": "cpu", "name": "CPU"})
    return found


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """`auto` picks the first accelerator present, else CPU; anything else is taken as given."""
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _xpu_available():
            return torch.device("xpu")
        if _mps_available():
            return torch.device("mps")
        if _npu_available():
            return torch.device("npu")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from None
    if device.type == "npu":
        _npu_available()
    return device


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware has it (every V4 accelerator target), fp32 on CPU: CPU bf16
    matmuls are slower than fp32 on most machines and the tiny CPU models need no savings."""
    if device.type == "cpu":
        return torch.float32
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (use float32, bfloat16 or float16)") from None


def synchronize(device: torch.device) -> None:
    """Wait for queued work (for timing); a no-op on CPU."""
    module = getattr(torch, device.type, None)
    sync = getattr(module, "synchronize", None)
    if device.type != "cpu" and callable(sync):
        sync()
