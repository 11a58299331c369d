"""InputNorm: the norm dict's mean and std inside the model, so checkpoints and ONNX carry them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from salt.data.yamldicts import load_norm_dict
from salt.errors import SaltError


class InputNorm(nn.Module):
    """``(x - mean) / std`` per input column, in the order of the configured variable list.

    Parameters
    ----------
    variables
        The input variables of one object type, in input-column order.
    mean, std
        One value per variable. Non-finite values or a zero std are refused, naming the variable.
    name
        The object type, for messages.
    """

    def __init__(self, variables: list[str], mean: list[float], std: list[float], name: str = ""):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.as_tensor(std, dtype=torch.float32)
        if mean_t.shape != (len(variables),) or std_t.shape != (len(variables),):
            raise SaltError(f"InputNorm {name}: need one mean and one std per variable.")
        for i, var in enumerate(variables):
            m, s = float(mean_t[i]), float(std_t[i])
            if not (torch.isfinite(mean_t[i]) and torch.isfinite(std_t[i])) or s == 0:
                raise SaltError(
                    f"InputNorm: {name}.{var} has mean {m} and std {s}; both must be finite "
                    "and the std non-zero."
                )
        self.name = name
        self.variables = list(variables)
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    @classmethod
    def from_norm_dict(
        cls,
        path: str,
        variables: dict[str, list[str]],
        input_map: dict[str, str] | None = None,
    ) -> dict[str, InputNorm]:
        """One InputNorm per object type of `variables`, from UPP's norm_dict.yaml."""
        stats = load_norm_dict(path, variables, input_map)
        return {
            name: cls(
                names, [stats[name][v][0] for v in names], [stats[name][v][1] for v in names], name
            )
            for name, names in variables.items()
        }

    def forward(self, x: Tensor) -> Tensor:
        """(..., n_variables) -> same shape, normalised."""
        return (x - self.mean) / self.std
