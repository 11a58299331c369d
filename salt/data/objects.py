"""Truth objects of a jet (`data.mf_config`): the hadrons a MaskFormer learns to find.

    mf_config:
      object:
        name: truth_hadrons             # the (N, K) dataset of object slots per jet
        id_label: barcode               # matched against the constituents' id label
        class_label: flavour            # raw class values, each listed below
        object_classes: {b: {raw: 5, mapped: 0}, c: {raw: 4, mapped: 1}, null: {raw: -1, mapped: 2}}
      constituent:
        name: tracks
        id_label: ftagTruthParentBarcode  # the id of the object each constituent comes from

Tasks name the objects by ``input_name: objects``. The loader reads the object dataset of every
batch and delivers ``batch["labels"]["objects"]``: ``(B, K)`` arrays of the id label and the
class label (int64, raw values: the model maps them), ``valid`` (bool; all True when the dataset
has no ``valid`` field) and every label a task asks for (floats float32, NaN on padding). Objects
stay padded: K is small and the matching works per slot. The constituent id label travels packed
with the constituent's other labels. A constituent whose id matches no object of its jet belongs
to none (a primary or pile-up track); that is the model's rule, the loader only delivers ids.

Refused before training: a missing object dataset, id or class label, a missing constituent id
label, and (per batch, on valid slots) a class value that ``object_classes`` does not list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from salt.data.records import Columns, as_bytes, field_view
from salt.data.targets import MultiTarget, apply_rules
from salt.errors import SaltError, close_matches

#: the config name of the truth objects: tasks' ``input_name``, the key under ``labels``
OBJECTS = "objects"
VALID = "valid"

_OBJECT_KEYS = {"name", "id_label", "class_label", "object_classes"}
_CONSTITUENT_KEYS = {"name", "id_label", "class_label", "object_classes"}


def _plain(value):
    """A parsed config's Namespaces as plain dicts, recursively."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ObjectConfig:
    """The parsed `data.mf_config` (see the module docstring)."""

    dataset: str
    id_label: str
    class_label: str
    class_names: tuple[str, ...]
    raw_classes: tuple[int, ...]  # the raw class value of each name, in the same order
    constituent: str
    constituent_id: str

    @classmethod
    def parse(cls, mf_config) -> ObjectConfig | None:
        """Check `mf_config` (a dict or a parsed Namespace) without opening a file."""
        config = _plain(mf_config)
        if not config:
            return None
        if not isinstance(config, dict) or set(config) != {"object", "constituent"}:
            found = sorted(config) if isinstance(config, dict) else repr(config)
            raise SaltError(
                f"data.mf_config needs exactly the keys 'object' and 'constituent', found "
                f"{found}. Example: {{object: {{name: truth_hadrons, id_label: barcode, "
                "class_label: flavour, object_classes: {b: {raw: 5, mapped: 0}, null: {raw: -1, "
                "mapped: 1}}}, constituent: {name: tracks, id_label: ftagTruthParentBarcode}}."
            )
        obj = _section(config, "object", _OBJECT_KEYS, ("name", "id_label", "class_label"))
        part = _section(config, "constituent", _CONSTITUENT_KEYS, ("name", "id_label"))
        classes = obj.get("object_classes")
        if not isinstance(classes, dict) or not classes:
            raise SaltError(
                "data.mf_config.object.object_classes must map each class name to {raw: <value "
                f"in the file>, mapped: <class index>}}, found {classes!r}."
            )
        names, raw = [], []
        for name, entry in classes.items():
            try:
                raw.append(int(entry["raw"]))
                int(entry["mapped"])
            except (KeyError, TypeError, ValueError):
                raise SaltError(
                    f"data.mf_config.object.object_classes.{name}: expected {{raw: <integer "
                    f"value in the file>, mapped: <class index>}}, found {entry!r}."
                ) from None
            names.append("null" if name is None else str(name))  # YAML's `null:` key
        if len(set(raw)) != len(raw):
            raise SaltError(
                f"data.mf_config.object.object_classes: two classes share a raw value ({raw})."
            )
        return cls(
            dataset=str(obj["name"]),
            id_label=str(obj["id_label"]),
            class_label=str(obj["class_label"]),
            class_names=tuple(names),
            raw_classes=tuple(raw),
            constituent=str(part["name"]),
            constituent_id=str(part["id_label"]),
        )

    def with_labels(self, labels: dict[str, list[str]]) -> dict[str, list[str]]:
        """`labels` plus what the objects need: their id and class, the constituents' id."""
        out = {name: list(fields) for name, fields in labels.items()}
        needed = {OBJECTS: [self.id_label, self.class_label]}
        needed[self.constituent] = [self.constituent_id]
        for name, wanted in needed.items():
            fields = out.setdefault(name, [])
            fields.extend(f for f in wanted if f not in fields)
        return out

    def listed(self) -> str:
        return ", ".join(f"{n}: {r}" for n, r in zip(self.class_names, self.raw_classes))

    # ----------------------------------------------------------------------------- files
    def check_objects(self, record: np.dtype, where: str) -> None:
        """The object dataset's record has integer id and class labels."""
        for key in ("id_label", "class_label"):
            _check_integer(record, getattr(self, key), self.dataset, f"object.{key}", where)

    def check_constituent(self, record: np.dtype, dataset: str, where: str) -> None:
        """The constituent dataset's record has the integer id label."""
        _check_integer(record, self.constituent_id, dataset, "constituent.id_label", where)

    def check_classes(self, classes: np.ndarray, valid: np.ndarray, start: int, where: str) -> None:
        """Every valid slot's raw class (`(B, K)` int64) is one of `object_classes`."""
        known = ~valid
        for raw in self.raw_classes:  # a few classes: cheaper than np.isin's sort
            known |= classes == raw
        if known.all():
            return
        row, slot = np.argwhere(~known)[0]
        raise SaltError(
            f"{where}: '{self.class_label}' of dataset '{self.dataset}' is {classes[row, slot]} "
            f"for jet {start + int(row)} (object slot {slot}), a value that "
            f"data.mf_config.object.object_classes does not list ({self.listed()}). Add a class "
            "for it (with the null class's mapped index to ignore such objects)."
        )


def _section(config: dict, key: str, allowed: set[str], required: tuple[str, ...]) -> dict:
    section = config[key]
    if not isinstance(section, dict):
        raise SaltError(f"data.mf_config.{key} must be a mapping, found {section!r}.")
    unknown = sorted(set(section) - allowed)
    missing = [k for k in required if not section.get(k)]
    if unknown or missing:
        problem = f"lacks {missing}" if missing else f"has unknown keys {unknown}"
        raise SaltError(
            f"data.mf_config.{key} {problem}; it takes {sorted(allowed)} (needs {list(required)})."
        )
    return section


def _check_integer(record: np.dtype, label: str, dataset: str, key: str, where: str) -> None:
    fields = record.names or ()
    if label not in fields:
        raise SaltError(
            f"{where}: dataset '{dataset}' has no variable '{label}', which "
            f"data.mf_config.{key} names.{close_matches(label, fields)} Fix data.mf_config, or "
            "use a file written with the truth objects."
        )
    if record.fields[label][0].kind not in "iu":
        raise SaltError(
            f"{where}: '{label}' of dataset '{dataset}' (data.mf_config.{key}) has type "
            f"{record.fields[label][0]}; object ids and classes must be integers."
        )


def read_objects(
    records: np.ndarray,
    labels: list[tuple[str, int, np.dtype]],
    valid_offset: int,
    config: ObjectConfig,
    rules: list[MultiTarget],
    start: int,
    where: str,
) -> dict[str, np.ndarray]:
    """The object labels of one batch from its raw records `(B, K)`, each `(B, K)`.

    `labels` are ``(field, byte offset, dtype)`` in the record; integers come out int64, floats
    float32 with NaN where the slot is not valid, and ``valid`` (bool) last. `valid_offset` is
    -1 when the dataset has no ``valid`` field: then every slot counts as valid.
    """
    shape = records.shape
    flat = as_bytes(records)
    if valid_offset >= 0:
        valid = field_view(flat, valid_offset, np.dtype(bool))[:, 0].reshape(shape).copy()
    else:
        valid = np.ones(shape, bool)
    out: dict[str, np.ndarray] = {}
    for label, offset, dtype in labels:
        values = field_view(flat, offset, dtype)[:, 0]
        out[label] = values.astype(np.float32 if dtype.kind == "f" else np.int64)
    if rules:
        apply_rules(rules, Columns(flat, records.dtype), out)
    padding = ~valid
    blank = padding.any()
    for label, values in out.items():
        values = values.reshape(shape)
        if blank and values.dtype.kind == "f":
            np.copyto(values, np.nan, where=padding)
        out[label] = values
    config.check_classes(out[config.class_label], valid, start, where)
    out[VALID] = valid
    return out
