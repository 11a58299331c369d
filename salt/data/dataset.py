"""JetDataset: whole batches of jets read from one contiguous slice of a UPP file.

Shapes (B jets in a batch, T constituent slots read per jet, N valid constituents in the batch):

    batch = {
        "inputs": {"jets": (B, F_jets) float32, "tracks": (N, F_tracks) float32},
        "valid":  {"tracks": (B, T) bool},                  # True = a real constituent
        "labels": {"jets": {"flavour_label": (B,) int64},
                   "tracks": {"ftagTruthOriginLabel": (N,) int64, ...}},
    }

Constituents come out *packed*: only the valid ones, jet after jet, in slot order (`valid` may
have holes; it need not be a prefix). The model never spends compute on padding, and the batch
that crosses from a worker to the trainer is smaller. `valid` keeps the layout so that
predictions can be written back per slot. Integer labels are int64, float labels float32.

Reading is fast only when done in one go: each batch is one low-level read of the file's own
record type into a preallocated buffer (HDF5's own field selection and type conversion are
several times slower), then numpy takes the valid records as raw bytes and converts each run of
adjacent same-typed fields with one strided copy.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from h5py import h5s
from torch.utils.data import Dataset

from salt.data.h5files import open_h5
from salt.errors import SaltError, close_matches

# HDF5's chunk cache only pays when a chunk is read twice; weakly shuffled batches rarely share
# one (a 1000-jet batch spans 10 whole track chunks of UPP's (100, 40)), so keep it small
_CHUNK_CACHE_BYTES = 4 * 1024**2


@dataclass
class _Run:
    """Output columns [start, stop) are adjacent record fields of one dtype from byte `offset`."""

    start: int
    stop: int
    offset: int
    dtype: np.dtype


@dataclass
class _Plan:
    """How to turn the raw records of one object type into the batch's arrays."""

    dataset: str  # name in the file
    record: np.dtype  # the file's record type
    constituent: bool
    slots: int  # slots read per jet (constituents), 0 for the jet-level object
    inputs: list[str]
    runs: list[_Run]
    labels: list[tuple[str, int, np.dtype]]  # (field, byte offset, dtype)
    valid_offset: int


@dataclass
class _Reader:
    """One thread's view of a dataset: its id, a kept file space and its own batch buffer."""

    dsid: h5py.h5d.DatasetID
    fspace: h5py.h5s.SpaceID
    buf: np.ndarray | None


class _Handle:
    """The file as one process sees it: opened lazily, shared by its threads, not by forks."""

    def __init__(self, filename: Path, split: str):
        self.pid = os.getpid()
        self.file = open_h5(filename, split, rdcc_nbytes=_CHUNK_CACHE_BYTES)
        self.local = threading.local()  # per thread: dataspaces and a default buffer


def _column_runs(record: np.dtype, names: list[str]) -> list[_Run]:
    runs: list[_Run] = []
    for i, name in enumerate(names):
        base, offset = record.fields[name][:2]
        last = runs[-1] if runs else None
        if (
            last is not None
            and last.dtype == base
            and last.stop == i
            and offset == last.offset + (i - last.start) * base.itemsize
        ):
            last.stop = i + 1
        else:
            runs.append(_Run(i, i + 1, offset, base))
    return runs


def _field(raw: np.ndarray, offset: int, dtype: np.dtype, count: int = 1) -> np.ndarray:
    """Strided view `(rows, count)` of `count` adjacent `dtype` fields at byte `offset`.

    `raw` is `(rows, record_size)` uint8 with contiguous rows; the view may be unaligned, which
    numpy handles in its copy loops.
    """
    return raw[:, offset : offset + count * dtype.itemsize].view(dtype)


def _gather(raw: np.ndarray, runs: list[_Run], width: int) -> np.ndarray:
    """`(rows, width)` float32 of the input columns from raw records `(rows, record_size)`."""
    out = np.empty((raw.shape[0], width), np.float32)
    for run in runs:
        out[:, run.start : run.stop] = _field(raw, run.offset, run.dtype, run.stop - run.start)
    return out


def _all_finite(x: np.ndarray) -> bool:
    # two reductions without a temporary: NaN propagates through min/max, inf shows up in them
    return x.size == 0 or bool(np.isfinite(x.min()) and np.isfinite(x.max()))


class JetDataset(Dataset):
    """Map-style dataset whose item `i` is the `i`-th batch of `batch_size` consecutive jets.

    Safe to read from several threads of one process (each reads into its own buffers) and from
    forked worker processes (each opens the file itself on first use; a pickled dataset holds
    no HDF5 handle).

    Parameters
    ----------
    filename
        A UPP-format HDF5 file (a virtual file over several works the same).
    variables
        Input variables per object type, e.g. ``{"jets": [...], "tracks": [...]}``.
    batch_size
        Jets per batch.
    labels
        Label fields per object type that the configured tasks need.
    num_jets
        Use the first `num_jets` jets (-1: all). More than the file holds: all, with a warning
        (collected in `warnings`). 0 is refused.
    input_map
        Config name -> dataset name in the file (``{"tracks": "consts"}``); identity by default.
    global_object
        Config name of the jet-level object.
    num_constituents
        Read only the first `n` slots of a constituent type (``{"tracks": 20}``).
    label_classes
        ``{object: {label: n_classes}}``: labels that must lie in ``[0, n_classes)`` (-1 is
        accepted on constituents, where it means "ignore").
    split
        "train", "val" or "test", for messages.
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
        self._handle: _Handle | None = None
        self._open_lock = threading.Lock()
        self._inspect(num_jets)

    # ----------------------------------------------------------------------------- set-up
    def dataset_name(self, name: str) -> str:
        """The dataset in the file that holds object `name` (after `input_map`)."""
        return self.input_map.get(name, name)

    @property
    def object_names(self) -> list[str]:
        names = list(dict.fromkeys([*self.variables, *self.labels]))
        if self.global_object not in names:
            names.insert(0, self.global_object)
        return names

    @property
    def constituent_names(self) -> list[str]:
        return [n for n in self.object_names if n != self.global_object]

    @property
    def num_slots(self) -> dict[str, int]:
        """Constituent slots read per jet, per constituent type (after `num_constituents`)."""
        return {name: p.slots for name, p in self._plans.items() if p.constituent}

    def _where(self) -> str:
        return f"{self.split} file '{self.filename}'"

    def _inspect(self, num_jets: int) -> None:
        """Check datasets and fields once, in the main process, before any batch is read."""
        self._plans: dict[str, _Plan] = {}
        with open_h5(self.filename, self.split) as f:
            available = [k for k, v in f.items() if isinstance(v, h5py.Dataset)]
            for name in self.object_names:
                ds_name = self.dataset_name(name)
                if not isinstance(f.get(ds_name), h5py.Dataset):
                    mapped = f" (data.input_map maps '{name}' to it)" if name != ds_name else ""
                    raise SaltError(
                        f"{self._where()} has no dataset '{ds_name}'{mapped}. It has: "
                        f"{', '.join(available) or 'no datasets'}."
                        f"{close_matches(ds_name, available)} Fix data.variables or "
                        f"data.input_map (e.g. --data.input_map '{{{name}: <dataset>}}')."
                    )
                self._plans[name] = self._plan(name, f[ds_name])
            n_file = f[self.dataset_name(self.global_object)].shape[0]
            for name in self.constituent_names:
                rows = f[self.dataset_name(name)].shape[0]
                if rows != n_file:
                    raise SaltError(
                        f"{self._where()}: '{self.dataset_name(name)}' has {rows} rows but "
                        f"'{self.dataset_name(self.global_object)}' has {n_file}; row i of "
                        "every dataset must be the same jet."
                    )
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

    def _plan(self, name: str, ds: h5py.Dataset) -> _Plan:
        record = ds.dtype
        fields = record.names or ()
        inputs = self.variables.get(name, [])
        labels = self.labels.get(name, [])
        for var in [*inputs, *labels]:
            if var not in fields:
                raise SaltError(
                    f"{self._where()}: dataset '{ds.name.lstrip('/')}' has no variable '{var}'."
                    f"{close_matches(var, fields)} Remove it from data.variables.{name} (or the "
                    "task that needs it as a label), or use a file that has it."
                )
            kind = record.fields[var][0].kind
            if kind not in "biuf" or record.fields[var][0].shape:
                raise SaltError(
                    f"{self._where()}: variable '{var}' of dataset '{ds.name.lstrip('/')}' has "
                    f"type {record.fields[var][0]}; inputs and labels must be numeric scalars."
                )
        constituent = name != self.global_object
        slots, valid_offset = 0, -1
        if constituent:
            if len(ds.shape) != 2:
                raise SaltError(
                    f"{self._where()}: constituent dataset '{ds.name.lstrip('/')}' has shape "
                    f"{ds.shape}; expected (n_jets, n_slots)."
                )
            if "valid" not in fields or record.fields["valid"][0].kind != "b":
                raise SaltError(
                    f"{self._where()}: dataset '{ds.name.lstrip('/')}' has no boolean 'valid' "
                    "field, which marks real constituents against padding; UPP always writes it."
                )
            stored = ds.shape[1]
            slots = self.num_constituents.get(name, stored)
            if not 0 < slots <= stored:
                raise SaltError(
                    f"data.num_inputs.{name} = {slots}, but {self._where()} stores "
                    f"{stored} slots per jet; choose 1..{stored}."
                )
            valid_offset = record.fields["valid"][1]
        elif len(ds.shape) != 1:
            raise SaltError(
                f"{self._where()}: jet-level dataset '{ds.name.lstrip('/')}' has shape "
                f"{ds.shape}; expected (n_jets,). Is data.global_object right?"
            )
        return _Plan(
            dataset=ds.name.lstrip("/"),
            record=record,
            constituent=constituent,
            slots=slots,
            inputs=inputs,
            runs=_column_runs(record, inputs),
            labels=[(lab, record.fields[lab][1], record.fields[lab][0]) for lab in labels],
            valid_offset=valid_offset,
        )

    # ----------------------------------------------------------------------------- reading
    def _open(self) -> _Handle:
        # a handle must never cross a fork: every process opens its own, on first use
        handle = self._handle
        if handle is None or handle.pid != os.getpid():
            with self._open_lock:
                handle = self._handle
                if handle is None or handle.pid != os.getpid():
                    handle = self._handle = _Handle(self.filename, self.split)
        return handle

    @property
    def is_open(self) -> bool:
        """Whether this process holds an open HDF5 handle of the file."""
        return self._handle is not None and self._handle.pid == os.getpid()

    def close(self) -> None:
        """Close this process's handle (it reopens on the next read)."""
        if self.is_open:
            self._handle.file.close()
        self._handle = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_open_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open_lock = threading.Lock()

    def __len__(self) -> int:
        return self.num_batches

    def rows(self, index: int) -> tuple[int, int]:
        """First and one-past-last jet row of batch `index`."""
        start = index * self.batch_size
        return start, min(start + self.batch_size, self.num_jets)

    def new_buffers(self) -> dict[str, np.ndarray]:
        """Empty raw-record buffers for one batch, per object: `(batch_size,)` or `(.., slots)`."""
        return {name: self._buffer(plan) for name, plan in self._plans.items()}

    def _buffer(self, plan: _Plan) -> np.ndarray:
        width = (plan.slots,) if plan.constituent else ()
        return np.empty((self.batch_size, *width), plan.record)

    def read_records(
        self, name: str, start: int, stop: int, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Raw records of object `name` for jets [start, stop): `(n,)` or `(n, slots)`.

        Read into `out` (a buffer of `new_buffers`) if given, else into a buffer of this thread
        that its next call overwrites.
        """
        handle = self._open()
        readers = getattr(handle.local, "readers", None)
        if readers is None:
            readers = handle.local.readers = {}
        reader = readers.get(name)
        plan = self._plans[name]
        width = (plan.slots,) if plan.constituent else ()
        if reader is None:
            # the low-level read with a kept file space skips h5py's selection parsing, ~10%
            # faster than read_direct on 1000-jet slices
            dsid = handle.file[plan.dataset].id
            reader = readers[name] = _Reader(dsid, dsid.get_space(), None)
        if out is None:
            if reader.buf is None:
                reader.buf = self._buffer(plan)
            out = reader.buf
        n = stop - start
        reader.fspace.select_hyperslab((start, *(0 for _ in width)), (n, *width))
        out = out[:n]
        try:
            reader.dsid.read(h5s.create_simple((n, *width)), reader.fspace, out)
        except OSError as err:
            raise SaltError(
                f"{self._where()}: dataset '{plan.dataset}' cannot be read at jets "
                f"{start}..{stop - 1} ({err}). The file is damaged; copy or produce it again."
            ) from None
        return out

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
            flat = records.reshape(-1).view(np.uint8).reshape(-1, records.dtype.itemsize)
            rows = None  # slot of each packed constituent, for messages
            if plan.constituent:
                mask = _field(flat, plan.valid_offset, np.dtype(bool))[:, 0].copy()
                valid[name] = mask.reshape(records.shape)
                rows = np.flatnonzero(mask)
                flat = np.take(flat, rows, axis=0)
            if plan.inputs:
                x = _gather(flat, plan.runs, len(plan.inputs))
                if not _all_finite(x):
                    self._raise_non_finite(x, plan, plan.inputs, start, rows, "variable")
                inputs[name] = x
            if plan.labels:
                labels[name] = self._labels(flat, plan, name, start, rows)
        return {"inputs": inputs, "valid": valid, "labels": labels}

    def read_batch(self, index: int) -> dict:
        """Batch `index` as numpy arrays, in the layout of the module docstring."""
        return self.convert(index, self.read_raw(index))

    def __getitem__(self, index: int) -> dict:
        """Batch `index` as tensors (see the module docstring for shapes)."""
        return _to_tensors(self.read_batch(index))

    def _labels(self, raw, plan: _Plan, name: str, start: int, rows) -> dict:
        out = {}
        for label, offset, dtype in plan.labels:
            values = _field(raw, offset, dtype)[:, 0]
            if dtype.kind == "f":
                # a regression target may be missing (NaN: no hadron in a light jet); the
                # regression losses skip non-finite targets, so they pass through
                values = values.astype(np.float32)
            else:
                values = values.astype(np.int64)
                n_classes = self.label_classes.get(name, {}).get(label)
                if n_classes is not None:
                    self._check_range(values, plan, label, n_classes, start, rows)
            out[label] = values
        return out

    # ----------------------------------------------------------------------------- errors
    def _jet_of(self, row: int, start: int, rows: np.ndarray | None, plan: _Plan) -> int:
        """The jet (file row) of output row `row`; `rows` maps packed constituents to slots."""
        return start + (row if rows is None else int(rows[row]) // plan.slots)

    def _raise_non_finite(self, x, plan: _Plan, names, start, rows, what: str) -> None:
        row, col = np.argwhere(~np.isfinite(x))[0]
        jet = self._jet_of(int(row), start, rows, plan)
        where = "a valid constituent of jet" if plan.constituent else "jet"
        fix = (
            f"or drop '{names[col]}' from data.variables"
            if what == "variable"
            else "or drop the task that uses it"
        )
        raise SaltError(
            f"{self._where()}: {what} '{names[col]}' of dataset '{plan.dataset}' is "
            f"{x[row, col]} in {where} {jet}. Inputs and labels must be finite: fix the file (or "
            f"its preprocessing), {fix}."
        )

    def _check_range(self, values, plan: _Plan, label, n_classes, start, rows) -> None:
        if values.size == 0:
            return
        low = -1 if plan.constituent else 0  # -1 on a constituent means "ignore"
        if values.min() >= low and values.max() < n_classes:
            return
        row = int(np.flatnonzero((values < low) | (values >= n_classes))[0])
        jet = self._jet_of(row, start, rows, plan)
        raise SaltError(
            f"{self._where()}: label '{label}' of dataset '{plan.dataset}' is {values[row]} for "
            f"jet {jet}, but its task has {n_classes} classes (0..{n_classes - 1}"
            f"{', or -1 to ignore' if low < 0 else ''}). Check the task's class_names (or the "
            f"file's '{label}' attribute) against the labels in the file."
        )


def _to_tensors(batch):
    """The same nested dicts with every numpy array wrapped as a tensor (no copy)."""
    if isinstance(batch, dict):
        return {k: _to_tensors(v) for k, v in batch.items()}
    return torch.from_numpy(batch)
