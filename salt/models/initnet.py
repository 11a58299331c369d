"""InitNet: the first dense embedding of one input type."""

from __future__ import annotations

from torch import Tensor, nn

from salt.models.dense import Dense


class InitNet(nn.Module):
    """Embeds the (normalised) inputs of one object type into the encoder's token space.

    Parameters
    ----------
    input_name
        Object type (``tracks``, ``hits``, ``jets``, ...).
    input_size
        Input features; `SaltModel` derives it from the variable lists.
    output_size
        Embedding size (the encoder's embed_dim).
    hidden_layers, activation, dropout
        Of the dense network.
    attach_global
        Concatenate the jet-level inputs to every constituent before embedding (GN2 does).
    """

    def __init__(
        self,
        input_name: str,
        input_size: int,
        output_size: int,
        hidden_layers: list[int] | None = None,
        activation: str = "SiLU",
        dropout: float = 0.0,
        attach_global: bool = True,
    ):
        super().__init__()
        self.input_name = input_name
        self.input_size = input_size
        self.output_size = output_size
        self.attach_global = attach_global
        self.net = Dense(
            input_size,
            output_size,
            hidden_layers,
            activation,
            final_activation=True,
            dropout=dropout,
        )

    def forward(self, x: Tensor) -> Tensor:
        """(..., input_size) -> (..., output_size)."""
        return self.net(x)
