"""DeepSeek-V4 in plain PyTorch: embeddings -> blocks (mHC around attention and MoE) -> head.

Module and parameter names follow DeepSeek's official checkpoint (`attn.wq_a`, `ffn.experts`,
`hc_attn_fn`, ...), so the official loader is a near-identity map and every other format is
renamed in one place (`model/checkpoint.py`).

Shapes: one sequence at a time; activations are [S, ...] (no batch dim). Positions are absolute;
`start` is the number of tokens already in the cache. The attention maths is in
`model/attention.py`, the per-sequence state in `model/cache.py`.

Numerics (where fp32 is required and why):
* RMSNorm, mHC mixing and Sinkhorn, the compressor's gated pooling, RoPE rotation, the router
  and the SwiGLU of experts run in fp32 whatever the weight dtype, as in the official graph:
  they normalise, exponentiate or clamp, and bf16 there changes which tokens/experts win.
* Attention logits/softmax are fp32 (see attention.py); logits come out of an fp32 head.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from model.attention import Picked, Span, sparse_attention
from model.cache import Cache, CompressorState, LayerCache
from model.config import CSA, HCA, SWA, ModelConfig, RopeSpec
from model.quant import dequant_fp4, dequant_fp8, fp4_fake_quant, fp8_fake_quant, hadamard

# Query block size and the budget (elements) for one block's logits [B, H, keys]: they bound
# prefill memory at any length. CPU: small blocks waste less of the window band; accelerators:
# big blocks, since each block costs kernel launches and memory is plentiful.
QUERY_BLOCK, LOGIT_BUDGET = 64, 1 << 22
ACCEL_QUERY_BLOCK, ACCEL_LOGIT_BUDGET = 256, 1 << 26


def blocking(device: torch.device) -> tuple[int, int]:
    if device.type == "cpu":
        return QUERY_BLOCK, LOGIT_BUDGET
    return ACCEL_QUERY_BLOCK, ACCEL_LOGIT_BUDGET


# CSA attends to its top-k through a masked dense pass while the visible pool is at most this
# many times k (a GEMM over 2k rows is cheaper than gathering k rows per query), else a gather.
DENSE_PICK = 2


@contextmanager
def params_in(dtype: torch.dtype) -> Iterator[None]:
    """Build modules inside this block: parameters not pinned to fp32 take `dtype`."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class Linear(nn.Linear):
    """nn.Linear without torch's random init: every weight is then loaded (checkpoint or state
    dict). Initialising on the meta device would import torch._dynamo and sympy (+66 MiB RSS)."""

    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's fused kernel: no [S, dim] temporaries (each costs fresh pages at 1K tokens)
        out = F.rms_norm(x.float(), (x.shape[-1],), self.weight, self.eps)
        return out.to(x.dtype)


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMS normalisation (per-head query norm), fp32 math."""
    return F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype)


# ---- RoPE ---------------------------------------------------------------------------------


def rope_inv_freq(spec: RopeSpec, dim: int) -> torch.Tensor:
    """Per-pair inverse frequencies; YaRN (when set) only rescales frequencies - no mscale."""
    freqs = 1.0 / (spec.theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if spec.yarn:

        def correction_dim(rotations: float) -> float:
            return (
                dim
                * math.log(spec.original_seq_len / (rotations * 2 * math.pi))
                / (2 * math.log(spec.theta))
            )

        low = max(math.floor(correction_dim(spec.beta_fast)), 0)
        high = min(math.ceil(correction_dim(spec.beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp  # 1 = keep the original frequency, 0 = divide it by the factor
        freqs = freqs / spec.factor * (1 - smooth) + freqs * smooth
    return freqs


class Rope:
    """cos/sin for the given absolute positions, computed on the fly (a 1M-position table per
    layer kind would cost 256 MB for nothing)."""

    def __init__(self, spec: RopeSpec, dim: int, device: torch.device):
        self.inv_freq = rope_inv_freq(spec, dim).to(device)

    def __call__(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        return freqs.cos(), freqs.sin()


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False
) -> torch.Tensor:
    """Rotate the trailing 2*len(cos) dims of x as interleaved pairs (2k, 2k+1), in place.

    x is [S, D] or [S, H, D]; cos/sin are [S, rd/2]; `inverse` rotates by -position. Returns x."""
    rd = cos.shape[-1] * 2
    if x.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    part = x[..., -rd:]
    pairs = part.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    if inverse:
        sin = -sin
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
    part.copy_(rotated)
    return x


# ---- compressor and indexer ----------------------------------------------------------------


class Compressor(nn.Module):
    """Gated pooling of `ratio` consecutive tokens into one entry (per-channel softmax over the
    block's rows). With `overlap` (CSA) each entry pools 2*ratio rows: the previous block's low
    half and the current block's high half; entry 0's previous rows weigh exactly 0."""

    def __init__(self, config: ModelConfig, ratio: int, out_dim: int, overlap: bool, rotate: bool):
        super().__init__()
        self.ratio, self.out_dim, self.overlap = ratio, out_dim, overlap
        self.rotate = rotate  # indexer keys: Hadamard + FP4 under QAT; main entries: FP8
        self.rope_dim = config.rope_head_dim
        width = out_dim * (2 if overlap else 1)
        self.wkv = Linear(config.dim, width, bias=False, dtype=torch.float32)
        self.wgate = Linear(config.dim, width, bias=False, dtype=torch.float32)
        self.ape = nn.Parameter(torch.zeros(ratio, width, dtype=torch.float32))
        self.norm = RMSNorm(out_dim, config.norm_eps)

    def forward(
        self, x: torch.Tensor, start: int, state: CompressorState, rope: Rope, qat: bool
    ) -> int:
        """Feed tokens start..start+S-1; append every block they complete to state.pool.

        Returns the number of entries in the pool afterwards."""
        r, d = self.ratio, self.out_dim
        s = x.shape[0]
        xf = x.float()
        kv = self.wkv(xf)
        gate = self.wgate(xf) + self.ape[(torch.arange(start, start + s, device=x.device) % r)]
        held = start % r  # rows of the open block already in the tail
        if held:
            kv = torch.cat((state.tail_kv[:held], kv))
            gate = torch.cat((state.tail_gate[:held], gate))
        n_blocks, rest = divmod(kv.shape[0], r)
        first = start // r  # index of the first block completed now
        if rest:
            state.tail_kv[:rest].copy_(kv[n_blocks * r :])
            state.tail_gate[:rest].copy_(gate[n_blocks * r :])
        if n_blocks == 0:
            return first
        kv = kv[: n_blocks * r].view(n_blocks, r, -1)
        gate = gate[: n_blocks * r].view(n_blocks, r, -1)
        if self.overlap:
            if first > 0:
                prev_kv, prev_gate = state.prev_kv[None], state.prev_gate[None]
            else:  # no block before entry 0: zero rows with zero weight
                prev_kv = torch.zeros_like(state.prev_kv)[None]
                prev_gate = torch.full_like(state.prev_gate, float("-inf"))[None]
            low_kv = torch.cat((prev_kv, kv[:-1, :, :d]))  # copies, so the state can move on
            low_gate = torch.cat((prev_gate, gate[:-1, :, :d]))
            state.prev_kv.copy_(kv[-1, :, :d])
            state.prev_gate.copy_(gate[-1, :, :d])
            kv = torch.cat((low_kv, kv[:, :, d:]), dim=1)
            gate = torch.cat((low_gate, gate[:, :, d:]), dim=1)
        pooled = (kv * gate.softmax(dim=1)).sum(dim=1)
        entries = self.norm(pooled.to(state.pool.dtype))
        cos, sin = rope(torch.arange(first, first + n_blocks, device=x.device) * r)
        entries = apply_rope(entries, cos, sin)  # at each block's first position
        if qat:
            entries = (
                fp4_fake_quant(hadamard(entries))
                if self.rotate
                else _fp8_nope(entries, self.rope_dim)
            )
        state.pool[first : first + n_blocks] = entries
        return first + n_blocks


def _fp8_nope(x: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """QAT: FP8 round trip of the non-RoPE dims (blocks of 64); RoPE dims keep full precision."""
    return torch.cat((fp8_fake_quant(x[..., :-rope_dim], 64), x[..., -rope_dim:]), dim=-1)


class Indexer(nn.Module):
    """Lightning indexer: scores I(t, s) = sum_h w_{t,h} ReLU(q_{t,h} . k_s) over compressed keys."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim, self.topk = (
            config.index_n_heads,
            config.index_head_dim,
            config.index_topk,
        )
        self.wq_b = Linear(config.q_lora_rank, self.n_heads * self.head_dim, bias=False)
        self.weights_proj = Linear(config.dim, self.n_heads, bias=False)
        self.compressor = Compressor(
            config, config.csa_ratio, self.head_dim, overlap=True, rotate=True
        )
        self.scale = self.head_dim**-0.5 * self.n_heads**-0.5

    def queries(self, x, qr, cos, sin, qat: bool) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.wq_b(qr).view(x.shape[0], self.n_heads, self.head_dim)
        q = apply_rope(q, cos, sin)
        if qat:
            q = fp4_fake_quant(hadamard(q))
        w = self.weights_proj(x).float() * self.scale
        return q.float(), w

    @staticmethod
    def scores(q: torch.Tensor, w: torch.Tensor, keys: torch.Tensor, qat: bool) -> torch.Tensor:
        """[B, H, c] queries, [B, H] weights, [T, c] keys -> [B, T] fp32 scores.

        All heads go through one GEMM per slice of keys (the ReLU forbids folding the heads
        together first); slices bound the [B, H, slice] temporary, and every key is read once.
        Keys stored in bf16/fp16 are multiplied in that dtype, as the official graph does -
        upcasting a 1M-token key pool to fp32 at every decode step would triple its traffic."""
        b, n_heads, _ = q.shape
        n = keys.shape[0]
        qm = q.reshape(b * n_heads, -1).to(keys.dtype)
        out = torch.empty(b, n, device=q.device)
        step = max(1, blocking(q.device)[1] // (b * n_heads))
        for i in range(0, n, step):
            s = (qm @ keys[i : i + step].T).float().view(b, n_heads, -1).relu_()
            if qat:  # the official graph computes index scores in bf16
                s = (s.bfloat16().float() * w.bfloat16().float().unsqueeze(-1)).bfloat16().float()
                out[:, i : i + step] = s.sum(1).bfloat16().float()
            else:
                out[:, i : i + step] = torch.bmm(w.unsqueeze(1), s).squeeze(1)
        return out


def select_topk(scores: torch.Tensor, visible: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean [B, T]: the k best visible entries per row (all visible ones if fewer).

    Ties are broken deterministically toward the lower (older) entry index: every entry scoring
    above the k-th value is taken, then entries equal to it in index order until k are chosen."""
    scores = scores.masked_fill(~visible, float("-inf"))
    kth = scores.topk(k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
    chosen = (scores >= kth) & visible
    if bool((chosen.sum(-1) > k).any()):  # a tie straddles the k-th place: lowest indices win
        above = scores > kth
        tied = scores == kth
        room = k - above.sum(-1, keepdim=True)
        chosen = (above | (tied & (tied.cumsum(-1) <= room))) & visible
    return chosen


def chosen_to_index(chosen: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean [B, T] with at most k set per row -> [B, k] entry indices in order, -1 padded."""
    b, t = chosen.shape
    slot = chosen.cumsum(-1) - 1
    index = torch.full((b, k + 1), -1, dtype=torch.long, device=chosen.device)
    cols = torch.arange(t, device=chosen.device).expand(b, t)
    index.scatter_(1, torch.where(chosen, slot, k), cols)  # unchosen columns land in spare slot k
    return index[:, :k]


# ---- attention -----------------------------------------------------------------------------


def visible_entries(t: torch.Tensor, ratio: int) -> torch.Tensor:
    """How many compressed entries query position t may use: entry i covers tokens
    ratio*i .. ratio*i + ratio-1 and becomes visible at the token that completes it."""
    return (t + 1) // ratio


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        c = config
        self.kind = c.layer_types[layer]
        self.ratio = c.ratio(layer)
        self.n_heads, self.head_dim, self.rope_dim = c.n_heads, c.head_dim, c.rope_head_dim
        self.window, self.groups, self.eps = c.window_size, c.o_groups, c.norm_eps
        self.wq_a = Linear(c.dim, c.q_lora_rank, bias=False)
        self.q_norm = RMSNorm(c.q_lora_rank, c.norm_eps)
        self.wq_b = Linear(c.q_lora_rank, c.n_heads * c.head_dim, bias=False)
        self.wkv = Linear(c.dim, c.head_dim, bias=False)
        self.kv_norm = RMSNorm(c.head_dim, c.norm_eps)
        # grouped output projection: [groups * o_lora_rank, n_heads * head_dim / groups]
        self.wo_a = Linear(
            c.n_heads * c.head_dim // c.o_groups, c.o_groups * c.o_lora_rank, bias=False
        )
        self.wo_b = Linear(c.o_groups * c.o_lora_rank, c.dim, bias=False)
        self.attn_sink = nn.Parameter(torch.zeros(c.n_heads, dtype=torch.float32))
        self.compressor = (
            Compressor(c, self.ratio, c.head_dim, overlap=self.kind == CSA, rotate=False)
            if self.kind != SWA
            else None
        )
        self.indexer = Indexer(c) if self.kind == CSA else None
        self.scale = c.head_dim**-0.5  # exactly 512^-0.5 in V4: no YaRN mscale

    def forward(
        self, x: torch.Tensor, start: int, lc: LayerCache, rope: Rope, qat: bool
    ) -> torch.Tensor:
        s = x.shape[0]
        positions = torch.arange(start, start + s, device=x.device)
        cos, sin = rope(positions)
        qr = self.q_norm(self.wq_a(x))
        q = rms(self.wq_b(qr).view(s, self.n_heads, self.head_dim), self.eps)
        q = apply_rope(q, cos, sin)
        kv = apply_rope(self.kv_norm(self.wkv(x)), cos, sin)
        if qat:
            kv = _fp8_nope(kv, self.rope_dim)

        # compressed entries first: a block becomes visible at the token that completes it
        n_entries = 0
        if self.compressor is not None:
            n_entries = self.compressor(x, start, lc.comp, rope, qat)
        iq = iw = None
        if self.indexer is not None:
            self.indexer.compressor(x, start, lc.index, rope, qat)
            iq, iw = self.indexer.queries(x, qr, cos, sin, qat)

        # window rows: the ring's previous window_size-1 tokens, then this chunk
        first = max(0, start - self.window + 1)
        ring = lc.window
        prev = ring[torch.arange(first, start, device=x.device) % self.window]
        rows = torch.cat((prev, kv.to(ring.dtype)))

        query_block, budget = blocking(x.device)
        n_keys = query_block + self.window
        if self.kind == HCA:
            n_keys += n_entries
        elif self.kind == CSA:
            n_keys += min(n_entries, DENSE_PICK * self.indexer.topk)
        block = max(1, min(query_block, budget // (self.n_heads * n_keys)))
        out = torch.empty(s, self.n_heads, self.head_dim, dtype=x.dtype, device=x.device)
        for j0 in range(0, s, block):
            j1 = min(s, j0 + block)
            t = positions[j0:j1]
            r0 = max(0, start + j0 - self.window + 1) - first  # rows this block can see
            r1 = start + j1 - first
            lo = (t - self.window + 1).clamp_(min=0).sub_(first + r0)
            parts: list[Span | Picked] = [Span(rows[r0:r1], lo, t + (1 - first - r0))]
            if self.compressor is not None:
                visible = visible_entries(t, self.ratio)
                top = visible_entries(start + j1 - 1, self.ratio)
                if top > 0:
                    pool = lc.comp.pool[:top]
                    zero = torch.zeros_like(visible)
                    if self.indexer is None or top <= self.indexer.topk:
                        parts.append(Span(pool, zero, visible))
                    else:
                        k = self.indexer.topk
                        sc = Indexer.scores(iq[j0:j1], iw[j0:j1], lc.index.pool[:top], qat)
                        mask = torch.arange(top, device=x.device)[None, :] < visible[:, None]
                        chosen = select_topk(sc, mask, k)
                        if top <= DENSE_PICK * k:  # short pool: one GEMM over it, masked
                            parts.append(Span(pool, zero, visible, chosen))
                        else:
                            parts.append(Picked(pool, chosen_to_index(chosen, k)))
            out[j0:j1] = sparse_attention(q[j0:j1], self.attn_sink, self.scale, parts).to(x.dtype)

        tail = min(s, self.window)
        ring[positions[s - tail :] % self.window] = kv[s - tail :].to(ring.dtype)

        # values carried their own rotation; undo it at the query position, then project
        out = apply_rope(out, cos, sin, inverse=True)
        grouped = out.view(s, self.groups, -1)
        wo_a = self.wo_a.weight.view(self.groups, -1, grouped.shape[-1])
        o = torch.einsum("sgd,grd->sgr", grouped, wo_a)
        return self.wo_b(o.flatten(1))


# ---- MoE -----------------------------------------------------------------------------------


def swiglu(gate: torch.Tensor, up: torch.Tensor, limit: float) -> torch.Tensor:
    """fp32 SwiGLU; `limit` > 0 clamps gate from above and up on both sides (routed experts)."""
    gate, up = gate.float(), up.float()
    if limit > 0:
        gate = gate.clamp(max=limit)
        up = up.clamp(min=-limit, max=limit)
    return F.silu(gate) * up


class Experts(nn.Module):
    """Routed experts stored dense as stacked [E, ...] weights (HF and bf16 checkpoints)."""

    def __init__(self, n: int, dim: int, inter: int, limit: float):
        super().__init__()
        self.limit = limit
        self.w1 = nn.Parameter(torch.empty(n, inter, dim))
        self.w3 = nn.Parameter(torch.empty(n, inter, dim))
        self.w2 = nn.Parameter(torch.empty(n, dim, inter))

    def weights(self, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.w1[e], self.w3[e], self.w2[e]

    def run(self, e: int, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        w1, w3, w2 = self.weights(e)
        h = swiglu(x @ w1.T, x @ w3.T, self.limit) * weight  # route weight before w2, as trained
        return h.to(w2.dtype) @ w2.T


class PackedWeight:
    """One routed-expert matrix in its checkpoint encoding (FP4 e2m1 or FP8 e4m3 + UE8M0 scales).

    `fetch` returns zero-copy views of the memory-mapped checkpoint; it is called the first time a
    token selects the expert, so loading reads none of the ~150 GB of V4-Flash's packed experts."""

    def __init__(
        self, fmt: str, nbytes: int, fetch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ):
        self.fmt, self.nbytes, self._fetch = fmt, nbytes, fetch
        self.device = torch.device("cpu")
        self._tensors: tuple[torch.Tensor, torch.Tensor] | None = None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(packed data, scales) on this weight's device, read on first call."""
        if self._tensors is None:
            data, scale = self._fetch()
            self._tensors = (data.to(self.device), scale.to(self.device))
        return self._tensors

    def dequantise(self, dtype: torch.dtype) -> torch.Tensor:
        data, scale = self.tensors()
        w = dequant_fp4(data, scale) if self.fmt == "fp4" else dequant_fp8(data, scale)
        return w.to(dtype)


class PackedExperts(nn.Module):
    """Routed experts kept in their checkpoint encoding; only the experts a chunk selects are
    read (on first selection) and dequantised (at every use)."""

    def __init__(self, n: int, limit: float, dtype: torch.dtype):
        super().__init__()
        self.limit, self.dtype, self.n = limit, dtype, n
        # per expert: {"w1": PackedWeight, "w3": ..., "w2": ...}; not parameters
        self.packed: list[dict[str, PackedWeight]] = [{} for _ in range(n)]

    def weights(self, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.packed[e]
        return tuple(m[name].dequantise(self.dtype) for name in ("w1", "w3", "w2"))

    run = Experts.run

    def to_device(self, device: torch.device) -> None:
        """Accelerators get every expert copied to device memory now (a read from disk in the
        middle of generation would stall it); on CPU the mapping is read lazily."""
        for entry in self.packed:
            for weight in entry.values():
                weight.device = device
                if device.type != "cpu":
                    weight.tensors()

    def nbytes(self) -> int:
        return sum(w.nbytes for e in self.packed for w in e.values())


class SharedExpert(nn.Module):
    def __init__(self, dim: int, inter: int):
        super().__init__()
        self.w1 = Linear(dim, inter, bias=False)
        self.w2 = Linear(inter, dim, bias=False)
        self.w3 = Linear(dim, inter, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no SwiGLU clamp on the shared expert (only routed experts were trained with it)
        return self.w2(swiglu(self.w1(x), self.w3(x), 0.0).to(x.dtype))


class Gate(nn.Module):
    def __init__(self, config: ModelConfig, hashed: bool):
        super().__init__()
        c = config
        self.k, self.func, self.scale, self.normalise = (
            c.n_activated_experts,
            c.score_func,
            c.route_scale,
            c.norm_topk_prob,
        )
        self.hashed = hashed
        self.weight = nn.Parameter(torch.empty(c.n_routed_experts, c.dim, dtype=torch.float32))
        if hashed:
            self.register_buffer(
                "tid2eid", torch.zeros(c.vocab_size, c.n_activated_experts, dtype=torch.long)
            )
            self.bias = None
        else:
            self.bias = nn.Parameter(torch.zeros(c.n_routed_experts, dtype=torch.float32))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = x.float() @ self.weight.T
        if self.func == "softmax":
            scores = logits.softmax(-1)
        elif self.func == "sigmoid":
            scores = logits.sigmoid()
        else:
            scores = F.softplus(logits).sqrt()
        if self.hashed:
            indices = self.tid2eid[ids]
        else:  # the bias steers selection only, never the weights
            indices = (scores + self.bias).topk(self.k, dim=-1).indices
        weights = scores.gather(1, indices)
        if self.normalise:
            weights = weights / weights.sum(-1, keepdim=True)
        return weights * self.scale, indices


class MoE(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        layer: int,
        packed: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        c = config
        self.n_experts = c.n_routed_experts
        self.gate = Gate(c, c.hash_layers[layer])
        if packed:
            self.experts: Experts | PackedExperts = PackedExperts(
                c.n_routed_experts, c.swiglu_limit, dtype
            )
        else:
            self.experts = Experts(c.n_routed_experts, c.dim, c.moe_inter_dim, c.swiglu_limit)
        self.shared_experts = SharedExpert(c.dim, c.moe_inter_dim * c.n_shared_experts)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        weights, indices = self.gate(x, ids)
        y = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32, device=x.device)
        counts = torch.bincount(indices.flatten(), minlength=self.n_experts).tolist()
        for e, n in enumerate(counts):
            if n:
                tok, slot = torch.where(indices == e)
                y.index_add_(0, tok, self.experts.run(e, x[tok], weights[tok, slot, None]).float())
        y += self.shared_experts(x).float()
        return y.to(x.dtype)


# ---- manifold-constrained hyper-connections -------------------------------------------------


def hc_mix(h: torch.Tensor, fn: torch.Tensor, norm_eps: float) -> torch.Tensor:
    """Mixing logits of streams [S, n, D]: (flat @ fn.T) / rms(flat), fp32 (blocks and head)."""
    flat = h.flatten(1).float()
    return (flat @ fn.T) * torch.rsqrt(flat.square().mean(-1, keepdim=True) + norm_eps)


def hc_pre(
    h: torch.Tensor,
    fn: torch.Tensor,
    scale: torch.Tensor,
    base: torch.Tensor,
    iters: int,
    eps: float,
    norm_eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Streams [S, n, D] -> (sublayer input [S, D], post [S, n], comb [S, n, n]); fp32 maths."""
    s, n, _ = h.shape
    mix = hc_mix(h, fn, norm_eps)
    pre = torch.sigmoid(mix[:, :n] * scale[0] + base[:n]) + eps
    post = 2 * torch.sigmoid(mix[:, n : 2 * n] * scale[1] + base[n : 2 * n])
    comb = (mix[:, 2 * n :] * scale[2] + base[2 * n :]).view(s, n, n).softmax(-1).add_(eps)
    # Sinkhorn towards a doubly stochastic matrix: columns first, then (rows, columns) rounds.
    # Laid out [j, k, S] so the tiny n x n reductions run along contiguous token vectors.
    c = comb.permute(1, 2, 0).contiguous()
    c.div_(c.sum(0, keepdim=True).add_(eps))
    for _ in range(iters - 1):
        c.div_(c.sum(1, keepdim=True).add_(eps))
        c.div_(c.sum(0, keepdim=True).add_(eps))
    comb = c.permute(2, 0, 1).contiguous()
    y = torch.bmm(pre.unsqueeze(1), h.float()).squeeze(1)  # sum_k pre_k * stream_k
    return y.to(h.dtype), post, comb


def hc_post(
    f: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor
) -> torch.Tensor:
    """New stream k = post_k * f + sum_j comb[j, k] * residual_j (comb is used transposed)."""
    out = torch.bmm(comb.transpose(1, 2), residual.float())
    out.addcmul_(post.unsqueeze(-1), f.float().unsqueeze(1))  # in place: no [S, n, D] temporary
    return out.to(residual.dtype)


class Block(nn.Module):
    def __init__(
        self, config: ModelConfig, layer: int, packed_experts: bool = False, dtype=torch.float32
    ):
        super().__init__()
        c = config
        self.attn = Attention(c, layer)
        self.ffn = MoE(c, layer, packed_experts, dtype)
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        mix = (2 + c.hc_mult) * c.hc_mult
        self.hc_attn_fn = nn.Parameter(torch.zeros(mix, c.hc_mult * c.dim, dtype=torch.float32))
        self.hc_ffn_fn = nn.Parameter(torch.zeros(mix, c.hc_mult * c.dim, dtype=torch.float32))
        self.hc_attn_base = nn.Parameter(torch.zeros(mix, dtype=torch.float32))
        self.hc_ffn_base = nn.Parameter(torch.zeros(mix, dtype=torch.float32))
        self.hc_attn_scale = nn.Parameter(torch.ones(3, dtype=torch.float32))
        self.hc_ffn_scale = nn.Parameter(torch.ones(3, dtype=torch.float32))
        self.hc = (c.hc_sinkhorn_iters, c.hc_eps, c.norm_eps)

    def forward(
        self, h: torch.Tensor, start: int, lc: LayerCache, ids: torch.Tensor, rope: Rope, qat: bool
    ):
        x, post, comb = hc_pre(h, self.hc_attn_fn, self.hc_attn_scale, self.hc_attn_base, *self.hc)
        h = hc_post(self.attn(self.attn_norm(x), start, lc, rope, qat), h, post, comb)
        x, post, comb = hc_pre(h, self.hc_ffn_fn, self.hc_ffn_scale, self.hc_ffn_base, *self.hc)
        return hc_post(self.ffn(self.ffn_norm(x), ids), h, post, comb)


class Transformer(nn.Module):
    def __init__(
        self, config: ModelConfig, packed_experts: bool = False, dtype: torch.dtype = torch.float32
    ):
        super().__init__()
        c = self.config = config
        self.embed = Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(Block(c, i, packed_experts, dtype) for i in range(c.n_layers))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        # logits in fp32: bf16 would flatten the distribution the sampler sees
        self.head = Linear(c.dim, c.vocab_size, bias=False, dtype=torch.float32)
        self.hc_head_fn = nn.Parameter(
            torch.zeros(c.hc_mult, c.hc_mult * c.dim, dtype=torch.float32)
        )
        self.hc_head_base = nn.Parameter(torch.zeros(c.hc_mult, dtype=torch.float32))
        self.hc_head_scale = nn.Parameter(torch.ones(1, dtype=torch.float32))
        self.ropes: dict[str, Rope] = {}
        self.qat = False

    def setup(self, device: torch.device) -> None:
        """Build the non-parameter state (RoPE frequencies) on the device."""
        c = self.config
        self.ropes = {
            SWA: Rope(c.rope, c.rope_head_dim, device),
            CSA: Rope(c.compress_rope, c.rope_head_dim, device),
        }
        self.ropes[HCA] = self.ropes[CSA]

    def forward(
        self, ids: torch.Tensor, cache: Cache, last_only: bool = False, logits: bool = True
    ) -> torch.Tensor | None:
        """ids [S] continuing the cache -> logits [S, vocab] (or [1, vocab]) in fp32; None with
        `logits=False` (an inner chunk of a long prefill: the head is not run at all).

        Runs layer by layer over the whole chunk (every layer sees all S tokens before the next
        layer starts); the caller bounds S."""
        c = self.config
        start = cache.length
        cache.begin_write(ids.shape[0])
        h = self.embed(ids).unsqueeze(1).expand(-1, c.hc_mult, -1).contiguous()
        for i, layer in enumerate(self.layers):
            h = layer(h, start, cache.layers[i], ids, self.ropes[c.layer_types[i]], self.qat)
        cache.length = start + ids.shape[0]
        if not logits:
            return None
        if last_only:
            h = h[-1:]
        mix = hc_mix(h, self.hc_head_fn, c.norm_eps)
        pre = torch.sigmoid(mix * self.hc_head_scale + self.hc_head_base) + c.hc_eps
        x = (pre.unsqueeze(-1) * h.float()).sum(1)
        return self.head(self.norm(x).float())
