"""The per-sequence attention state, preallocated for a maximum length.

Per layer:
* `window`: a ring of `window_size` raw KV rows (slot = position % window_size);
* CSA/HCA: a `CompressorState` - the open block's projections (`tail_kv`, `tail_gate`, gate
  already biased with `ape`), for CSA the previous complete block's low half (`prev_kv`,
  `prev_gate`, the overlap rows of the next entry), and the append-only compressed `pool`;
* CSA: a second `CompressorState` for the indexer keys (128-wide in V4).

Every counter is derived from `length` (all layers advance together): a layer has
`length // ratio` pooled entries and `length % ratio` tail rows. Pools only grow, so a snapshot
needs the length plus copies of the small fixed-size parts (rings, tails, overlaps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from model.config import CSA, HCA, ModelConfig

STATE_FORMAT = "v4code-kv/1"


class CacheError(ValueError):
    """A cache operation that cannot be done (full, stale snapshot, mismatched state)."""


class CompressorState:
    def __init__(
        self,
        ratio: int,
        out_dim: int,
        overlap: bool,
        max_entries: int,
        device: torch.device,
        dtype: torch.dtype,
    ):
        self.ratio, self.out_dim, self.overlap = ratio, out_dim, overlap
        width = out_dim * (2 if overlap else 1)
        # compression runs in fp32 (a softmax over gate logits), so its inputs are kept in fp32
        self.tail_kv = torch.zeros(ratio, width, device=device)
        self.tail_gate = torch.zeros(ratio, width, device=device)
        self.prev_kv = torch.zeros(ratio, out_dim, device=device) if overlap else None
        self.prev_gate = torch.zeros(ratio, out_dim, device=device) if overlap else None
        # never read beyond the entries written, so it need not be initialised
        self.pool = torch.empty(max_entries, out_dim, device=device, dtype=dtype)

    def small_tensors(self) -> dict[str, torch.Tensor]:
        d = {"tail_kv": self.tail_kv, "tail_gate": self.tail_gate}
        if self.overlap:
            d.update(prev_kv=self.prev_kv, prev_gate=self.prev_gate)
        return d

    def tensors(self) -> list[torch.Tensor]:
        return [*self.small_tensors().values(), self.pool]


class LayerCache:
    def __init__(self, config: ModelConfig, layer: int, max_tokens: int, device, dtype):
        kind = config.layer_types[layer]
        self.kind = kind
        self.ratio = config.ratio(layer)
        self.window = torch.zeros(config.window_size, config.head_dim, device=device, dtype=dtype)
        self.comp: CompressorState | None = None
        self.index: CompressorState | None = None
        if kind in (CSA, HCA):
            self.comp = CompressorState(
                self.ratio, config.head_dim, kind == CSA, max_tokens // self.ratio, device, dtype
            )
        if kind == CSA:
            self.index = CompressorState(
                self.ratio, config.index_head_dim, True, max_tokens // self.ratio, device, dtype
            )

    def states(self) -> dict[str, CompressorState]:
        return {k: v for k, v in (("comp", self.comp), ("index", self.index)) if v is not None}

    def tensors(self) -> list[torch.Tensor]:
        out = [self.window]
        for s in self.states().values():
            out += s.tensors()
        return out


@dataclass
class CacheSnapshot:
    """An in-memory restore point (small: rings, tails and overlaps; pools are append-only)."""

    length: int
    epoch: int
    owner: int
    tensors: list[dict[str, torch.Tensor]] = field(repr=False)


class Cache:
    """The state of one sequence. Create it with `engine.new_cache(max_tokens)`."""

    def __init__(
        self, config: ModelConfig, max_tokens: int, device: torch.device, dtype: torch.dtype
    ):
        if max_tokens < 1:
            raise CacheError("max_tokens must be positive")
        self.config, self.max_tokens = config, int(max_tokens)
        self.device, self.dtype = torch.device(device), dtype
        self.length = 0
        self.layers = [
            LayerCache(config, i, self.max_tokens, self.device, dtype)
            for i in range(config.n_layers)
        ]
        self._epoch = 0
        self._floors: list[tuple[int, int]] = []  # (epoch, length it restarted writing from)
        self._pending_floor: int | None = None
        self.broken = False  # set when a forward pass failed part-way; cleared by restore/load

    # ---- sizes ----------------------------------------------------------------------------
    def nbytes(self) -> int:
        """Bytes this cache has allocated (all buffers, preallocated for max_tokens)."""
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer.tensors())

    def fixed_bytes(self) -> int:
        """Bytes that do not grow with length: window rings, tails, overlaps."""
        return self.nbytes() - sum(
            s.pool.numel() * s.pool.element_size()
            for layer in self.layers
            for s in layer.states().values()
        )

    def bytes_per_token(self) -> float:
        """Amortised pool bytes per token (each pooled entry covers `ratio` tokens)."""
        total = 0.0
        for layer in self.layers:
            for s in layer.states().values():
                total += s.out_dim * s.pool.element_size() / s.ratio
        return total

    def bytes_at(self, n_tokens: int) -> int:
        """Bytes a cache of this model and dtype allocates for n_tokens (pools hold
        floor(n / ratio) entries; rings, tails and overlaps are fixed)."""
        total = self.fixed_bytes()
        for layer in self.layers:
            for s in layer.states().values():
                total += (n_tokens // s.ratio) * s.out_dim * s.pool.element_size()
        return total

    def bytes_used(self) -> int:
        """Bytes holding live state at the current length (what state_dict() saves, roughly)."""
        return self.bytes_at(self.length)

    # ---- engine side ----------------------------------------------------------------------
    def begin_write(self, n_tokens: int) -> None:
        """Called by the engine before it appends n_tokens (checks room, tracks staleness)."""
        if self.length + n_tokens > self.max_tokens:
            raise CacheError(
                f"cache is full: {self.length} + {n_tokens} tokens > max_tokens {self.max_tokens}"
            )
        if self._pending_floor is not None:
            self._epoch += 1
            self._floors.append((self._epoch, self._pending_floor))
            self._pending_floor = None

    # ---- snapshots ------------------------------------------------------------------------
    def snapshot(self) -> CacheSnapshot:
        tensors = []
        for layer in self.layers:
            d = {"window": layer.window.clone()}
            for name, s in layer.states().items():
                for k, t in s.small_tensors().items():
                    d[f"{name}.{k}"] = t.clone()
            tensors.append(d)
        return CacheSnapshot(length=self.length, epoch=self._epoch, owner=id(self), tensors=tensors)

    def restore(self, snap: CacheSnapshot) -> None:
        """Return to a snapshot of this cache. Snapshots taken later than a restore point whose
        pool entries have since been overwritten are stale and refused (CacheError)."""
        if snap.owner != id(self):
            raise CacheError("snapshot belongs to another cache")
        for epoch, floor in self._floors:
            if epoch > snap.epoch and floor < snap.length:
                raise CacheError(
                    f"stale snapshot: its pools (length {snap.length}) were overwritten after "
                    f"a restore to length {floor}"
                )
        for layer, d in zip(self.layers, snap.tensors, strict=True):
            layer.window.copy_(d["window"])
            for name, s in layer.states().items():
                for k, t in s.small_tensors().items():
                    t.copy_(d[f"{name}.{k}"])
        self.length = snap.length
        self._pending_floor = snap.length
        self.broken = False

    # ---- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and ints holding exactly the live state: pools up to length, the open
        tails, overlap rows, and the window ring. Tensors are fresh copies on the cache device."""
        c, n = self.config, self.length
        sd: dict[str, Any] = {
            "format": STATE_FORMAT,
            "length": n,
            "n_layers": c.n_layers,
            "window_size": c.window_size,
            "head_dim": c.head_dim,
            "index_head_dim": c.index_head_dim,
        }
        for i, layer in enumerate(self.layers):
            sd[f"{i}.window"] = layer.window[: min(n, c.window_size)].clone()
            for name, s in layer.states().items():
                entries, tail = n // s.ratio, n % s.ratio
                sd[f"{i}.{name}.pool"] = s.pool[:entries].clone()
                sd[f"{i}.{name}.tail_kv"] = s.tail_kv[:tail].clone()
                sd[f"{i}.{name}.tail_gate"] = s.tail_gate[:tail].clone()
                if s.overlap and entries:
                    sd[f"{i}.{name}.prev_kv"] = s.prev_kv.clone()
                    sd[f"{i}.{name}.prev_gate"] = s.prev_gate.clone()
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Replace this cache's state with `sd` from `state_dict()`; CacheError if it does not fit
        this model (nothing is changed then)."""
        c = self.config
        try:
            if sd.get("format") != STATE_FORMAT:
                raise CacheError(f"unknown cache state format {sd.get('format')!r}")
            n = int(sd["length"])
            for key, want in (
                ("n_layers", c.n_layers),
                ("window_size", c.window_size),
                ("head_dim", c.head_dim),
                ("index_head_dim", c.index_head_dim),
            ):
                if int(sd[key]) != want:
                    raise CacheError(f"cache state has {key}={sd[key]}, this model has {want}")
            if not 0 <= n <= self.max_tokens:
                raise CacheError(
                    f"cache state holds {n} tokens; this cache has room for {self.max_tokens}"
                )
            plan = []  # validate everything first, then copy
            for i, layer in enumerate(self.layers):
                w = sd[f"{i}.window"]
                self._check(w, (min(n, c.window_size), c.head_dim), f"{i}.window")
                plan.append((layer.window[: w.shape[0]], w))
                for name, s in layer.states().items():
                    entries, tail = n // s.ratio, n % s.ratio
                    width = s.tail_kv.shape[1]
                    for key, shape, dst in (
                        ("pool", (entries, s.out_dim), s.pool[:entries]),
                        ("tail_kv", (tail, width), s.tail_kv[:tail]),
                        ("tail_gate", (tail, width), s.tail_gate[:tail]),
                    ):
                        t = sd[f"{i}.{name}.{key}"]
                        self._check(t, shape, f"{i}.{name}.{key}")
                        plan.append((dst, t))
                    if s.overlap and entries:
                        for key, dst in (("prev_kv", s.prev_kv), ("prev_gate", s.prev_gate)):
                            t = sd[f"{i}.{name}.{key}"]
                            self._check(t, tuple(dst.shape), f"{i}.{name}.{key}")
                            plan.append((dst, t))
        except KeyError as exc:
            raise CacheError(f"cache state is missing {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CacheError):
                raise
            raise CacheError(f"malformed cache state: {exc}") from None
        for dst, src in plan:
            dst.copy_(src.to(device=dst.device, dtype=dst.dtype))
        self.length = n
        # every pool entry may have changed: snapshots taken before this are all stale
        self._epoch += 1
        self._floors.append((self._epoch, 0))
        self._pending_floor = None
        self.broken = False

    @staticmethod
    def _check(t: Any, shape: tuple[int, ...], name: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise CacheError(f"{name} is not a tensor")
        if tuple(t.shape) != tuple(shape):
            raise CacheError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        if not (t.is_floating_point() and torch.isfinite(t.float()).all() or t.numel() == 0):
            # gate tails may legitimately hold finite values only; -inf never reaches a tail
            raise CacheError(f"{name} holds non-finite values")
