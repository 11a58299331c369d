"""What the attention encoders share: a feed-forward block and a stack of residual layers."""

from __future__ import annotations

from torch import Tensor, nn

from salt.models.dense import activation as make_activation


def feed_forward(embed_dim: int, hidden: int, activation: str, dropout: float) -> nn.Sequential:
    """The token-wise block after attention: (..., embed_dim) -> (..., embed_dim)."""
    return nn.Sequential(
        nn.Linear(embed_dim, hidden),
        make_activation(activation),
        nn.Dropout(dropout),
        nn.Linear(hidden, embed_dim),
    )


class LayerStack(nn.Module):
    """Layers applied in turn, then a final norm and a projection to `out_dim`.

    Parameters
    ----------
    layers
        Modules called as ``layer(x, layout)`` that keep the token shape.
    embed_dim
        Token features through the stack.
    out_dim
        Features out (a linear projection after the norm); default embed_dim.
    final_norm
        LayerNorm after the last layer (pre-norm stacks leave the residual stream unnormalised).
    """

    def __init__(
        self, layers: list[nn.Module], embed_dim: int, out_dim: int | None, final_norm: bool = True
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.out_dim = out_dim or embed_dim
        self.layers = nn.ModuleList(layers)
        self.final_norm = nn.LayerNorm(embed_dim) if final_norm else nn.Identity()
        self.out_proj = (
            nn.Linear(embed_dim, self.out_dim) if self.out_dim != embed_dim else nn.Identity()
        )

    def forward(self, x: Tensor, layout) -> Tensor:
        """(N, embed_dim) packed or (B, L, embed_dim) padded -> (..., out_dim)."""
        for layer in self.layers:
            x = layer(x, layout)
        return self.out_proj(self.final_norm(x))
