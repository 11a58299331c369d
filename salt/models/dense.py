"""Dense: the multilayer perceptron that every embedding and task head is made of."""

from __future__ import annotations

import itertools

from torch import Tensor, nn


def activation(name: str) -> nn.Module:
    """A torch activation by class name (``ReLU``, ``SiLU``, ``GELU``, ...)."""
    try:
        return getattr(nn, name)()
    except AttributeError:
        raise ValueError(
            f"unknown activation '{name}': use a torch.nn class name like SiLU"
        ) from None


class Dense(nn.Module):
    """Linear layers with an activation between them; acts on the last axis of any shape.

    Parameters
    ----------
    input_size, output_size
        Features in and out.
    hidden_layers
        Widths of the hidden layers, e.g. ``[256, 128]``.
    activation
        torch.nn class name of the activation after each hidden layer.
    final_activation
        Also apply the activation after the last layer (for embeddings, not for logits).
    dropout
        Dropout probability after each hidden activation.
    norm_layer
        Add a LayerNorm before each hidden activation.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_layers: list[int] | None = None,
        activation: str = "SiLU",
        final_activation: bool = False,
        dropout: float = 0.0,
        norm_layer: bool = False,
    ):
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        sizes = [input_size, *(hidden_layers or []), output_size]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(n_in, n_out))
            last = i == len(sizes) - 2
            if not last or final_activation:
                if norm_layer:
                    layers.append(nn.LayerNorm(n_out))
                layers.append(globals()["activation"](activation))
                if dropout and not last:
                    layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """(..., input_size) -> (..., output_size)."""
        return self.net(x)
