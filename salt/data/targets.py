"""`data.multi_target`: regression targets swapped or built by a condition on another label.

    multi_target:
      - {input_name: jets, sel_label: HadronConeExclTruthLabelID, opp: '==', value: 15,
         target: pt_btagJes, source: pt_visFromTruthTaus}           # replace where it holds
      - {input_name: jets, sel_label: HadronConeExclTruthLabelID, opp: '!=', value: 15,
         custom_target: pt_label_handle, source: pt}                # a new label, NaN elsewhere

Entries apply in order to each batch. An entry with `target` replaces that float label by
`source` where ``sel_label <opp> value`` holds; one with `custom_target` makes a new float label
(NaN until an entry fills it; the regression losses skip NaN targets), so a task may name a
label that no file has. `sel_label` and `source` are read from the file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from salt.data.records import Columns
from salt.errors import SaltError, close_matches

OPERATORS = {
    "==": np.equal,
    "!=": np.not_equal,
    ">=": np.greater_equal,
    "<=": np.less_equal,
    ">": np.greater,
    "<": np.less,
}


@dataclass
class MultiTarget:
    """One `data.multi_target` entry (see the module docstring)."""

    input_name: str
    sel_label: str
    opp: str
    value: float
    source: str
    target: str | None = None
    custom_target: str | None = None

    @property
    def label(self) -> str:
        """The label this entry writes."""
        return self.custom_target or self.target


def _as_dict(entry) -> dict:
    if isinstance(entry, MultiTarget):
        return asdict(entry)
    if hasattr(entry, "as_dict"):  # a parsed config's Namespace
        return entry.as_dict()
    return entry


def parse_multi_target(entries: list | None) -> list[MultiTarget]:
    """The entries of `data.multi_target`, checked for form (the files are checked later)."""
    out = []
    fields = list(MultiTarget.__dataclass_fields__)
    for i, raw in enumerate(entries or []):
        where = f"data.multi_target[{i}]"
        entry = _as_dict(raw)
        if not isinstance(entry, dict):
            raise SaltError(f"{where} should be a mapping with keys {', '.join(fields)}.")
        entry = {k: v for k, v in entry.items() if v is not None}
        unknown = [k for k in entry if k not in fields]
        if unknown:
            raise SaltError(
                f"{where} has unknown keys {unknown}.{close_matches(unknown[0], fields)} It takes "
                f"{', '.join(fields)}."
            )
        if ("target" in entry) == ("custom_target" in entry):
            has = "both" if "target" in entry else "neither"
            raise SaltError(
                f"{where} must have exactly one of target (replace an existing label) and "
                f"custom_target (build a new one); it has {has}."
            )
        required = ("input_name", "sel_label", "opp", "value", "source")
        missing = [k for k in required if k not in entry]
        if missing:
            raise SaltError(f"{where} lacks {', '.join(missing)}.")
        if entry["opp"] not in OPERATORS:
            raise SaltError(
                f"{where}: opp '{entry['opp']}' is unknown; use one of {' '.join(OPERATORS)}."
            )
        try:
            entry["value"] = float(entry["value"])
        except (TypeError, ValueError):
            raise SaltError(f"{where}: value {entry['value']!r} is not a number.") from None
        out.append(MultiTarget(**entry))
    return out


def check_against_record(
    rules: list[MultiTarget], name: str, record: np.dtype, dataset: str, where: str
) -> None:
    """Refuse entries of object `name` whose variables its records lack or cannot serve."""
    fields = record.names or ()
    made: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.input_name != name:
            continue
        needs = [("sel_label", rule.sel_label), ("source", rule.source)]
        if rule.target is not None and rule.target not in made:
            needs.append(("target", rule.target))
        for key, var in needs:
            if var not in fields:
                raise SaltError(
                    f"data.multi_target[{i}]: {key} '{var}' is not a variable of dataset "
                    f"'{dataset}' in {where}.{close_matches(var, fields)} Fix the entry or use a "
                    "file that has it."
                )
            dtype = record.fields[var][0]
            if dtype.kind not in "biuf" or dtype.shape:
                raise SaltError(
                    f"data.multi_target[{i}]: {key} '{var}' of dataset '{dataset}' in {where} has "
                    f"type {dtype}; it must be a numeric scalar."
                )
            if key == "target" and dtype.kind != "f":
                raise SaltError(
                    f"data.multi_target[{i}]: target '{var}' of dataset '{dataset}' in {where} is "
                    "an integer label; multi_target swaps float (regression) targets."
                )
        if rule.custom_target is not None:
            made.add(rule.custom_target)


def apply_rules(rules: list[MultiTarget], columns: Columns, labels: dict[str, np.ndarray]) -> None:
    """Write the entries' labels (`(rows,)` float32) into `labels`, in order, in place."""
    n = columns.size
    for rule in rules:
        if rule.label not in labels:
            if rule.custom_target is not None:
                labels[rule.label] = np.full(n, np.nan, np.float32)
            else:
                labels[rule.label] = columns[rule.target].astype(np.float32)
        where = OPERATORS[rule.opp](columns[rule.sel_label], rule.value)
        np.copyto(labels[rule.label], columns[rule.source], casting="unsafe", where=where)
