"""Checkpoint reading and writing: one name map, lazy memory-mapped tensors, dequantisation.

Formats read (detected from the tensor names and dtypes, not from the directory layout):
* DeepSeek's official release: names like `layers.3.attn.wq_a.weight` + `.scale`, FP8 e4m3 dense
  weights with UE8M0 128x128 block scales, FP4 e2m1 routed experts packed two per byte
  (int8 [out, in/2]) with one UE8M0 scale per 32 inputs, sharded with an index. Also the
  model-parallel files of its `convert.py` (bf16 `wo_a`, experts as FP4/FP8).
* Hugging Face: what `DeepseekV4ForCausalLM.save_pretrained` writes (transformers 5.x writes the
  official names under `model.`), and transformers' in-memory names (`self_attn.q_a_proj`,
  `mlp.experts.gate_up_proj`, ...).

Files are memory-mapped (copy-on-write, nothing is ever written back); a tensor is read when it
is converted. Dense weights are dequantised once at load; packed experts stay as views of the
mapping and are dequantised when a token selects them, so V4-Flash needs RAM (or page cache) for
~150 GB of packed experts plus ~14 GB of bf16 dense weights, not ~570 GB of bf16 experts.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.config import ModelConfig
from model.info import find_config
from model.quant import dequant_fp8

_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E8M0": torch.float8_e8m0fnu,
    "F4": torch.uint8,  # float4_e2m1fn_x2: two codes per byte; kept as raw bytes
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ST_NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e8m0fnu: "F8_E8M0",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (missing files or tensors, wrong shapes, bad bytes)."""


# ---- safetensors, memory-mapped -------------------------------------------------------------


class SafetensorsFile:
    """A safetensors file mapped copy-on-write; tensors are zero-copy views of the mapping."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) != 8:
                    raise CheckpointError(f"{self.path}: too short for a safetensors file")
                (n,) = struct.unpack("<Q", head)
                if n > 100_000_000:
                    raise CheckpointError(f"{self.path}: implausible header size {n}")
                self.header_bytes = f.read(n)
                header = json.loads(self.header_bytes)
                self.size = self.path.stat().st_size
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if self.size else None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{self.path}: not a readable safetensors file ({exc})") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self.entries: dict[str, tuple[str, list[int], int, int]] = {}
        base = 8 + n
        for name, e in header.items():
            try:
                start, end = e["data_offsets"]
                self.entries[name] = (e["dtype"], list(e["shape"]), base + start, base + end)
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{self.path}: malformed header entry for {name!r}") from None
            if base + end > self.size:
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} runs past the end of the file (truncated?)"
                )

    def keys(self) -> list[str]:
        return list(self.entries)

    def dtype(self, name: str) -> str:
        return self.entries[name][0]

    def shape(self, name: str) -> list[int]:
        return self.entries[name][1]

    def tensor(self, name: str) -> torch.Tensor:
        st, shape, start, end = self.entries[name]
        if st not in _ST_DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name!r} has unsupported dtype {st}")
        dtype = _ST_DTYPES[st]
        numel = 1
        for s in shape:
            numel *= s
        if st == "F4" and numel == 2 * (end - start):  # shape counts fp4 codes, two per byte
            shape = [*shape[:-1], shape[-1] // 2]
            numel //= 2
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if numel * itemsize != end - start:
            raise CheckpointError(
                f"{self.path}: tensor {name!r} has {end - start} bytes, expected {numel * itemsize}"
            )
        if numel == 0:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(self._mm, dtype=dtype, count=numel, offset=start).view(shape)

    def address_range(self) -> tuple[int, int]:
        """[start, end) of the mapping in this process (tests check tensors are views of it)."""
        import ctypes

        start = ctypes.addressof(ctypes.c_char.from_buffer(self._mm))
        return start, start + self.size


def checkpoint_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: malformed index ({exc})") from None
        files = [path / n for n in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(
                f"{path}: shards listed in the index are missing: {', '.join(missing[:5])}"
            )
        return files
    files = sorted(path.glob("*.safetensors"))
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
    file: SafetensorsFile
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

    def __init__(self, files: list[SafetensorsFile]):
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
        t = dequant_fp8(t, index.tensors[scale_name].load())
    if tuple(t.shape) != tuple(shape):
        raise CheckpointError(
            f"tensor {name!r} has shape {tuple(t.shape)}, the config implies {tuple(shape)}"
        )
    return t


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


def _experts_packed(index: TensorIndex) -> bool:
    return any(
        src.dtype in ("I8", "U8", "F4", "F8_E4M3")
        for (_, _, _, kind), src in index.experts.items()
        if kind == "weight"
    )


def _fill_packed(
    index: TensorIndex, prefix: str, experts: Any, config: ModelConfig, device
) -> None:
    d, inter = config.dim, config.moe_inter_dim
    want = {"w1": (inter, d), "w3": (inter, d), "w2": (d, inter)}
    for e in range(experts.n):
        for w, (out_f, in_f) in want.items():
            src = index.experts.get((prefix, e, w, "weight"))
            scale = index.experts.get((prefix, e, w, "scale"))
            if src is None or scale is None:
                raise CheckpointError(f"checkpoint has no packed tensors for {prefix}.{e}.{w}")
            data = src.load()
            if src.dtype in ("I8", "U8", "F4"):
                fmt, shape = "fp4", (out_f, in_f // 2)
                data = data.view(torch.uint8)
            elif src.dtype == "F8_E4M3":
                fmt, shape = "fp8", (out_f, in_f)
            else:
                raise CheckpointError(f"{prefix}.{e}.{w}: unexpected packed dtype {src.dtype}")
            if tuple(data.shape) != shape:
                raise CheckpointError(
                    f"{prefix}.{e}.{w}.weight has shape {tuple(data.shape)}, expected {shape}"
                )
            experts.packed[e][w] = (data, scale.load(), fmt)
    experts.to_device(device)


def load_transformer(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, ModelConfig, TensorIndex]:
    """Build the Transformer for the checkpoint in `path` on `device` with dense weights in `dtype`."""
    from model.model import PackedExperts, Transformer

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model path is not a directory: {path}")
    try:
        config = ModelConfig.from_json(find_config(path))
    except FileNotFoundError as exc:
        raise CheckpointError(str(exc)) from None
    index = TensorIndex([SafetensorsFile(f) for f in checkpoint_files(path)])
    packed = _experts_packed(index)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters not pinned to fp32 take the engine dtype
    try:
        with torch.device("meta"):
            model = Transformer(config, packed_experts=packed, dtype=dtype)
    finally:
        torch.set_default_dtype(previous)

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


def files_fingerprint(files: Iterable[SafetensorsFile]) -> str:
    """A stable hash of checkpoint contents: headers (names, shapes, dtypes, offsets) plus the
    data - all of it up to 512 MiB in total, else 64 evenly spaced 64 KiB samples per file
    (hashing 160 GB at every start would take minutes; a retrained checkpoint differs everywhere)."""
    files = sorted(files, key=lambda f: f.path.name)
    total = sum(f.size for f in files)
    h = hashlib.blake2b(digest_size=20)
    for f in files:
        h.update(f.path.name.encode() + b"\0" + str(f.size).encode() + b"\0" + f.header_bytes)
        if f._mm is None:
            continue
        if total <= _FULL_HASH_LIMIT:
            h.update(f._mm[:])
        else:
            step = max(f.size // _SAMPLES, 1)
            for off in range(0, f.size, step):
                h.update(f._mm[off : off + _SAMPLE_BYTES])
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
    """Write a safetensors file (our own writer: the format is a JSON header plus raw bytes)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = metadata
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype not in _ST_NAMES:
            raise CheckpointError(f"cannot write dtype {t.dtype} for {name!r}")
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": _ST_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # keep the data 8-byte aligned
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)
