"""Checkpoint reading and writing: one name map, lazy memory-mapped tensors, dequantisation.

Formats read (detected from the tensor names and dtypes, not from the directory layout):
* DeepSeek's official release: names like `layers.3.attn.wq_a.weight` + `.scale`, FP8 e4m3 dense
  weights with UE8M0 128x128 block scales, FP4 e2m1 routed experts packed two per byte
  (int8 [out, in/2]) with one UE8M0 scale per 32 inputs, sharded with an index. Also the
  model-parallel files of its `convert.py` (bf16 `wo_a`, experts as FP4/FP8).
* Hugging Face: what `DeepseekV4ForCausalLM.save_pretrained` writes (transformers 5.x writes the
  official names under `model.`), and transformers' in-memory names (`self_attn.q_a_proj`,
  `mlp.experts.gate_up_proj`, ...).

Files are read with the `safetensors` library, which maps them copy-on-write (nothing is ever
written back): a tensor's bytes are read when it is first touched. Dense weights are dequantised once at load; packed experts stay as views of the
mapping and are dequantised when a token selects them, so V4-Flash needs RAM (or page cache) for
~150 GB of packed experts plus ~14 GB of bf16 dense weights, not ~570 GB of bf16 experts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model import info
from model.config import ModelConfig
from model.info import find_config
from model.quant import dequant_fp8


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (missing files or tensors, wrong shapes, bad bytes)."""


# ---- safetensors files (the safetensors library) -----------------------------------------------


class ShardFile:
    """One safetensors file, opened with the `safetensors` library.

    `safe_open(..., framework="pt")` maps the file copy-on-write (torch's
    `UntypedStorage.from_file(shared=False)`): opening reads only the header; every tensor is a
    zero-copy view of the mapping whose pages are read when first touched (measured: docs/engine.md).
    It reads F8_E4M3, F8_E8M0 and F4 (float4_e2m1fn_x2, two codes per byte) natively."""

    def __init__(self, path: Path):
        from safetensors import SafetensorError, safe_open

        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
            self._file = safe_open(str(self.path), framework="pt", device="cpu")
            self.entries: dict[str, tuple[str, list[int]]] = {}
            for name in self._file.keys():
                part = self._file.get_slice(name)
                self.entries[name] = (part.get_dtype(), list(part.get_shape()))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"{self.path}: not a readable safetensors file (truncated or corrupt? {exc})"
            ) from None

    def keys(self) -> list[str]:
        return list(self.entries)

    def dtype(self, name: str) -> str:
        """The safetensors dtype code: F32, BF16, F8_E4M3, F8_E8M0, F4, I8, ..."""
        return self.entries[name][0]

    def shape(self, name: str) -> list[int]:
        """The shape in the header (F4 counts codes: the last dim is twice the bytes)."""
        return self.entries[name][1]

    def tensor(self, name: str) -> torch.Tensor:
        from safetensors import SafetensorError

        try:
            return self._file.get_tensor(name)
        except (SafetensorError, TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{self.path}: cannot read tensor {name!r} ({exc})") from None

    def header_bytes(self) -> bytes:
        """The file's raw JSON header (names, dtypes, shapes, offsets), for fingerprints."""
        with open(self.path, "rb") as f:
            return f.read(int.from_bytes(f.read(8), "little"))


def checkpoint_files(path: Path) -> list[Path]:
    """The shards to load (`model.info.checkpoint_files`), each present, at least one."""
    try:
        files = info.checkpoint_files(path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(
            f"{path}: shards listed in the index are missing: {', '.join(missing[:5])}"
        )
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors files")
    return files


# ---- names ---------------------------------------------------------------------------------

# transformers' in-memory names -> official names; applied in order after removing `model.`
_RENAMES: list[tuple[str, str]] = [
    (r"^lm_head\.", "head."),
    (r"^embed_tokens\.", "embed."),
    (r"^hc_head\.hc_(fn|base|scale)$", r"hc_head_\1"),
    (r"\.self_attn\.", ".attn."),
    (r"\.mlp\.", ".ffn."),
    (r"\.input_layernorm\.", ".attn_norm."),
    (r"\.post_attention_layernorm\.", ".ffn_norm."),
    (r"\.attn_hc\.(fn|base|scale)$", r".hc_attn_\1"),
    (r"\.ffn_hc\.(fn|base|scale)$", r".hc_ffn_\1"),
    (r"\.attn\.sinks$", ".attn.attn_sink"),
    (r"\.compressor\.indexer\.scorer\.weights_proj\.", ".indexer.weights_proj."),
    (r"\.compressor\.indexer\.q_b_proj\.", ".indexer.wq_b."),
    (r"\.compressor\.indexer\.", ".indexer.compressor."),
    (r"\.shared_experts\.gate_proj\.", ".shared_experts.w1."),
    (r"\.shared_experts\.up_proj\.", ".shared_experts.w3."),
    (r"\.shared_experts\.down_proj\.", ".shared_experts.w2."),
    (r"\.q_a_proj\.", ".wq_a."),
    (r"\.q_b_proj\.", ".wq_b."),
    (r"\.kv_proj\.", ".wkv."),
    (r"\.gate_proj\.", ".wgate."),
    (r"\.o_a_proj\.", ".wo_a."),
    (r"\.o_b_proj\.", ".wo_b."),
    (r"\.q_a_norm\.", ".q_norm."),
    (r"\.position_bias$", ".ape"),
    (r"\.compressor\.kv_norm\.", ".compressor.norm."),
    (r"\.attn\.norm\.", ".attn.kv_norm."),  # transformers 5.x saves the KV norm as attn.norm
    (r"\.gate\.e_score_correction_bias$", ".gate.bias"),
    (r"\.weight_scale_inv$", ".scale"),
]
_RENAMES_RE = [(re.compile(a), b) for a, b in _RENAMES]


def canonical_name(name: str) -> str:
    """Any supported spelling of a tensor name -> the official name used by our modules."""
    name = name.removeprefix("model.")
    for pattern, repl in _RENAMES_RE:
        name = pattern.sub(repl, name)
    return name


_EXPERT_RE = re.compile(r"^(layers\.\d+\.ffn\.experts)\.(\d+)\.(w[123])\.(weight|scale)$")
_STACKED_RE = re.compile(r"^(layers\.\d+\.ffn\.experts)\.(gate_up_proj|down_proj)$")


@dataclass
class Source:
    file: ShardFile
    name: str

    @property
    def dtype(self) -> str:
        return self.file.dtype(self.name)

    @property
    def shape(self) -> list[int]:
        return self.file.shape(self.name)

    def load(self) -> torch.Tensor:
        return self.file.tensor(self.name)


class TensorIndex:
    """Every tensor of a checkpoint under its canonical name."""

    def __init__(self, files: list[ShardFile]):
        self.files = files
        self.tensors: dict[str, Source] = {}
        self.experts: dict[tuple[str, int, str, str], Source] = {}  # (prefix, e, w, weight|scale)
        self.stacked: dict[tuple[str, str], Source] = {}
        self.ignored: list[str] = []
        for f in files:
            for raw in f.keys():
                name = canonical_name(raw)
                if name.startswith("mtp."):
                    self.ignored.append(raw)  # the MTP block is not run (docs/engine.md)
                    continue
                src = Source(f, raw)
                if m := _EXPERT_RE.match(name):
                    self.experts[(m[1], int(m[2]), m[3], m[4])] = src
                elif m := _STACKED_RE.match(name):
                    self.stacked[(m[1], m[2])] = src
                else:
                    if name in self.tensors:
                        raise CheckpointError(f"tensor {name!r} appears twice ({raw!r})")
                    self.tensors[name] = src

    @property
    def official_quantised(self) -> bool:
        return any(
            s.dtype in ("F8_E4M3", "F4", "I8")
            for s in [*self.tensors.values(), *self.experts.values()]
        )


# ---- loading -------------------------------------------------------------------------------


def _dense(index: TensorIndex, name: str, shape: tuple[int, ...], used: set[str]) -> torch.Tensor:
    """The float32 (or integer) value of one named tensor, dequantised if stored in FP8."""
    src = index.tensors.get(name)
    if src is None:
        raise CheckpointError(f"checkpoint has no tensor {name!r}")
    used.add(name)
    t = src.load()
    if src.dtype == "F8_E4M3":
        scale_name = re.sub(r"\.weight$", ".scale", name)
        if scale_name not in index.tensors:
            raise CheckpointError(f"FP8 tensor {name!r} has no scale tensor {scale_name!r}")
        used.add(scale_name)
        scale = index.tensors[scale_name].load()
        _check_scale(name, scale, _fp8_scale_shape(t.shape))
        t = dequant_fp8(t, scale)
    if tuple(t.shape) != tuple(shape):
        raise CheckpointError(
            f"tensor {name!r} has shape {tuple(t.shape)}, the config implies {tuple(shape)}"
        )
    return t


def _fp8_scale_shape(shape) -> tuple[int, int]:
    """One UE8M0 scale per 128x128 block; edge blocks may be partial."""
    return -(-shape[0] // 128), -(-shape[1] // 128)


def _check_scale(name: str, scale: Any, want: tuple[int, int]) -> None:
    """`scale` is a tensor or a Source (header shape)."""
    if tuple(scale.shape) != tuple(want):
        raise CheckpointError(
            f"the scales of {name!r} have shape {tuple(scale.shape)}, expected {tuple(want)}"
        )


def _expert_stack(
    index: TensorIndex, prefix: str, w: str, shape: tuple[int, ...], n: int
) -> torch.Tensor:
    if (prefix, 0, w, "weight") in index.experts:
        parts = []
        for e in range(n):
            src = index.experts.get((prefix, e, w, "weight"))
            if src is None:
                raise CheckpointError(f"checkpoint has no tensor {prefix}.{e}.{w}.weight")
            parts.append(src.load())
        t = torch.stack(parts)
    else:
        key = (prefix, "down_proj" if w == "w2" else "gate_up_proj")
        src = index.stacked.get(key)
        if src is None:
            raise CheckpointError(f"checkpoint has no weights for {prefix}.{w}")
        t = src.load()
        if w != "w2":  # gate_up_proj = [gate (w1); up (w3)] along the output dim
            half = t.shape[1] // 2
            t = t[:, :half] if w == "w1" else t[:, half:]
    if tuple(t.shape) != tuple(shape):
        raise CheckpointError(
            f"{prefix}.{w} has shape {tuple(t.shape)}, the config implies {tuple(shape)}"
        )
    return t


_PACKED_FORMATS = {"I8": "fp4", "U8": "fp4", "F4": "fp4", "F8_E4M3": "fp8"}


def _experts_packed(index: TensorIndex) -> bool:
    return any(
        src.dtype in _PACKED_FORMATS
        for (_, _, _, kind), src in index.experts.items()
        if kind == "weight"
    )


def _fill_packed(
    index: TensorIndex, prefix: str, experts: Any, config: ModelConfig, device
) -> None:
    """Describe every routed expert from the headers (format, shapes, bytes) without reading its
    data: each matrix becomes a PackedWeight whose bytes are mapped when first selected."""
    from model.model import PackedWeight

    d, inter = config.dim, config.moe_inter_dim
    want = {"w1": (inter, d), "w3": (inter, d), "w2": (d, inter)}
    for e in range(experts.n):
        for w, (out_f, in_f) in want.items():
            name = f"{prefix}.{e}.{w}.weight"
            src = index.experts.get((prefix, e, w, "weight"))
            scale = index.experts.get((prefix, e, w, "scale"))
            if src is None or scale is None:
                raise CheckpointError(f"checkpoint has no packed tensors for {prefix}.{e}.{w}")
            fmt = _PACKED_FORMATS.get(src.dtype)
            if fmt is None:
                raise CheckpointError(f"{name}: unexpected packed dtype {src.dtype}")
            # F4 headers count codes; I8/U8 count bytes (two codes each); FP8 one per byte
            in_header = in_f if src.dtype in ("F4", "F8_E4M3") else in_f // 2
            if tuple(src.shape) != (out_f, in_header):
                raise CheckpointError(
                    f"{name} has shape {tuple(src.shape)}, expected {(out_f, in_header)}"
                )
            want_scale = (
                (out_f, -(-in_f // 32)) if fmt == "fp4" else _fp8_scale_shape((out_f, in_f))
            )
            _check_scale(name, scale, want_scale)
            stored = out_f * (in_f // 2 if fmt == "fp4" else in_f)
            n_scales = want_scale[0] * want_scale[1]
            experts.packed[e][w] = PackedWeight(fmt, stored + n_scales, _fetcher(src, scale, fmt))
    experts.to_device(device)


def _fetcher(
    src: Source, scale: Source, fmt: str
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    def fetch() -> tuple[torch.Tensor, torch.Tensor]:
        data = src.load()
        return (data.view(torch.uint8) if fmt == "fp4" else data), scale.load()

    return fetch


def load_transformer(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, ModelConfig, TensorIndex]:
    """Build the Transformer for the checkpoint in `path` on `device` with dense weights in `dtype`."""
    from model.model import PackedExperts, Transformer, params_in

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model path is not a directory: {path}")
    try:
        config = ModelConfig.from_json(find_config(path))
    except FileNotFoundError as exc:
        raise CheckpointError(str(exc)) from None
    index = TensorIndex([ShardFile(f) for f in checkpoint_files(path)])
    packed = _experts_packed(index)
    with params_in(dtype), torch.device("meta"):  # parameters not pinned to fp32: engine dtype
        model = Transformer(config, packed_experts=packed, dtype=dtype)

    state = model.state_dict(keep_vars=True)
    names = list(state)
    used: set[str] = set()
    values: dict[str, torch.Tensor] = {}
    total = len(names) + (config.n_layers if packed else 0)
    done = 0
    for name in names:
        target = state[name]
        shape = tuple(target.shape)
        if m := re.match(r"^(layers\.\d+\.ffn\.experts)\.(w[123])$", name):
            t = _expert_stack(index, m[1], m[2], shape, config.n_routed_experts)
        elif (
            name == "head.weight"
            and "head.weight" not in index.tensors
            and config.tie_word_embeddings
        ):
            t = _dense(index, "embed.weight", shape, used)
        else:
            t = _dense(index, name, shape, used)
        values[name] = t.to(device=device, dtype=target.dtype)
        done += 1
        if progress:
            progress(done, total)
    model.load_state_dict(values, assign=True, strict=True)
    if packed:
        for i, layer in enumerate(model.layers):
            if isinstance(layer.ffn.experts, PackedExperts):
                _fill_packed(index, f"layers.{i}.ffn.experts", layer.ffn.experts, config, device)
            done += 1
            if progress:
                progress(done, total)
    experts_seen = {e for (_, e, _, _) in index.experts}
    if experts_seen and max(experts_seen) >= config.n_routed_experts:
        raise CheckpointError(
            f"checkpoint has {max(experts_seen) + 1} routed experts per layer, the config says {config.n_routed_experts}"
        )
    leftover = sorted(n for n in index.tensors if n not in used and not _is_known_extra(n))
    if leftover:
        raise CheckpointError(
            f"checkpoint has {len(leftover)} tensor(s) this engine does not know, e.g. {', '.join(leftover[:4])}"
        )
    model.requires_grad_(False)
    model.setup(device)
    return model, config, index


def _is_known_extra(name: str) -> bool:
    """Tensors a checkpoint may carry that the engine does not need."""
    return name.endswith(("rotary_emb.inv_freq", "original_inv_freq"))


# ---- fingerprints ------------------------------------------------------------------------------

_FULL_HASH_LIMIT = 512 * 2**20
_SAMPLES, _SAMPLE_BYTES = 64, 64 * 1024


def files_fingerprint(files: Iterable[ShardFile]) -> str:
    """A stable hash of checkpoint contents: headers (names, shapes, dtypes, offsets) plus the
    data - all of it up to 512 MiB in total, else 64 evenly spaced 64 KiB samples per file
    (hashing 160 GB at every start would take minutes; a retrained checkpoint differs everywhere).
    Read in pieces with plain file reads: no copy of a whole file in memory."""
    files = sorted(files, key=lambda f: f.path.name)
    total = sum(f.size for f in files)
    h = hashlib.blake2b(digest_size=20)
    for f in files:
        h.update(f.path.name.encode() + b"\0" + str(f.size).encode() + b"\0" + f.header_bytes())
        with open(f.path, "rb") as raw:
            if total <= _FULL_HASH_LIMIT:
                while piece := raw.read(16 * 2**20):
                    h.update(piece)
            else:
                for off in range(0, f.size, max(f.size // _SAMPLES, 1)):
                    raw.seek(off)
                    h.update(raw.read(_SAMPLE_BYTES))
    return h.hexdigest()


def tensors_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode() + str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---- writing -----------------------------------------------------------------------------------


def hf_name(name: str) -> str:
    """Our (official) name -> the name transformers 5.x writes in save_pretrained."""
    if name == "head.weight":
        return "head.weight"
    if name == "embed.weight":
        return "model.embed_tokens.weight"
    if m := re.match(r"^hc_head_(fn|base|scale)$", name):
        return f"model.hc_head.hc_{m[1]}"
    return "model." + name


def save_safetensors(
    tensors: dict[str, torch.Tensor], file: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file with the safetensors library (tensors may be views of others)."""
    from safetensors.torch import save_file

    save_file(
        {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()},
        str(file),
        metadata=metadata,
    )
