"""The V4 attention core: one softmax over the entries each query may see, with a sink.

Every layer type goes through `sparse_attention`. A query's visible entries are an index list
(window entries ++ compressed entries), given per query block as a few parts:

* `Span(rows, lo, hi, keep)`: query j sees rows[lo[j]:hi[j]] - a contiguous run of the index
  list - optionally thinned by a boolean `keep[j]`. The sliding window is a span over the raw
  KV rows; HCA is the span [0, (t+1) // ratio) over the compressed pool; CSA is that span
  thinned to the indexer's top-k while the span is short (a dense GEMM beats a gather there).
* `Picked(rows, index)`: query j sees rows[index[j, :]], -1 = no entry. CSA's top-k selection.

Runs are kept as spans so a block of queries shares one GEMM over its rows instead of a gather
per query; picked entries are gathered. Logits, softmax and the weighted sum are fp32 whatever
the storage dtype: the sink competes with every logit in the denominator, and bf16 logits would
shift that balance. Keys are values (shared-KV MQA): the same rows serve both.

When a block has only spans, it runs through torch's fused scaled_dot_product_attention (no
logits tensor; the CPU flash kernel is ~1.5x faster here). SDPA has no sink, so the sink enters
as one extra key: a zero row (zero value) whose additive mask entry is the head's sink logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FUSED_SPANS = True  # tests switch it off to check both paths agree
# The fused kernel tiles over queries; for a handful of queries (decode) against many keys a
# plain [B*H, D] x [D, N] GEMM that reads each key once is ~10x faster (measured on CPU).
FUSED_MIN_QUERIES = 16


@dataclass
class Span:
    rows: torch.Tensor  # [N, D]
    lo: torch.Tensor  # [B] first visible row per query
    hi: torch.Tensor  # [B] one past the last visible row per query
    keep: torch.Tensor | None = None  # [B, N] further restriction (None = the whole run)

    def visible(self) -> torch.Tensor:
        col = torch.arange(self.rows.shape[0], device=self.rows.device)
        mask = (col >= self.lo[:, None]) & (col < self.hi[:, None])  # [B, N]
        return mask & self.keep if self.keep is not None else mask


@dataclass
class Picked:
    rows: torch.Tensor  # [N, D]
    index: torch.Tensor  # [B, K] row per slot, -1 = empty


def sparse_attention(
    q: torch.Tensor, sink: torch.Tensor, scale: float, parts: list[Span | Picked]
) -> torch.Tensor:
    """q [B, H, D] -> o [B, H, D] (fp32): softmax over all parts' visible entries plus the sink.

    p_j = exp(z_j) / (sum_k exp(z_k) + exp(sink_h)); o = sum_j p_j * kv_j. The sink has no value.
    """
    if FUSED_SPANS and q.shape[0] >= FUSED_MIN_QUERIES and all(isinstance(p, Span) for p in parts):
        return _fused_spans(q, sink, scale, parts)
    qf = q.float()
    b, h, _ = qf.shape
    logits, values = [], []
    for part in parts:
        if isinstance(part, Span):
            rows = part.rows.float()
            n = rows.shape[0]
            z = (qf.reshape(b * h, -1) @ rows.T).view(b, h, n)
            visible = part.visible()
            values.append(rows)
        else:
            valid = part.index >= 0
            k = part.index.shape[1]
            rows = (
                part.rows.index_select(0, part.index.clamp(min=0).flatten()).view(b, k, -1).float()
            )
            z = torch.bmm(rows, qf.transpose(1, 2)).transpose(
                1, 2
            )  # [B, H, K]; this GEMM shape is faster
            visible = valid
            values.append(rows)
        logits.append(z.mul_(scale).masked_fill_(~visible[:, None, :], float("-inf")))
    z = torch.cat(logits, dim=-1) if len(logits) > 1 else logits[0]
    sinks = sink.float().view(1, h, 1).expand(b, h, 1)
    m = torch.maximum(z.amax(dim=-1, keepdim=True), sinks)
    p = z.sub_(m).exp_()  # in place: z is ours and no longer needed
    p.div_(p.sum(dim=-1, keepdim=True) + torch.exp(sinks - m))
    out = torch.zeros_like(qf)
    offset = 0
    for part, rows in zip(parts, values, strict=True):
        n = rows.shape[-2]
        pj = p[..., offset : offset + n]
        offset += n
        if isinstance(part, Span):
            out += (pj.reshape(b * h, n) @ rows).view(b, h, -1)
        else:
            out += torch.bmm(pj, rows)
    return out


def _fused_spans(
    q: torch.Tensor, sink: torch.Tensor, scale: float, parts: list[Span]
) -> torch.Tensor:
    b, h, d = q.shape
    rows = torch.cat([p.rows.float() for p in parts] + [q.new_zeros(1, d, dtype=torch.float32)])
    n = rows.shape[0] - 1
    visible = (
        torch.cat([p.visible() for p in parts], dim=1) if len(parts) > 1 else parts[0].visible()
    )
    mask = torch.empty(h, b, n + 1, device=q.device)
    mask[:, :, :n] = torch.zeros(b, n, device=q.device).masked_fill_(~visible, float("-inf"))
    mask[:, :, n] = sink.float()[:, None]  # the sink: logit s_h against a zero value
    keys = rows.expand(1, h, n + 1, d)
    out = F.scaled_dot_product_attention(
        q.float().transpose(0, 1)[None], keys, keys, attn_mask=mask[None], scale=scale
    )
    return out[0].transpose(0, 1)
