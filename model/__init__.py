"""The local DeepSeek-V4 engine (PyTorch). See docs/engine.md.

Importing this package does not import torch (the base install has none); `load_model` does.

    from model import load_model
    engine = load_model("path/to/checkpoint", device="auto")
    cache = engine.new_cache(max_tokens=65536)
    logits = engine.forward(input_ids, cache)     # input_ids: [1, S] LongTensor
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.engine import Engine

__all__ = ["load_model", "build_engine", "torch_available", "TORCH_MISSING"]

TORCH_MISSING = 'the local engine needs PyTorch: pip install -e ".[local]"'


def torch_available() -> bool:
    """Whether torch can be imported (imports it: only call this where torch is needed next)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def load_model(path: Any, device: Any = "auto", dtype: Any = None, **kwargs: Any) -> Engine:
    """Load a checkpoint directory; see model.engine.load_model."""
    from model.engine import load_model as _load

    return _load(path, device=device, dtype=dtype, **kwargs)


def build_engine(config: Any, state_dict: Any = None, **kwargs: Any) -> Engine:
    """An engine from a ModelConfig (random weights when no state dict); see model.engine."""
    from model.engine import build_engine as _build

    return _build(config, state_dict, **kwargs)
