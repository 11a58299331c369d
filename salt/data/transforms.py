"""`data.transforms`: changes to the training split's inputs (augmentation), applied in order.

    transforms:
      - class_path: salt.data.transforms.GaussianNoise
        init_args:
          noise_params:
            - {input_type: jets, variable: pt_btagJes, mean: 0.0, std: 0.1}

A transform works on a batch's inputs after they are read and checked, before the model
normalises them: `(B, F)` float32 arrays for jet-level objects and `(N, F)` for the packed valid
constituents. The loader hands every call its own random generator, seeded from
`(seed, epoch, batch index, transform position)`, so the same batch of the same epoch gets the
same change whether it is read by a worker, by the training process or after a resume.
Validation and test batches are never transformed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from salt.errors import SaltError, close_matches


class Transform:
    """Base class: subclass it and name it in `data.transforms` by its class path."""

    def bind(self, variables: dict[str, list[str]]) -> None:
        """Check the transform against the configured inputs (``{object: [variable, ...]}``).

        Raises a `SaltError` for anything it cannot apply to; called before any batch is read.
        """

    def __call__(self, inputs: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        """Change `inputs` (``{object: (rows, features) float32}``) in place."""
        raise NotImplementedError


_SPEC_KEYS = ("variable", "mean", "std")


class GaussianNoise(Transform):
    """Fractional Gaussian noise: ``x -> x * (1 + n)``, ``n ~ N(mean, std)``, drawn per value.

    `mean` and `std` are fractions of the value (``std: 0.1`` smears by 10%), and every value of
    the variable (every jet, every valid constituent) gets its own draw.

    Parameters
    ----------
    noise_params
        Either a list of ``{input_type, variable, mean, std}`` or a mapping
        ``{input_type: [{variable, mean, std}, ...]}`` (both forms of salt-ml's configs).
    """

    def __init__(
        self, noise_params: list[dict[str, Any]] | dict[str, list[dict[str, Any]]]
    ) -> None:
        self.noise_params = noise_params
        self.specs = _parse_noise(noise_params)
        self._columns: list[tuple[str, int, float, float]] | None = None

    def bind(self, variables: dict[str, list[str]]) -> None:
        columns = []
        for name, variable, mean, std in self.specs:
            if name not in variables:
                raise SaltError(
                    f"GaussianNoise: input_type '{name}' is not among the inputs "
                    f"({', '.join(variables) or 'none'}).{close_matches(name, variables)} Use an "
                    "object listed under data.variables."
                )
            if variable not in variables[name]:
                raise SaltError(
                    f"GaussianNoise: variable '{variable}' is not an input of '{name}'."
                    f"{close_matches(variable, variables[name])} Noise applies to the variables "
                    f"listed under data.variables.{name}."
                )
            columns.append((name, variables[name].index(variable), mean, std))
        self._columns = columns

    def __call__(self, inputs: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        if self._columns is None:
            raise RuntimeError("GaussianNoise.bind(variables) must be called before use")
        for name, col, mean, std in self._columns:
            x = inputs[name]
            noise = rng.standard_normal(len(x), dtype=np.float32)
            noise *= std
            noise += 1 + mean
            x[:, col] *= noise

    def __repr__(self) -> str:
        return f"GaussianNoise(noise_params={self.noise_params!r})"


def _parse_noise(params) -> list[tuple[str, str, float, float]]:
    """``[(input_type, variable, mean, std), ...]`` from either config form."""
    form = (
        "a list of {input_type, variable, mean, std} or a mapping {input_type: [{variable, mean, "
        "std}]}"
    )
    if isinstance(params, dict):
        entries = []
        for name, specs in params.items():
            if not isinstance(specs, list):
                raise SaltError(f"GaussianNoise: noise_params.{name} should be a list; use {form}.")
            entries += [(name, spec) for spec in specs]
    elif isinstance(params, list):
        entries = []
        for spec in params:
            if not isinstance(spec, dict) or "input_type" not in spec:
                raise SaltError(f"GaussianNoise: entry {spec!r} has no input_type; use {form}.")
            rest = {k: v for k, v in spec.items() if k != "input_type"}
            entries.append((spec["input_type"], rest))
    else:
        raise SaltError(f"GaussianNoise: noise_params is {params!r}; use {form}.")
    out = []
    for name, spec in entries:
        if not isinstance(spec, dict) or set(spec) != set(_SPEC_KEYS):
            raise SaltError(
                f"GaussianNoise: the entry {spec!r} for '{name}' should have exactly the keys "
                f"{', '.join(_SPEC_KEYS)}."
            )
        try:
            mean, std = float(spec["mean"]), float(spec["std"])
        except (TypeError, ValueError):
            raise SaltError(
                f"GaussianNoise: mean and std of {name}.{spec['variable']} must be numbers, found "
                f"{spec['mean']!r} and {spec['std']!r}."
            ) from None
        if not (np.isfinite(mean) and np.isfinite(std)) or std < 0:
            raise SaltError(
                f"GaussianNoise: {name}.{spec['variable']} has mean {mean} and std {std}; both "
                "must be finite and the std not negative."
            )
        out.append((str(name), str(spec["variable"]), mean, std))
    return out
