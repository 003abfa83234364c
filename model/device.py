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
    """`auto` picks the first accelerator present, else CPU; anything else is taken as given and
    must exist here (ValueError naming what torch sees otherwise)."""
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():  # NVIDIA, and AMD through ROCm builds of torch
            return torch.device("cuda")
        if _xpu_available():
            return torch.device("xpu")
        if _mps_available():
            return torch.device("mps")
        if _npu_available():
            return torch.device("npu")
        other = _other_accelerator()
        return other if other is not None else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from None
    if device.type not in ("cpu", "meta") and not device_available(device):
        seen = ", ".join(a["device"] for a in accelerators())
        raise ValueError(f"device {str(name)!r} is not available here (torch sees: {seen})")
    return device


def device_available(device: torch.device) -> bool:
    """Whether torch can run on `device` (its type is present and the index exists)."""
    if device.type == "cpu":
        return True
    if device.type == "mps":
        return _mps_available() and (device.index or 0) == 0
    if device.type == "npu" and not _npu_available():
        return False
    module = getattr(torch, device.type, None)
    try:
        if module is None or not module.is_available():
            return False
        return device.index is None or device.index < module.device_count()
    except Exception:  # noqa: BLE001 - a backend that cannot answer is not usable
        return False


def _other_accelerator() -> torch.device | None:
    """A backend registered through torch.accelerator that is none of the above (e.g. a plugin)."""
    acc = getattr(torch, "accelerator", None)
    try:
        if acc is not None and acc.is_available():
            return torch.device(acc.current_accelerator().type)
    except Exception:  # noqa: BLE001
        pass
    return None


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the accelerator has it (every V4 target), else fp16; fp32 on CPU: even on a CPU
    with AVX512-BF16, where bf16 GEMMs are 2.7x faster, this engine's 4K-token prefill measured
    1.2x slower in bf16 (its fp32 norms, mixing and attention logits add conversions)."""
    if device.type == "cpu":
        return torch.float32
    if device.type == "mps":
        mps = torch.backends.mps
        newer = getattr(mps, "is_macos_or_newer", None)
        return torch.bfloat16 if newer is None or newer(14, 0) else torch.float16
    module = getattr(torch, device.type, None)
    supported = getattr(module, "is_bf16_supported", None)
    try:
        if callable(supported) and not supported():
            return torch.float16
    except Exception:  # noqa: BLE001
        pass
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


def reset_peak_memory(device: torch.device) -> int:
    """Reset the accelerator allocator's peak; returns the bytes allocated now (0 on CPU)."""
    module = _memory_module(device)
    if module is None:
        return 0
    module.reset_peak_memory_stats(device)
    return module.memory_allocated(device)


def peak_memory_allocated(device: torch.device) -> int | None:
    """Peak bytes allocated on the accelerator since the last reset (None: not measurable)."""
    module = _memory_module(device)
    return None if module is None else module.max_memory_allocated(device)


def _memory_module(device: torch.device):
    if device.type == "cpu":
        return None
    module = getattr(torch, device.type, None)  # torch.cuda, torch.xpu, torch.npu
    needed = ("reset_peak_memory_stats", "memory_allocated", "max_memory_allocated")
    if module is not None and all(hasattr(module, n) for n in needed):
        return module
    return None
