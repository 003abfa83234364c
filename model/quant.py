"""Low-precision formats of the official checkpoint, and V4's quantisation-aware-training emulation.

Dequantisation (load time, or on the fly for packed experts):
* FP8 e4m3 weights with UE8M0 block scales: W = e4m3(W) * 2^(s[o//B, i//B] - 127), B = 128.
* FP4 e2m1 experts packed two per byte (low nibble = element 2k, high nibble = 2k+1), one UE8M0
  scale per 32 inputs: W = fp4(code) * 2^(s[o, i//32] - 127).

QAT emulation (what the official graph does to activations, needed for bit-faithful top-k):
* `fp8_fake_quant`: main KV nope dims through FP8 e4m3 in blocks of 64 with power-of-two scales.
* `hadamard` + `fp4_fake_quant`: indexer q/k rotated by the normalised 128-point Walsh-Hadamard
  transform, then FP4 e2m1 in blocks of 32 with power-of-two scales.
"""

from __future__ import annotations

import functools

import torch

FP8_MAX = 448.0
FP4_MAX = 6.0
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def e8m0_to_float(scale: torch.Tensor) -> torch.Tensor:
    """UE8M0 scale bytes (a pure exponent, bias 127) as float32 powers of two.

    Accepts torch.float8_e8m0fnu, uint8/int8 views of the same bytes, or already-float scales
    (some converted checkpoints store fp32 scales)."""
    if scale.dtype in (torch.float32, torch.bfloat16, torch.float16):
        return scale.float()
    if scale.dtype == torch.float8_e8m0fnu or scale.dtype == torch.int8:
        scale = scale.view(torch.uint8)
    return torch.exp2(scale.to(torch.int32).float() - 127.0)


def dequant_fp8(weight: torch.Tensor, scale: torch.Tensor, block: int = 128) -> torch.Tensor:
    """FP8 e4m3 [out, in] weight with [ceil(out/B), ceil(in/B)] block scales -> float32."""
    if weight.dtype != torch.float8_e4m3fn:
        weight = weight.view(torch.float8_e4m3fn)
    out_f, in_f = weight.shape
    s = e8m0_to_float(scale)
    s = s.repeat_interleave(block, 0)[:out_f].repeat_interleave(block, 1)[:, :in_f]
    return weight.float() * s


@functools.cache
def _fp4_table(device: torch.device) -> torch.Tensor:
    values = list(FP4_VALUES) + [-v for v in FP4_VALUES]
    return torch.tensor(values, dtype=torch.float32, device=device)


def dequant_fp4(packed: torch.Tensor, scale: torch.Tensor, block: int = 32) -> torch.Tensor:
    """FP4 e2m1 [out, in/2] (two codes per byte, low nibble first) with [out, in/B] scales -> float32."""
    b = packed.view(torch.uint8)
    table = _fp4_table(b.device)
    codes = torch.stack([b & 0x0F, b >> 4], dim=-1).flatten(-2).long()
    w = table[codes]
    return w * e8m0_to_float(scale).repeat_interleave(block, -1)[..., : w.shape[-1]]


def _pow2_scale(amax: torch.Tensor, max_value: float) -> torch.Tensor:
    """2^ceil(log2(amax / max_value)), computed the way the official kernel does (exponent bits)."""
    mantissa, exponent = torch.frexp(amax * (1.0 / max_value))
    # frexp gives amax/max = m * 2^e with m in [0.5, 1): ceil(log2) = e - 1 exactly when m == 0.5
    exponent = exponent - (mantissa == 0.5).to(exponent.dtype)
    return torch.ldexp(torch.ones_like(amax), exponent)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """x as fp32 [..., n_blocks, block]; a last partial block is zero-padded (zeros change no amax)."""
    xf = x.float()
    pad = -x.shape[-1] % block
    if pad:
        xf = torch.nn.functional.pad(xf, (0, pad))
    return xf.unflatten(-1, (-1, block))


def _unblock(xb: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return xb.flatten(-2)[..., : like.shape[-1]].to(like.dtype)


def fp8_fake_quant(x: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Quantise-dequantise through FP8 e4m3 in blocks of `block` along the last dim."""
    xb = _blocks(x, block)
    scale = _pow2_scale(xb.abs().amax(-1, keepdim=True).clamp_min(1e-4), FP8_MAX)
    q = (xb / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float()
    return _unblock(q * scale, x)


def round_to_fp4(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values in [-6, 6] to the nearest e2m1 value, ties to the even code."""
    a = x.abs()
    mids = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=a.dtype, device=a.device)
    idx = torch.bucketize(a, mids)  # number of midpoints strictly below a
    # a tie sits on a midpoint; bucketize rounded it down, which is right unless the upper
    # neighbour has the even code (0.75 -> 1.0, 1.75 -> 2.0, 3.5 -> 4.0)
    idx = idx + ((a == 0.75) | (a == 1.75) | (a == 3.5)).long()
    table = _fp4_table(a.device)[:8]
    return torch.copysign(table[idx], x)


def fp4_fake_quant(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """Quantise-dequantise through FP4 e2m1 in blocks of `block` along the last dim."""
    xb = _blocks(x, block)
    scale = _pow2_scale(xb.abs().amax(-1, keepdim=True).clamp_min(FP4_MAX * 2.0**-126), FP4_MAX)
    q = round_to_fp4((xb / scale).clamp(-FP4_MAX, FP4_MAX))
    return _unblock(q * scale, x)


@functools.cache
def hadamard_matrix(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised Walsh-Hadamard matrix in Sylvester order (symmetric and orthogonal)."""
    if n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h * n**-0.5).to(device)


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """Rotate the last dim by the normalised Hadamard transform (fp32 math)."""
    h = hadamard_matrix(x.shape[-1], x.device)
    return (x.float() @ h).to(x.dtype)
