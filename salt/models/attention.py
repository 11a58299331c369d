"""Every attention kernel salt uses, behind one function and one module.

Backends (shapes: B jets, H heads, L slots, N packed tokens, d per-head features):

* ``math``: explicit softmax(QK^T/sqrt(d)) V with a masked, NaN-safe softmax. Exports to ONNX.
* ``sdpa``: `torch.nn.functional.scaled_dot_product_attention` over padded slots.
* ``varlen``: `torch.nn.attention.varlen.varlen_attn` over packed tokens (CUDA only; on CPU it
  has no kernel, and the packed layout falls back to sdpa over the batch's longest jet).
* ``auto``: varlen for packed tokens on a GPU, sdpa otherwise.

Attention with edges (`attend_biased`, `attend_pairs`): every pair of constituents (i, j) of a
jet carries an edge embedding that adds a bias to each head's score and gates its weight,
``w_ij = g_ij softmax_j(q_i . k_j / sqrt(d) + b_ij)``. No fused kernel takes a per-pair bias and
gate, so these run as explicit math on every backend (and export as such).

The layout (`salt.models.layout`) decides how tokens reach the kernel; this module computes.
"""

from __future__ import annotations

import functools
import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

BACKENDS = ("auto", "math", "sdpa", "varlen")


@functools.cache
def varlen_available() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        log.warning("torch.nn.attention.varlen is missing in this torch: packed attention pads")
        return False
    return True


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    backend: str = "sdpa",
    dropout: float = 0.0,
) -> Tensor:
    """Attention over padded slots.

    Parameters
    ----------
    q, k, v
        (B, H, L, d).
    mask
        (B, L) bool, True for a valid key; None when all are valid.
    backend
        ``math`` or ``sdpa``.
    dropout
        Dropout on the attention weights (pass 0 outside training).

    Returns
    -------
    (B, H, L, d). Rows of padded queries hold values that callers drop.
    """
    if backend == "sdpa":
        attn_mask = None if mask is None else mask[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
    if backend != "math":
        raise ValueError(f"attention backend '{backend}' is not one of {BACKENDS}")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        # finite fill: a jet with no valid key gets uniform weights instead of NaN
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    if dropout:
        weights = F.dropout(weights, dropout)
    return weights @ v


def segment_softmax(scores: Tensor, segment: Tensor, n_segments: int) -> Tensor:
    """(P, H) -> (P, H): softmax over the entries of each segment.

    `segment` (P,) int64 holds each entry's segment in [0, n_segments). A segment with no entry
    contributes nothing; the fill of the running maximum is finite, so nothing turns NaN.
    """
    index = segment[:, None].expand_as(scores)
    peak = scores.new_full((n_segments, scores.shape[1]), torch.finfo(scores.dtype).min)
    peak = peak.scatter_reduce(0, index, scores, "amax", include_self=True)
    e = torch.exp(scores - peak[segment])
    total = e.new_zeros((n_segments, scores.shape[1])).index_add(0, segment, e)
    return e / total[segment]


def attend_biased(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor,
    gate: Tensor,
    mask: Tensor | None,
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Attention over padded slots with a bias and a gate per pair and head.

    Parameters
    ----------
    q, k, v
        (B, H, L, d).
    bias, gate
        (B, H, L, L): added to the scores, and multiplying the softmax weights.
    mask
        (B, L) bool, True for a valid key; None when all are valid.
    dropout
        Dropout on the attention weights (pass 0 outside training).

    Returns
    -------
    (B, H, L, d) outputs, and (B, H, L, L) the biased scores before the softmax (what the edge
    update reads). Rows of padded queries hold values that callers drop.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + bias
    masked = scores
    if mask is not None:
        masked = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    weights = torch.softmax(masked, dim=-1) * gate
    if dropout:
        weights = F.dropout(weights, dropout)
    return weights @ v, scores


def attend_pairs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor,
    gate: Tensor,
    jet: Tensor,
    cell: Tensor,
    query: Tensor,
    n_tokens: int,
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Attention with a bias and a gate per ordered pair of constituents, packed pair by pair.

    The products q.k and w.v run as batched matrix products on the tokens padded to the batch's
    longest jet L (the fastest kernels there are); everything per pair (the bias, the softmax
    over each query's keys, the gate, the scores the edges are updated from) runs on the P
    ordered pairs of valid constituents only.

    Parameters
    ----------
    q, k, v
        (B, H, L, d), padded to the longest jet.
    bias, gate
        (P, H), one row per ordered pair.
    jet, cell
        (P,) int64: each pair's jet, and its cell ``i * L + j`` in that jet's (L, L) grid.
    query
        (P,) int64: each pair's query token (its segment for the softmax), in [0, n_tokens).
    n_tokens
        Number of tokens N.
    dropout
        Dropout on the attention weights (pass 0 outside training).

    Returns
    -------
    (B, H, L, d) outputs (padded slots hold zeros), and (P, H) the biased scores before the
    softmax.
    """
    n_jets, heads, length, _ = q.shape
    grid = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).flatten(2)  # (B, H, L * L)
    scores = grid[jet, :, cell] + bias  # (P, H)
    weights = segment_softmax(scores, query, n_tokens) * gate
    if dropout:
        weights = F.dropout(weights, dropout)
    dense = weights.new_zeros((n_jets, heads, length * length))
    dense[jet, :, cell] = weights
    return dense.view(n_jets, heads, length, length) @ v, scores


def attend_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_len: int) -> Tensor:
    """Flash attention over packed tokens: (N, H, d) each -> (N, H, d); CUDA and fp16/bf16 only.

    `cu_seqlens` (B+1,) int32 holds where each jet's tokens start; jets never see each other.
    """
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len)


def varlen_usable(q: Tensor, backend: str, dropout: float = 0.0) -> bool:
    """Whether `attend_varlen` can serve this call (else the packed layout pads per batch).

    torch's varlen kernel has no dropout: attention dropout in training takes the padded path.
    """
    half = q.dtype in (torch.float16, torch.bfloat16)  # flash kernels take no fp32
    usable = backend in ("auto", "varlen") and q.is_cuda and half and not dropout
    return usable and varlen_available()


class MultiheadAttention(nn.Module):
    """Self-attention among the constituents of each jet, in either layout.

    Parameters
    ----------
    embed_dim
        Features per token in and out.
    num_heads
        Attention heads; must divide embed_dim.
    backend
        One of ``auto``, ``math``, ``sdpa``, ``varlen`` (see the module docstring).
    dropout
        Dropout on the attention weights, in training.
    qk_norm, v_norm
        RMS-normalise queries and keys (and values) per head before attention, which keeps the
        attention logits bounded in stacks without pre-norm (the ``hybrid`` norm_type).
    edge_dim
        Features of the edge embedding of each pair of constituents (0: no edges). Each head's
        score gets a bias and its weight a sigmoid gate, both linear in the edge embedding.
    update_edges
        Also return an update of the edges: a linear map of each pair's biased scores (one per
        head) back to edge_dim.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        backend: str = "auto",
        dropout: float = 0.0,
        qk_norm: bool = False,
        v_norm: bool = False,
        edge_dim: int = 0,
        update_edges: bool = False,
    ):
        super().__init__()
        if update_edges and not edge_dim:
            raise ValueError("update_edges needs edges: set edge_embed_dim")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if backend not in BACKENDS:
            raise ValueError(f"attention backend '{backend}' is not one of {BACKENDS}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.backend = backend
        self.dropout = dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)
        self.q_norm = nn.RMSNorm(self.head_dim) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim) if qk_norm else None
        self.v_norm = nn.RMSNorm(self.head_dim) if v_norm else None
        # bias and gate logits of every head from one projection of the edge embedding
        self.edge_proj = nn.Linear(edge_dim, 2 * num_heads) if edge_dim else None
        self.edge_out = nn.Linear(num_heads, edge_dim) if update_edges else None
        if self.edge_proj is not None:
            nn.init.zeros_(self.edge_proj.bias)

    def forward(self, x: Tensor, layout, edges: Tensor | None = None):
        """(N, D) packed or (B, L, D) padded -> same shape.

        With `edges` ((P, E) for the layout's ordered pairs, or (B, L, L, E) padded), returns
        ``(out, edge_update)``; the update is None unless update_edges.
        """
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)
        # autocast runs norms in fp32: back to the projection's dtype, so that bf16 attention
        # keeps its (varlen) kernel
        if self.q_norm is not None:
            q, k = self.q_norm(q).to(q.dtype), self.k_norm(k).to(k.dtype)
        if self.v_norm is not None:
            v = self.v_norm(v).to(v.dtype)
        dropout = self.dropout if self.training else 0.0
        if edges is None:
            return self._project(layout.attention(q, k, v, self.backend, dropout))
        if self.edge_proj is None:
            raise ValueError("edges given to an attention built without edge_dim")
        bias, gate = self.edge_proj(edges).chunk(2, dim=-1)  # (..., H) each
        out, scores = layout.biased_attention(q, k, v, bias, torch.sigmoid(gate), dropout)
        update = self.edge_out(scores) if self.edge_out is not None else None
        return self._project(out), update

    def _project(self, out: Tensor) -> Tensor:
        # the output projection as one einsum over (heads, features): flattening the heads first
        # exports as Reshape(-1), which onnxruntime cannot resolve for a jet with 0 tracks
        weight = self.out.weight.unflatten(1, (self.num_heads, self.head_dim))
        return torch.einsum("...hd,ehd->...e", out, weight) + self.out.bias
