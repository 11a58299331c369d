"""Every attention kernel salt uses, behind one function and one module.

Backends (shapes: B jets, H heads, L slots, N packed tokens, d per-head features):

* ``math``: explicit softmax(QK^T/sqrt(d)) V with a masked, NaN-safe softmax. Exports to ONNX.
* ``sdpa``: `torch.nn.functional.scaled_dot_product_attention` over padded slots.
* ``varlen``: `torch.nn.attention.varlen.varlen_attn` over packed tokens (CUDA only; on CPU it
  has no kernel, and the packed layout falls back to sdpa over the batch's longest jet).
* ``auto``: varlen for packed tokens on a GPU, sdpa otherwise.

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
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        backend: str = "auto",
        dropout: float = 0.0,
        qk_norm: bool = False,
        v_norm: bool = False,
    ):
        super().__init__()
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

    def forward(self, x: Tensor, layout) -> Tensor:
        """(N, D) packed or (B, L, D) padded -> same shape."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(-3)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.v_norm is not None:
            v = self.v_norm(v)
        dropout = self.dropout if self.training else 0.0
        out = layout.attention(q, k, v, self.backend, dropout)
        # the output projection as one einsum over (heads, features): flattening the heads first
        # exports as Reshape(-1), which onnxruntime cannot resolve for a jet with 0 tracks
        weight = self.out.weight.unflatten(1, (self.num_heads, self.head_dim))
        return torch.einsum("...hd,ehd->...e", out, weight) + self.out.bias
