"""Reading UPP's `norm_dict.yaml` and `class_dict.yaml`, checked against what the config asks for.

Schemas (see FORMAT.md): ``{object: {variable: {mean: float, std: float}}}`` and
``{object: {label: [weight per class]}}``.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from salt.errors import SaltError, close_matches


def _read_yaml(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SaltError(
            f"{what} '{path}' does not exist. Point --data.{what} to UPP's {what}.yaml."
        )
    try:
        with path.open() as f:
            content = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise SaltError(f"{what} '{path}' is not valid YAML: {err}") from None
    if not isinstance(content, dict):
        raise SaltError(f"{what} '{path}' should map object names to entries, found {content!r}.")
    return content


def load_norm_dict(
    path: str | Path, variables: dict[str, list[str]], input_map: dict[str, str] | None = None
) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and std of every configured variable, in config order; refuses anything unusable.

    Entries are looked up under the config name of an object first, then under its dataset name
    (a norm dict written by UPP uses dataset names).
    """
    content = _read_yaml(path, "norm_dict")
    input_map = input_map or {}
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name, names in variables.items():
        section = content.get(name, content.get(input_map.get(name, name)))
        if section is None:
            raise SaltError(
                f"norm_dict '{path}' has no entry for '{name}' (it has: {', '.join(content)}). "
                "Use the norm dict written by UPP for these files."
            )
        out[name] = {}
        for var in names:
            entry = section.get(var)
            if entry is None:
                raise SaltError(
                    f"norm_dict '{path}' has no mean/std for {name}.{var}."
                    f"{close_matches(var, section)} Add it (rerun UPP's --norm stage with the "
                    f"variable among its inputs) or drop it from data.variables.{name}."
                )
            try:
                mean, std = float(entry["mean"]), float(entry["std"])
            except (KeyError, TypeError, ValueError):
                raise SaltError(
                    f"norm_dict '{path}': {name}.{var} should be {{mean: float, std: float}}, "
                    f"found {entry!r}."
                ) from None
            if not (math.isfinite(mean) and math.isfinite(std)) or std == 0:
                raise SaltError(
                    f"norm_dict '{path}': {name}.{var} has mean {mean} and std {std}; both must be "
                    "finite and the std non-zero. A constant or broken input cannot be normalised: "
                    f"fix the file or drop '{var}' from data.variables.{name}."
                )
            out[name][var] = (mean, std)
    return out


def load_class_weights(
    path: str | Path, name: str, label: str, n_classes: int, input_map: dict[str, str] | None = None
) -> list[float]:
    """Class weights of one label from a class dict, checked against the task's class count."""
    content = _read_yaml(path, "class_dict")
    section = content.get(name, content.get((input_map or {}).get(name, name)))
    if section is None or label not in section:
        have = ", ".join(f"{k}.{v}" for k, vs in content.items() for v in (vs or {}))
        raise SaltError(
            f"class_dict '{path}' has no weights for {name}.{label} (it has: {have}). "
            "Set use_class_dict: false for that task or use UPP's class dict for these files."
        )
    weights = [float(w) for w in section[label]]
    if len(weights) != n_classes:
        raise SaltError(
            f"class_dict '{path}': {name}.{label} has {len(weights)} weights but the task has "
            f"{n_classes} classes."
        )
    return weights
