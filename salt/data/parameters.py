"""`data.parameters`: the inputs of a parameterised network (a hypothesis mass, say).

    variables:
      parameters: [mass]
    parameters:
      mass: {train: [5, 16, 55], test: 40, prob: [0.2, 0.3, 0.5]}

The parameters are read from the jet-level dataset and come out as their own `(B, P)` float32
input, ``inputs["parameters"]``. While fitting (training and validation batches) a jet whose
value is not one of `train` (a background jet) gets one of them drawn at random, with the
probabilities `prob` (uniform when not given); the draw depends only on the seed, the epoch and
the batch. At test every jet gets the `test` value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from salt.errors import SaltError


@dataclass
class ParameterSpec:
    """One parameter's values: those in the training set, the one to test at, draw weights."""

    train: list[float]
    test: float
    prob: list[float] | None = None


@dataclass
class Parameter:
    name: str
    train: np.ndarray  # (K,) float32
    test: np.float32
    prob: np.ndarray | None  # (K,) float64, sums to 1


def _as_dict(spec) -> dict:
    if isinstance(spec, ParameterSpec):
        return {"train": spec.train, "test": spec.test, "prob": spec.prob}
    if hasattr(spec, "as_dict"):  # a parsed config's Namespace
        return spec.as_dict()
    if isinstance(spec, dict):
        return spec
    raise SaltError(f"should be {{train: [values], test: value, prob: [...]}}, found {spec!r}")


def parse_parameters(spec: dict | None, names: list[str] | None) -> list[Parameter]:
    """Check `data.parameters` against `data.variables.parameters`; the parameters in order."""
    spec = dict(spec or {})
    names = list(names or [])
    if not names and not spec:
        return []
    if list(spec) != names:
        missing = [n for n in names if n not in spec]
        extra = [n for n in spec if n not in names]
        if missing:
            why = f"data.parameters has no entry for {', '.join(missing)}"
        elif extra:
            why = f"data.parameters has {', '.join(extra)}, not listed in data.variables.parameters"
        else:
            why = "the two list them in a different order"
        raise SaltError(
            f"data.variables.parameters is {names} and data.parameters names {list(spec)}: {why}. "
            "List every parameter in both, in the same order."
        )
    out = []
    for name in names:
        where = f"data.parameters.{name}"
        try:
            entry = _as_dict(spec[name])
        except SaltError as err:
            raise SaltError(f"{where} {err}.") from None
        unknown = set(entry) - {"train", "test", "prob"}
        if unknown or "train" not in entry or "test" not in entry:
            raise SaltError(
                f"{where} should have train (a list of values), test (a value) and optionally "
                f"prob; it has {', '.join(entry) or 'nothing'}."
            )
        train = np.asarray(entry["train"], np.float64)
        if train.ndim != 1 or len(train) == 0 or not np.isfinite(train).all():
            raise SaltError(
                f"{where}.train must be a non-empty list of finite numbers, found "
                f"{entry['train']!r}."
            )
        if len(np.unique(train)) != len(train):
            raise SaltError(f"{where}.train lists a value twice: {entry['train']!r}.")
        prob = entry.get("prob")
        if prob is not None:
            prob = np.asarray(prob, np.float64)
            if prob.shape != train.shape:
                raise SaltError(
                    f"{where}.prob has {prob.size} values but train has {len(train)}: give one "
                    "probability per train value."
                )
            if (prob < 0).any() or abs(prob.sum() - 1) > 1e-6:
                raise SaltError(
                    f"{where}.prob must be non-negative and sum to 1; it sums to {prob.sum():g}."
                )
            prob = prob / prob.sum()
        try:
            test = np.float32(float(entry["test"]))
        except (TypeError, ValueError):
            raise SaltError(f"{where}.test must be a number, found {entry['test']!r}.") from None
        out.append(Parameter(name, train.astype(np.float32), test, prob))
    return out


def assign_parameters(
    x: np.ndarray, parameters: list[Parameter], split: str, rng: np.random.Generator
) -> None:
    """Set the parameter columns of `x` (``(B, P)`` float32) in place for `split`."""
    for col, param in enumerate(parameters):
        if split == "test":
            x[:, col] = param.test
            continue
        # compared as float32, the type of the input, so 0.1 in the config matches 0.1 in the file
        other = ~np.isin(x[:, col], param.train)
        n = int(other.sum())
        if n:
            x[other, col] = param.train[rng.choice(len(param.train), size=n, p=param.prob)]


def check_parameter_values(jets, parameters: list[Parameter], n_jets: int, where: str) -> None:
    """Refuse a `train` value that no jet of the file carries, before training.

    Jets whose value is not one of `train` are background and get a drawn value; a `train`
    value that no jet has (other units, GeV against MeV, or a typo) would turn every signal jet
    into background and train on silently wrong inputs.

    Parameters
    ----------
    jets
        The jet-level h5py dataset (structured).
    parameters
        As parsed by :func:`parse_parameters`.
    n_jets
        Jets read from the start of the file (the preflight's count).
    where
        The file, for messages.
    """
    if not parameters or n_jets <= 0:  # data.check_jets: 0 turns the preflight off
        return
    values = jets.fields([p.name for p in parameters])[:n_jets]
    for param in parameters:
        # float32, as the inputs are compared in assign_parameters
        column = values[param.name].astype(np.float32)
        absent = [float(v) for v in param.train if not (column == v).any()]
        if absent:
            found = np.unique(column[np.isfinite(column)])
            shown = ", ".join(f"{v:g}" for v in found[:8]) + (" ..." if len(found) > 8 else "")
            raise SaltError(
                f"{where}: data.parameters.{param.name}.train lists {absent}, a value no jet of "
                f"the first {len(column)} has in '{param.name}' (values found: {shown or 'none'}). "
                "Give the values the file holds, in its units, or remove them from train."
            )
