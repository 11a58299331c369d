"""Deep Sets encoder (DIPS): the same network applied to every track; a sum pooling follows."""

from __future__ import annotations

from torch import Tensor, nn

from salt.models.dense import Dense


class DeepSets(nn.Module):
    """The per-constituent network phi of ``rho(sum_i phi(x_i))``; pooling and heads give rho.

    Parameters
    ----------
    embed_dim
        Features in (from the init net).
    hidden_layers
        Hidden widths of phi.
    out_dim
        Features out.
    activation
        torch.nn class name.
    """

    def __init__(
        self,
        embed_dim: int = 64,
        hidden_layers: list[int] | None = None,
        out_dim: int = 128,
        activation: str = "ReLU",
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.out_dim = out_dim
        self.phi = Dense(
            embed_dim, out_dim, hidden_layers or [100, 100], activation, final_activation=True
        )

    def forward(self, x: Tensor, layout) -> Tensor:
        """Token-wise: (N, embed_dim) or (B, L, embed_dim) -> (..., out_dim)."""
        return self.phi(x)
