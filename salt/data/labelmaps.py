"""`data.label_maps`: raw integer labels (a PDG id, a truth type) turned into class indices.

    label_maps: {tracks: {ftagTruthTypeLabel: {11: 0, -11: 0, 13: 1, -13: 1}}}

salt fills this from the tasks' `label_map`. A raw value in the map becomes its class index; a
value not in it passes through unchanged (as in salt-ml, where a map may cover only the values
that need renumbering), and the label's range check then applies to the result.
"""

from __future__ import annotations

import numpy as np

from salt.errors import SaltError


class LabelMap:
    """One label's map, applied to whole arrays at once (a search in the sorted raw values)."""

    def __init__(self, mapping: dict, where: str):
        try:
            items = sorted((int(k), int(v)) for k, v in mapping.items())
        except (AttributeError, TypeError, ValueError):
            raise SaltError(
                f"{where} should map integer raw values to integer class indices, found "
                f"{mapping!r}."
            ) from None
        if not items:
            raise SaltError(f"{where} is empty.")
        self.keys = np.array([k for k, _ in items], np.int64)
        self.values = np.array([v for _, v in items], np.int64)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """`values` (int64) with every mapped raw value replaced by its class index."""
        pos = np.searchsorted(self.keys, values)
        np.minimum(pos, len(self.keys) - 1, out=pos)
        hit = self.keys[pos] == values
        return np.where(hit, self.values[pos], values)

    def __contains__(self, value: int) -> bool:
        return bool(np.isin(value, self.keys))


def parse_label_maps(label_maps: dict | None) -> dict[str, dict[str, LabelMap]]:
    """``{object: {field: LabelMap}}`` from ``{object: {field: {raw_value: class_index}}}``."""
    out: dict[str, dict[str, LabelMap]] = {}
    for name, fields in (label_maps or {}).items():
        if not isinstance(fields, dict):
            raise SaltError(
                f"data.label_maps.{name} should map label names to maps, found {fields!r}."
            )
        for field, mapping in fields.items():
            if mapping is None:
                continue
            if not isinstance(mapping, dict):
                raise SaltError(
                    f"data.label_maps.{name}.{field} should map raw values to class indices, "
                    f"found {mapping!r}."
                )
            out.setdefault(name, {})[field] = LabelMap(mapping, f"data.label_maps.{name}.{field}")
    return out
