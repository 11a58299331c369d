"""ReadPlan: how the raw records of one object type become a batch's arrays, checked once.

`plan_object` looks at a dataset of the file (its record type and shape) before any batch is
read: every variable and label is there and numeric, the options that name fields find them, and
the dataset has the shape its role needs (jet-level `(N,)`, constituents or truth objects
`(N, slots)`). What it finds, byte offsets and runs of adjacent fields included, is what
`JetDataset.convert` uses for every batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np

from salt.data.objects import OBJECTS
from salt.data.options import ReadOptions
from salt.data.records import Run, column_runs
from salt.data.selections import Selection
from salt.data.targets import MultiTarget, check_against_record
from salt.errors import SaltError, close_matches


@dataclass
class ReadPlan:
    """How to turn the raw records of one object type into the batch's arrays."""

    dataset: str  # name in the file
    record: np.dtype  # the file's record type
    constituent: bool  # packed: only its valid entries are delivered
    slots: int  # slots read per jet (constituents, objects), 0 for the jet-level object
    inputs: list[str]
    runs: list[Run]
    labels: list[tuple[str, int, np.dtype]]  # read from the file: (field, byte offset, dtype)
    valid_offset: int  # byte offset of `valid`, -1 without one
    selection: Selection | None = None
    rules: list[MultiTarget] = field(default_factory=list)  # data.multi_target entries
    objects: bool = False  # the truth objects of data.mf_config: padded labels only


def check_fields(name: str, record: np.dtype, dataset: str, names: list[str], where: str) -> None:
    """Every field of `names` is in `record` and a numeric scalar."""
    fields = record.names or ()
    for var in names:
        if var not in fields:
            raise SaltError(
                f"{where}: dataset '{dataset}' has no variable '{var}'."
                f"{close_matches(var, fields)} Remove it from data.variables.{name} (or the "
                "task that needs it as a label), or use a file that has it."
            )
        kind = record.fields[var][0].kind
        if kind not in "biuf" or record.fields[var][0].shape:
            raise SaltError(
                f"{where}: variable '{var}' of dataset '{dataset}' has "
                f"type {record.fields[var][0]}; inputs and labels must be numeric scalars."
            )


def plan_object(
    name: str,
    ds: h5py.Dataset,
    *,
    global_object: str,
    inputs: list[str],
    labels: list[str],
    options: ReadOptions,
    slots: int | None,
    where: str,
) -> ReadPlan:
    """Check dataset `ds`, read as object `name`, and plan its reading.

    `inputs` and `labels` are the fields configured for it; `slots` limits the constituent slots
    read per jet (`data.num_inputs`), None for all; `where` names the file in messages.
    """
    record = ds.dtype
    dataset = ds.name.lstrip("/")
    fields = record.names or ()
    made = options.produced(name, global_object)
    labels = [label for label in labels if label not in made]
    mf = options.objects
    objects = mf is not None and name == OBJECTS
    # the fields data.mf_config names first: a missing one is a config matter, not a task's
    if objects:
        if inputs:
            raise SaltError(
                f"data.variables.{OBJECTS}: the truth objects are labels, not inputs; remove it."
            )
        mf.check_objects(record, where)
    elif mf is not None and name == mf.constituent:
        mf.check_constituent(record, dataset, where)
    check_fields(name, record, dataset, [*inputs, *labels], where)
    for label in options.label_maps.get(name, {}):
        if label in labels and record.fields[label][0].kind not in "biu":
            raise SaltError(
                f"data.label_maps.{name}.{label}: '{label}' of dataset '{dataset}' in "
                f"{where} has type {record.fields[label][0]}; label maps apply to "
                "integer labels."
            )
    check_against_record(options.multi_target, name, record, dataset, where)
    selection = options.selections.get(name)
    if selection is not None:
        selection.check(record, dataset, where)
    constituent = name != global_object and not objects
    has_valid = "valid" in fields and record.fields["valid"][0].kind == "b"
    valid_offset = record.fields["valid"][1] if has_valid else -1
    if name == global_object:
        if len(ds.shape) != 1:
            raise SaltError(
                f"{where}: jet-level dataset '{dataset}' has shape "
                f"{ds.shape}; expected (n_jets,). Is data.global_object right?"
            )
        n_slots, valid_offset = 0, -1
    elif len(ds.shape) != 2:
        kind, axis = ("object", "n_objects") if objects else ("constituent", "n_slots")
        raise SaltError(
            f"{where}: {kind} dataset '{dataset}' has shape {ds.shape}; expected (n_jets, {axis})."
        )
    elif objects:
        n_slots = ds.shape[1]
    else:
        if not has_valid:
            raise SaltError(
                f"{where}: dataset '{dataset}' has no boolean 'valid' "
                "field, which marks real constituents against padding; UPP always writes it."
            )
        stored = ds.shape[1]
        n_slots = stored if slots is None else slots
        if not 0 < n_slots <= stored:
            raise SaltError(
                f"data.num_inputs.{name} = {n_slots}, but {where} stores "
                f"{stored} slots per jet; choose 1..{stored}."
            )
    return ReadPlan(
        dataset=dataset,
        record=record,
        constituent=constituent,
        slots=n_slots,
        inputs=inputs,
        runs=column_runs(record, inputs),
        labels=[(lab, record.fields[lab][1], record.fields[lab][0]) for lab in labels],
        valid_offset=valid_offset,
        selection=selection,
        rules=[r for r in options.multi_target if r.input_name == name],
        objects=objects,
    )
