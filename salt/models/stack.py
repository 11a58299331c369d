"""What the attention encoders share: norms, a feed-forward block and a stack of residual layers."""

from __future__ import annotations

from torch import Tensor, nn

from salt.models.dense import activation as make_activation

NORMS = ("LayerNorm", "RMSNorm")


def make_norm(name: str, dim: int) -> nn.Module:
    """A ``LayerNorm`` or ``RMSNorm`` over the last axis of size `dim`."""
    if name not in NORMS:
        raise ValueError(f"norm '{name}' is not one of {NORMS}")
    return getattr(nn, name)(dim)


class FeedForward(nn.Module):
    """The token-wise block after attention: (..., embed_dim) -> (..., embed_dim).

    ``out(drop(act(in(x))))``, or with ``gated`` a gated linear unit, ``out(drop(act(a) * b))``
    with ``[a, b] = in(x)`` (Shazeer, arXiv:2002.05202): the input projection is twice as wide.

    Parameters
    ----------
    embed_dim
        Features in and out.
    hidden
        Width of the hidden layer (of each half when gated).
    activation
        torch.nn class name.
    dropout
        Dropout on the hidden layer.
    gated
        Use a gated linear unit.
    """

    def __init__(
        self,
        embed_dim: int,
        hidden: int,
        activation: str = "SiLU",
        dropout: float = 0.0,
        gated: bool = False,
    ):
        super().__init__()
        self.gated = gated
        self.inp = nn.Linear(embed_dim, 2 * hidden if gated else hidden)
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x)
        if self.gated:
            a, b = h.chunk(2, dim=-1)
            h = self.act(a) * b
        else:
            h = self.act(h)
        return self.out(self.drop(h))


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
        Normalise after the last layer (pre-norm stacks leave the residual stream unnormalised).
    norm
        ``LayerNorm`` or ``RMSNorm``.
    """

    def __init__(
        self,
        layers: list[nn.Module],
        embed_dim: int,
        out_dim: int | None,
        final_norm: bool = True,
        norm: str = "LayerNorm",
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.out_dim = out_dim or embed_dim
        self.layers = nn.ModuleList(layers)
        self.final_norm = make_norm(norm, embed_dim) if final_norm else nn.Identity()
        self.out_proj = (
            nn.Linear(embed_dim, self.out_dim) if self.out_dim != embed_dim else nn.Identity()
        )

    def forward(self, x: Tensor, layout) -> Tensor:
        """(N, embed_dim) packed or (B, L, embed_dim) padded -> (..., out_dim)."""
        for layer in self.layers:
            x = layer(x, layout)
        return self.out_proj(self.final_norm(x))
