"""Graph attention network (GATv2-style) over the fully connected graph of a jet's tracks: GN1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salt.models.stack import FeedForward, LayerStack


class GATv2Layer(nn.Module):
    """``e_ij = a . LeakyReLU(W_l h_i + W_r h_j)``, softmax over j, ``h_i' = sum_j a_ij W_r h_j``.

    GATv2 applies the attention vector after the non-linearity, so a node's ranking of its
    neighbours can depend on the node itself (GAT's cannot). Followed, as in a transformer block, by
    a residual feed-forward update; both blocks are pre-norm.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, activation: str = "SiLU", dropout: float = 0.0
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.norm1 = nn.LayerNorm(embed_dim)
        self.lin_l = nn.Linear(embed_dim, embed_dim)
        self.lin_r = nn.Linear(embed_dim, embed_dim)
        self.att = nn.Parameter(torch.randn(num_heads, self.head_dim) / self.head_dim**0.5)
        self.out = nn.Linear(embed_dim, embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ff = FeedForward(embed_dim, 2 * embed_dim, activation, dropout)
        self.drop = nn.Dropout(dropout)

    def attention(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """(B, L, D) padded -> (B, L, D)."""
        heads = (self.num_heads, self.head_dim)
        hl = self.lin_l(x).unflatten(-1, heads)  # (B, L, H, d)
        hr = self.lin_r(x).unflatten(-1, heads)
        pair = F.leaky_relu(hl[:, :, None] + hr[:, None, :], 0.2)  # (B, L_i, L_j, H, d)
        scores = (pair * self.att).sum(-1)  # (B, L_i, L_j, H)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :, None], torch.finfo(scores.dtype).min)
        alpha = torch.softmax(scores, dim=2)
        out = torch.einsum("bijh,bjhd->bihd", alpha, hr)
        # the output projection as one einsum over (heads, features): flattening the heads first
        # exports as Reshape(-1), which onnxruntime cannot resolve for a jet with 0 tracks
        weight = self.out.weight.unflatten(1, (self.num_heads, self.head_dim))
        return torch.einsum("...hd,ehd->...e", out, weight) + self.out.bias

    def forward(self, x: Tensor, layout) -> Tensor:
        h, mask = layout.pad(self.norm1(x))
        x = x + self.drop(layout.unpad(self.attention(h, mask)))
        return x + self.drop(self.ff(self.norm2(x)))


class GATv2(LayerStack):
    """A stack of GATv2 layers with a final norm and optional output projection.

    Parameters
    ----------
    embed_dim, num_layers, num_heads
        Token features, layers, attention heads.
    out_dim
        Features out; default embed_dim.
    activation, dropout
        Of the feed-forward blocks.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        num_layers: int = 3,
        num_heads: int = 4,
        out_dim: int | None = None,
        activation: str = "SiLU",
        dropout: float = 0.0,
    ):
        layers = [GATv2Layer(embed_dim, num_heads, activation, dropout) for _ in range(num_layers)]
        super().__init__(layers, embed_dim, out_dim)
