"""JetDataset: whole batches of jets read from one contiguous slice of a UPP file.

Shapes (B jets in a batch, T constituent slots read per jet, N valid constituents in the batch):

    batch = {
        "inputs": {"jets": (B, F_jets) float32, "tracks": (N, F_tracks) float32,
                   "global": (B, F_global) float32, "parameters": (B, P) float32},
        "valid":  {"tracks": (B, T) bool},                  # True = a real constituent
        "labels": {"jets": {"flavour_label": (B,) int64},
                   "tracks": {"ftagTruthOriginLabel": (N,) int64, ...},
                   "objects": {"barcode": (B, K) int64, "valid": (B, K) bool, "pt": (B, K) ...}},
    }

Constituents come out *packed*: only the valid ones (those that pass `data.selections`, too),
jet after jet, in slot order (`valid` may have holes; it need not be a prefix). The model never
spends compute on padding, and the batch that crosses from a worker to the trainer is smaller.
`valid` keeps the layout so that predictions can be written back per slot. Integer labels are
int64, float labels float32. `global` and `parameters` (present when configured) are jet-level
inputs read from the jet-level dataset, beside its own. With `data.mf_config` the truth objects
of each jet (K slots) come as padded labels under "objects" (`salt.data.objects`).

Reading is fast only when done in one go: each batch is one low-level read of the file's own
record type into a preallocated buffer (HDF5's own field selection and type conversion are
several times slower), then numpy takes the valid records as raw bytes and converts each run of
adjacent same-typed fields with one strided copy (`salt.data.records`). Selections, labels
computed on the fly and conditional targets work on the same raw records, whole columns at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from salt.data.h5files import open_h5
from salt.data.labeller import LABEL, LabellerConfig
from salt.data.labelmaps import LabelMap
from salt.data.objects import OBJECTS, read_objects
from salt.data.options import EXTRA_INPUTS, ReadOptions
from salt.data.parameters import ParameterSpec, assign_parameters
from salt.data.rawread import RawReader
from salt.data.readplan import ReadPlan, check_fields, plan_object
from salt.data.records import Columns, Run, all_finite, as_bytes, column_runs, field_view, gather
from salt.data.targets import MultiTarget, apply_rules
from salt.data.transforms import Transform
from salt.errors import SaltError, close_matches


class JetDataset(Dataset):
    """Map-style dataset whose item `i` is the `i`-th batch of `batch_size` consecutive jets.

    Safe to read from several threads of one process (each reads into its own buffers) and from
    forked worker processes (each opens the file itself on first use; a pickled dataset holds
    no HDF5 handle). An index that carries an epoch (`salt.data.sampler.BatchIndex`) seeds the
    batch's random draws (transforms, parameters) with it; a plain int reads as epoch 0.

    Parameters
    ----------
    filename
        A UPP-format HDF5 file (a virtual file over several works the same).
    variables
        Input variables per object type, e.g. ``{"jets": [...], "tracks": [...]}``; also
        ``global`` and ``parameters``, jet-level inputs read from the jet-level dataset.
    batch_size
        Jets per batch.
    labels
        Label fields per object type that the configured tasks need.
    num_jets
        Use the first `num_jets` jets (-1: all). More than the file holds: all, with a warning
        (collected in `warnings`). 0 is refused.
    input_map
        Config name -> dataset name in the file (``{"tracks": "consts"}``); identity by default.
        Entries for ``global`` and ``parameters`` are ignored: they always come from the
        jet-level dataset.
    global_object
        Config name of the jet-level object.
    num_constituents
        Read only the first `n` slots of a constituent type (``{"tracks": 20}``).
    label_classes
        ``{object: {label: n_classes}}``: labels that must lie in ``[0, n_classes)`` (-1 is
        accepted on constituents, where it means "ignore").
    split
        "train", "val" or "test": for messages, and for what applies to the split (transforms
        to "train" only; parameters draw at "train" and "val", take the test value at "test").
    non_finite_to_num
        Read NaN and +-inf inputs as 0 instead of refusing them.
    selections
        ``{constituent type: [cut, ...]}``: constituents failing a cut become padding
        (`salt.data.selections`).
    transforms
        Transforms of the training split's inputs, in order (`salt.data.transforms`).
    labeller_config
        Compute the jets' ``flavour_label`` from truth labels (`salt.data.labeller`).
    label_maps
        ``{object: {label: {raw value: class index}}}`` (`salt.data.labelmaps`).
    multi_target
        Conditional regression targets (`salt.data.targets`).
    parameters
        ``{name: {train, test, prob}}`` for ``variables["parameters"]`` (`salt.data.parameters`).
    mf_config
        The truth objects and the constituent label that points at them (`salt.data.objects`);
        their dataset is read as object ``objects``.
    seed
        Seed of the batches' random draws, with the epoch and the batch index.
    """

    def __init__(
        self,
        filename: str | Path,
        variables: dict[str, list[str]],
        batch_size: int,
        labels: dict[str, list[str]] | None = None,
        num_jets: int = -1,
        input_map: dict[str, str] | None = None,
        global_object: str = "jets",
        num_constituents: dict[str, int] | None = None,
        label_classes: dict[str, dict[str, int]] | None = None,
        split: str = "train",
        *,
        non_finite_to_num: bool = False,
        selections: dict[str, list[str] | None] | None = None,
        transforms: Sequence[Transform] | None = None,
        labeller_config: LabellerConfig | dict | None = None,
        label_maps: dict[str, dict[str, dict[int, int]]] | None = None,
        multi_target: list[MultiTarget | dict] | None = None,
        parameters: dict[str, ParameterSpec | dict] | None = None,
        mf_config=None,
        seed: int = 0,
    ):
        super().__init__()
        self.filename = Path(filename)
        self.variables = {k: list(v) for k, v in variables.items()}
        self.labels = {k: list(v) for k, v in (labels or {}).items()}
        self.batch_size = int(batch_size)
        self.global_object = global_object
        self.input_map = dict(input_map or {})
        self.num_constituents = dict(num_constituents or {})
        self.label_classes = {k: dict(v) for k, v in (label_classes or {}).items()}
        self.split = split
        self.warnings: list[str] = []
        if self.batch_size < 1:
            raise SaltError(f"data.batch_size must be at least 1, got {batch_size}.")
        self.options = ReadOptions.parse(
            self.variables,
            self.labels,
            global_object,
            self.label_classes,
            non_finite_to_num=non_finite_to_num,
            selections=selections,
            transforms=transforms,
            labeller_config=labeller_config,
            label_maps=label_maps,
            multi_target=multi_target,
            parameters=parameters,
            mf_config=mf_config,
            seed=seed,
        )
        objects = self.options.objects
        if objects is not None:
            self.labels = objects.with_labels(self.labels)
            self.input_map[OBJECTS] = objects.dataset
        self._inspect(num_jets)
        self._reader = RawReader(
            self.filename,
            self.split,
            {name: (p.dataset, p.record, p.slots) for name, p in self._plans.items()},
        )

    # ----------------------------------------------------------------------------- set-up
    def dataset_name(self, name: str) -> str:
        """The dataset in the file that holds object `name` (after `input_map`)."""
        return self.input_map.get(name, name)

    @property
    def object_names(self) -> list[str]:
        """The objects read from the file, each its own dataset; the jet-level one first."""
        names = [self.global_object, *self.variables, *self.labels]
        return [n for n in dict.fromkeys(names) if n == self.global_object or not _extra(n)]

    @property
    def constituent_names(self) -> list[str]:
        return [n for n in self.object_names if n != self.global_object]

    @property
    def extra_inputs(self) -> list[str]:
        """Jet-level inputs read from the jet-level dataset besides its own (`global`, ...)."""
        return [n for n in self.variables if n != self.global_object and _extra(n)]

    @property
    def num_slots(self) -> dict[str, int]:
        """Constituent slots read per jet, per constituent type (after `num_constituents`)."""
        return {name: p.slots for name, p in self._plans.items() if p.constituent}

    def _where(self) -> str:
        return f"{self.split} file '{self.filename}'"

    def _inspect(self, num_jets: int) -> None:
        """Check datasets and fields once, in the main process, before any batch is read."""
        self._plans: dict[str, ReadPlan] = {}
        with open_h5(self.filename, self.split) as f:
            available = [k for k, v in f.items() if isinstance(v, h5py.Dataset)]
            for name in self.object_names:
                ds_name = self.dataset_name(name)
                if not isinstance(f.get(ds_name), h5py.Dataset):
                    mapped = f" (data.input_map maps '{name}' to it)" if name != ds_name else ""
                    if name == OBJECTS:
                        mapped = (
                            " (data.mf_config.object.name)"
                            if self.options.objects is not None
                            else " (tasks on 'objects' read the truth objects that "
                            "data.mf_config names: set it)"
                        )
                    raise SaltError(
                        f"{self._where()} has no dataset '{ds_name}'{mapped}. It has: "
                        f"{', '.join(available) or 'no datasets'}."
                        f"{close_matches(ds_name, available)} Fix data.variables or "
                        f"data.input_map (e.g. --data.input_map '{{{name}: <dataset>}}')."
                    )
                self._plans[name] = plan_object(
                    name,
                    f[ds_name],
                    global_object=self.global_object,
                    inputs=self.variables.get(name, []),
                    labels=self.labels.get(name, []),
                    options=self.options,
                    slots=self.num_constituents.get(name),
                    where=self._where(),
                )
            n_file = f[self.dataset_name(self.global_object)].shape[0]
            for name in self.constituent_names:
                rows = f[self.dataset_name(name)].shape[0]
                if rows != n_file:
                    raise SaltError(
                        f"{self._where()}: '{self.dataset_name(name)}' has {rows} rows but "
                        f"'{self.dataset_name(self.global_object)}' has {n_file}; row i of "
                        "every dataset must be the same jet."
                    )
        jets = self._plans[self.global_object]
        self._extras: dict[str, list[Run]] = {}
        for name in self.extra_inputs:
            check_fields(name, jets.record, jets.dataset, self.variables[name], self._where())
            self._extras[name] = column_runs(jets.record, self.variables[name])
        if self.options.labeller is not None:
            self.options.labeller.check(jets.record, jets.dataset, self._where())
        if n_file == 0:
            raise SaltError(
                f"{self._where()} holds no jets (dataset "
                f"'{self.dataset_name(self.global_object)}' is empty). Produce it again or "
                "choose another file."
            )
        if num_jets is None or num_jets < 0:
            self.num_jets = n_file
        elif num_jets == 0:
            raise SaltError(f"data.num_{self.split} is 0: use -1 for all jets or a positive count.")
        elif num_jets > n_file:
            # the documented choice: say so and use what there is
            self.warnings.append(
                f"data.num_{self.split} = {num_jets} but {self._where()} holds {n_file} jets: "
                f"using all {n_file}."
            )
            self.num_jets = n_file
        else:
            self.num_jets = num_jets
        self.num_batches = -(-self.num_jets // self.batch_size)

    # ----------------------------------------------------------------------------- reading
    @property
    def is_open(self) -> bool:
        """Whether this process holds an open HDF5 handle of the file."""
        return self._reader.is_open

    def close(self) -> None:
        """Close this process's handle (it reopens on the next read)."""
        self._reader.close()

    def __len__(self) -> int:
        return self.num_batches

    def rows(self, index: int) -> tuple[int, int]:
        """First and one-past-last jet row of batch `index`."""
        start = index * self.batch_size
        return start, min(start + self.batch_size, self.num_jets)

    def new_buffers(self) -> dict[str, np.ndarray]:
        """Empty raw-record buffers for one batch, per object: `(batch_size,)` or `(.., slots)`."""
        return self._reader.new_buffers(self.batch_size)

    def read_records(
        self, name: str, start: int, stop: int, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Raw records of object `name` for jets [start, stop) (see `RawReader.read`)."""
        return self._reader.read(name, start, stop, out)

    def read_raw(
        self, index: int, buffers: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """Raw records of batch `index` per object (see `read_records`); the I/O half of a read."""
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} out of range 0..{self.num_batches - 1}")
        start, stop = self.rows(index)
        return {
            name: self.read_records(name, start, stop, None if buffers is None else buffers[name])
            for name in self._plans
        }

    def convert(self, index: int, raw: dict[str, np.ndarray]) -> dict:
        """Batch `index` as numpy arrays from its raw records; the compute half of a read.

        The result shares no memory with `raw`, whose buffers may be reused at once.
        """
        start, _ = self.rows(index)
        inputs: dict[str, np.ndarray] = {}
        valid: dict[str, np.ndarray] = {}
        labels: dict[str, dict[str, np.ndarray]] = {}
        for name, plan in self._plans.items():
            records = raw[name]
            if plan.objects:
                labels[name] = self._objects(records, plan, start)
                continue
            flat = as_bytes(records)
            rows = None  # slot of each packed constituent, for messages
            if plan.constituent:
                mask = field_view(flat, plan.valid_offset, np.dtype(bool))[:, 0].copy()
                rows = np.flatnonzero(mask)
                if plan.selection is not None:
                    # the cuts see the valid constituents only; those failing become padding
                    keep = plan.selection.passing(Columns(flat, plan.record, rows))
                    mask[rows[~keep]] = False
                    rows = rows[keep]
                valid[name] = mask.reshape(records.shape)
                flat = np.take(flat, rows, axis=0)
            if plan.inputs:
                x = gather(flat, plan.runs, len(plan.inputs))
                inputs[name] = self._finite(x, plan, plan.inputs, start, rows)
            if name == self.global_object:
                for extra, runs in self._extras.items():
                    x = gather(flat, runs, len(self.variables[extra]))
                    if extra == "parameters":
                        rng = self.options.parameter_rng(index)
                        assign_parameters(x, self.options.parameters, self.split, rng)
                    inputs[extra] = self._finite(x, plan, self.variables[extra], start, None)
            if name in self.labels:
                labels[name] = self._labels(flat, plan, name, start, rows)
        if self.split == "train":
            for position, transform in enumerate(self.options.transforms):
                transform(inputs, self.options.transform_rng(index, position))
        return {"inputs": inputs, "valid": valid, "labels": labels}

    def read_batch(self, index: int) -> dict:
        """Batch `index` as numpy arrays, in the layout of the module docstring."""
        return self.convert(index, self.read_raw(index))

    def __getitem__(self, index: int) -> dict:
        """Batch `index` as tensors (see the module docstring for shapes)."""
        return _to_tensors(self.read_batch(index))

    def _objects(self, records: np.ndarray, plan: ReadPlan, start: int) -> dict[str, np.ndarray]:
        mf = self.options.objects
        out = read_objects(
            records, plan.labels, plan.valid_offset, mf, plan.rules, start, self._where()
        )
        return {label: out[label] for label in [*self.labels[OBJECTS], "valid"]}

    def _finite(
        self, x: np.ndarray, plan: ReadPlan, names: list[str], start: int, rows
    ) -> np.ndarray:
        if not all_finite(x):
            if not self.options.non_finite_to_num:
                self._raise_non_finite(x, plan, names, start, rows)
            np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return x

    def _labels(self, raw: np.ndarray, plan: ReadPlan, name: str, start: int, rows) -> dict:
        out = {}
        maps = self.options.label_maps.get(name, {})
        for label, offset, dtype in plan.labels:
            values = field_view(raw, offset, dtype)[:, 0]
            if dtype.kind == "f":
                # a regression target may be missing (NaN: no hadron in a light jet); the
                # regression losses skip non-finite targets, so they pass through
                values = values.astype(np.float32)
            else:
                values = values.astype(np.int64)
                mapped = None
                if label in maps:
                    mapped = (maps[label], values)  # the map and the raw values, for messages
                    values = maps[label](values)
                n_classes = self.label_classes.get(name, {}).get(label)
                if n_classes is not None:
                    low = -1 if plan.constituent else 0  # -1 on a constituent means "ignore"
                    self._check_range(values, plan, label, n_classes, low, start, rows, mapped)
            out[label] = values
        if plan.rules or (name == self.global_object and self.options.labeller is not None):
            columns = Columns(raw, plan.record)
            labeller = self.options.labeller
            if labeller is not None and name == self.global_object:
                values = labeller(columns, start, self._where())
                n_classes = len(labeller.class_names)
                low = 0 if labeller.require_labels else -1
                self._check_range(values, plan, LABEL, n_classes, low, start, rows)
                out[LABEL] = values
            apply_rules(plan.rules, columns, out)
        return {label: out[label] for label in self.labels[name]}

    # ----------------------------------------------------------------------------- errors
    def _jet_of(self, row: int, start: int, rows: np.ndarray | None, plan: ReadPlan) -> int:
        """The jet (file row) of output row `row`; `rows` maps packed constituents to slots."""
        return start + (row if rows is None else int(rows[row]) // plan.slots)

    def _raise_non_finite(self, x, plan: ReadPlan, names, start, rows) -> None:
        row, col = np.argwhere(~np.isfinite(x))[0]
        jet = self._jet_of(int(row), start, rows, plan)
        where = "a valid constituent of jet" if plan.constituent else "jet"
        raise SaltError(
            f"{self._where()}: variable '{names[col]}' of dataset '{plan.dataset}' is "
            f"{x[row, col]} in {where} {jet}. Inputs must be finite: fix the file (or its "
            f"preprocessing), drop '{names[col]}' from data.variables, or set "
            "data.non_finite_to_num: true to read NaN and inf inputs as 0."
        )

    def _check_range(
        self,
        values: np.ndarray,
        plan: ReadPlan,
        label: str,
        n_classes: int,
        low: int,
        start: int,
        rows,
        mapped: tuple[LabelMap, np.ndarray] | None = None,
    ) -> None:
        if values.size == 0 or (values.min() >= low and values.max() < n_classes):
            return
        row = int(np.flatnonzero((values < low) | (values >= n_classes))[0])
        jet = self._jet_of(row, start, rows, plan)
        where = f"{self._where()}: label '{label}' of dataset '{plan.dataset}'"
        if mapped is not None:
            label_map, raw_values = mapped
            raise SaltError(
                f"{where} is {raw_values[row]} for jet {jet}, a value missing from the task's "
                f"label_map (which maps {', '.join(map(str, label_map.keys.tolist()))}): add it "
                "to label_map."
            )
        raise SaltError(
            f"{where} is {values[row]} for jet {jet}, but its task has {n_classes} classes "
            f"(0..{n_classes - 1}{', or -1 to ignore' if low < 0 else ''}). Check the task's "
            f"class_names (or the file's '{label}' attribute) against the labels in the file."
        )


def _extra(name: str) -> bool:
    return name in EXTRA_INPUTS


def _to_tensors(batch):
    """The same nested dicts with every numpy array wrapped as a tensor (no copy); other values
    (the host ints of ``sizes``) as they are."""
    if isinstance(batch, dict):
        return {k: _to_tensors(v) for k, v in batch.items()}
    return torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
