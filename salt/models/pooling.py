"""Poolings: one vector per jet from its constituents (global attention, mean, sum)."""

from __future__ import annotations

from torch import Tensor, nn


class GlobalAttentionPooling(nn.Module):
    """``sum_i softmax_i(w . x_i) x_i`` over the constituents of each jet.

    Parameters
    ----------
    input_size
        Features per constituent; also the pooled size.
    """

    def __init__(self, input_size: int = 128):
        super().__init__()
        self.input_size = self.output_size = input_size
        self.gate = nn.Linear(input_size, 1)

    def forward(self, x: Tensor, layout) -> Tensor:
        """(N, D) packed or (B, L, D) padded -> (B, D); an empty jet gives zeros."""
        weights = layout.softmax(self.gate(x))
        return layout.sum(weights * x)


class MeanPooling(nn.Module):
    """Mean over the constituents of each jet."""

    def __init__(self, input_size: int = 128):
        super().__init__()
        self.input_size = self.output_size = input_size

    def forward(self, x: Tensor, layout) -> Tensor:
        return layout.mean(x)


class SumPooling(nn.Module):
    """Sum over the constituents of each jet (Deep Sets)."""

    def __init__(self, input_size: int = 128):
        super().__init__()
        self.input_size = self.output_size = input_size

    def forward(self, x: Tensor, layout) -> Tensor:
        return layout.sum(x)
