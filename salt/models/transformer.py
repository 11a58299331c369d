"""Transformer encoder (pre-norm) over the constituents of each jet, GN2's encoder."""

from __future__ import annotations

from torch import Tensor, nn

from salt.models.attention import MultiheadAttention
from salt.models.dense import activation as make_activation


class EncoderLayer(nn.Module):
    """``x + attn(norm(x))``, then ``x + ff(norm(x))``; token-wise parts ignore the layout."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ff_dim: int,
        activation: str = "SiLU",
        dropout: float = 0.0,
        attn_backend: str = "auto",
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = MultiheadAttention(embed_dim, num_heads, attn_backend)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ff = nn.Sequential(
            nn.Linear(embed_dim, ff_dim),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(ff_dim, embed_dim),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, layout) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), layout))
        return x + self.drop(self.ff(self.norm2(x)))


class Transformer(nn.Module):
    """A stack of pre-norm encoder layers.

    Parameters
    ----------
    embed_dim
        Token features; the init nets must produce this many.
    num_layers
        Encoder layers.
    num_heads
        Attention heads per layer.
    out_dim
        Features out (a linear projection after the last layer); default embed_dim.
    ff_dim
        Hidden width of each feed-forward block; default 2 * embed_dim.
    activation
        torch.nn class name of the feed-forward activation.
    dropout
        Dropout after attention and feed-forward blocks.
    final_norm
        LayerNorm after the last layer (pre-norm stacks leave the residual stream unnormalised).
    attn_backend
        ``auto``, ``math``, ``sdpa`` or ``varlen`` (see salt.models.attention).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 8,
        out_dim: int | None = None,
        ff_dim: int | None = None,
        activation: str = "SiLU",
        dropout: float = 0.0,
        final_norm: bool = True,
        attn_backend: str = "auto",
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.out_dim = out_dim or embed_dim
        self.layers = nn.ModuleList(
            EncoderLayer(
                embed_dim, num_heads, ff_dim or 2 * embed_dim, activation, dropout, attn_backend
            )
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(embed_dim) if final_norm else nn.Identity()
        self.out_proj = (
            nn.Linear(embed_dim, self.out_dim) if self.out_dim != embed_dim else nn.Identity()
        )

    def forward(self, x: Tensor, layout) -> Tensor:
        """(N, embed_dim) packed or (B, L, embed_dim) padded -> (..., out_dim)."""
        for layer in self.layers:
            x = layer(x, layout)
        return self.out_proj(self.final_norm(x))
