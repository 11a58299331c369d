"""Transformer encoder (pre-norm) over the constituents of each jet, GN2's encoder."""

from __future__ import annotations

from torch import Tensor, nn

from salt.models.attention import MultiheadAttention
from salt.models.stack import LayerStack, feed_forward


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
        self.ff = feed_forward(embed_dim, ff_dim, activation, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, layout) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), layout))
        return x + self.drop(self.ff(self.norm2(x)))


class Transformer(LayerStack):
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
        layers = [
            EncoderLayer(
                embed_dim, num_heads, ff_dim or 2 * embed_dim, activation, dropout, attn_backend
            )
            for _ in range(num_layers)
        ]
        super().__init__(layers, embed_dim, out_dim, final_norm)
