"""The engine: a loaded model on a device, plus the Python API the rest of v4code uses.

from model import load_model
engine = load_model(path, device="cpu", dtype=torch.float32)
cache = engine.new_cache(max_tokens)
logits = engine.forward(input_ids, cache)          # [1, S] -> [1, S, vocab] fp32
logits = engine.forward(input_ids, cache, last_only=True)   # -> [1, 1, vocab]
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from model.cache import Cache, CacheError
from model.config import ModelConfig
from model.device import parse_dtype, pick_device

# Bump when a change alters the numbers the engine computes (cache keys must change with it).
NUMERICS_VERSION = 1
# Tokens per internal forward chunk: bounds activation memory of long prefills. Smaller on CPU,
# where a chunk's activations compete with the weights for RAM and the GEMMs are already big.
CPU_PREFILL_CHUNK, ACCEL_PREFILL_CHUNK = 1024, 2048


class Engine:
    def __init__(
        self,
        model,
        config: ModelConfig,
        device: torch.device,
        dtype: torch.dtype,
        *,
        qat: bool = False,
        files: list | None = None,
        source: str = "",
    ):
        self.model, self.config, self.device, self.dtype = model, config, device, dtype
        self.source = source
        self.prefill_chunk = CPU_PREFILL_CHUNK if device.type == "cpu" else ACCEL_PREFILL_CHUNK
        self._files = files or []  # keeps the memory mappings alive
        self._identity: str | None = None
        self.qat = qat

    @property
    def qat(self) -> bool:
        """Emulate V4's quantisation-aware training (FP8 KV, Hadamard+FP4 indexer)."""
        return self.model.qat

    @qat.setter
    def qat(self, value: bool) -> None:
        self.model.qat = bool(value)
        self._identity = None

    def new_cache(self, max_tokens: int) -> Cache:
        """An empty cache preallocated for max_tokens tokens on the engine's device."""
        if max_tokens > self.config.max_position_embeddings:
            raise CacheError(
                f"max_tokens {max_tokens} exceeds the model's {self.config.max_position_embeddings} positions"
            )
        return Cache(self.config, max_tokens, self.device, self.dtype)

    @torch.no_grad()
    def forward(
        self, input_ids: torch.Tensor, cache: Cache, *, last_only: bool = False
    ) -> torch.Tensor:
        """Append input_ids [1, S] to the sequence held in cache; logits [1, S, vocab] in fp32
        (or [1, 1, vocab] for the last token with last_only=True)."""
        ids = self._check(input_ids, cache)
        chunks = ids.split(self.prefill_chunk)
        outs = []
        try:
            for i, chunk in enumerate(chunks):
                wanted = not last_only or i == len(chunks) - 1
                logits = self.model(chunk, cache, last_only=last_only, logits=wanted)
                if wanted:
                    outs.append(logits)
        except BaseException:
            cache.broken = True  # layers may hold part of this chunk; the state is unusable
            raise
        return torch.cat(outs).unsqueeze(0)

    def _check(self, input_ids: torch.Tensor, cache: Cache) -> torch.Tensor:
        if (
            not isinstance(input_ids, torch.Tensor)
            or input_ids.dim() != 2
            or input_ids.shape[0] != 1
        ):
            raise ValueError("input_ids must be a [1, S] tensor")
        if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"input_ids must be integer token ids, got {input_ids.dtype}")
        if input_ids.shape[1] == 0:
            raise ValueError("input_ids is empty")
        if not isinstance(cache, Cache) or cache.config != self.config:
            raise CacheError("cache was not made by this engine (engine.new_cache)")
        if cache.broken:
            raise CacheError(
                "cache is unusable: a forward pass on it failed part-way (restore a snapshot)"
            )
        if cache.device != self.device or cache.dtype != self.dtype:
            raise CacheError(
                f"cache is on {cache.device}/{cache.dtype}, engine on {self.device}/{self.dtype}"
            )
        ids = input_ids[0].to(device=self.device, dtype=torch.long)
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(
                f"token id out of range [0, {self.config.vocab_size}): {lo if lo < 0 else hi}"
            )
        if cache.length + ids.shape[0] > cache.max_tokens:
            raise CacheError(
                f"cache is full: {cache.length} + {ids.shape[0]} tokens > max_tokens {cache.max_tokens}"
            )
        return ids

    def identity(self) -> str:
        """Stable hex id of what this engine computes: config, weights, dtype, QAT, numerics.
        Use it in cache keys: equal ids mean a saved cache state is valid for this engine."""
        if self._identity is None:
            from model.checkpoint import files_fingerprint, tensors_fingerprint

            if self._files:
                weights = files_fingerprint(self._files)
            else:
                weights = tensors_fingerprint(self.model.state_dict())
            payload = {
                "numerics": NUMERICS_VERSION,
                "config": self.config.to_dict(),
                "dtype": str(self.dtype),
                "qat": self.qat,
                "weights": weights,
            }
            blob = json.dumps(payload, sort_keys=True).encode()
            self._identity = hashlib.sha256(blob).hexdigest()[:32]
        return self._identity

    def weight_bytes(self) -> int:
        n = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        for layer in self.model.layers:
            if hasattr(layer.ffn.experts, "nbytes"):
                n += layer.ffn.experts.nbytes()
        return n


def load_model(
    path: str | Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    *,
    qat: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Engine:
    """Load a checkpoint directory (Hugging Face or official DeepSeek format).

    device: "auto" (CUDA/ROCm, XPU, MPS, Ascend NPU, else CPU) or any torch device string.
    dtype: None picks bf16 on accelerators, fp32 on CPU.
    qat: emulate quantisation-aware training; None = on for official FP8 checkpoints only."""
    from model.checkpoint import load_transformer

    dev = pick_device(device)
    dt = parse_dtype(dtype, dev)
    with _progress_bar(progress, f"loading {Path(path).name}") as report:
        model, config, index = load_transformer(Path(path), dev, dt, report)
    if qat is None:
        qat = index.official_quantised
    return Engine(model, config, dev, dt, qat=qat, files=index.files, source=str(path))


@contextmanager
def _progress_bar(callback, label: str):
    """The caller's callback, else a Rich bar on stderr when it is a terminal, else nothing."""
    if callback is not None or not sys.stderr.isatty() or "NO_COLOR" in os.environ:
        yield callback
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield report


def build_engine(
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    *,
    seed: int = 0,
    qat: bool = False,
) -> Engine:
    """An engine from a config and our own state dict (random weights when none is given)."""
    from model.model import Transformer, params_in

    dev = pick_device(device)
    dt = parse_dtype(dtype, dev)
    with params_in(dt):
        model = Transformer(config, dtype=dt)
    if state_dict is None:
        state_dict = random_state(config, seed)
    target = model.state_dict()
    model.load_state_dict({k: v.to(target[k].dtype) for k, v in state_dict.items()}, strict=True)
    model.requires_grad_(False)
    model.to(dev)
    model.setup(dev)
    return Engine(model, config, dev, dt, qat=qat, source="memory")


def random_state(config: ModelConfig, seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    """Untrained weights in our names: N(0, std) matrices (like transformers' init), unit norms,
    zero biases/sinks/position biases, a random token -> experts table for hash layers."""
    from model.model import Transformer

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in Transformer(config).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("tid2eid"):
            scores = torch.rand(shape[0], config.n_routed_experts, generator=g)
            out[name] = scores.topk(shape[1], dim=-1).indices  # distinct experts per token
        elif name.endswith(("norm.weight", "hc_attn_scale", "hc_ffn_scale", "hc_head_scale")):
            out[name] = torch.ones(shape)
        elif name.endswith(("attn_sink", ".ape", "gate.bias", "_base")):
            out[name] = torch.zeros(shape)
        else:
            out[name] = torch.randn(shape, generator=g) * std
    return out
