"""Columns of raw HDF5 records, taken as strided views of the bytes without a structured copy.

A batch is read as the file's own record type; everything after that works on the records as a
`(rows, record_size)` uint8 array: a field is a strided view at its byte offset, a run of adjacent
fields of one type is one strided copy. Numpy's field access on structured arrays would build the
same views with more overhead per call, and `structured_to_unstructured` copies field by field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass
class Run:
    """Output columns [start, stop) are adjacent record fields of one dtype from byte `offset`."""

    start: int
    stop: int
    offset: int
    dtype: np.dtype


def column_runs(record: np.dtype, names: list[str]) -> list[Run]:
    """The fields `names` of `record`, in that order, grouped into runs of one strided copy each."""
    runs: list[Run] = []
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
            runs.append(Run(i, i + 1, offset, base))
    return runs


def as_bytes(records: np.ndarray) -> np.ndarray:
    """Records of any shape as `(n_records, record_size)` uint8, without a copy."""
    return records.reshape(-1).view(np.uint8).reshape(-1, records.dtype.itemsize)


def field_view(raw: np.ndarray, offset: int, dtype: np.dtype, count: int = 1) -> np.ndarray:
    """Strided view `(rows, count)` of `count` adjacent `dtype` fields at byte `offset`.

    `raw` is `(rows, record_size)` uint8 with contiguous rows; the view may be unaligned, which
    numpy handles in its copy loops.
    """
    return raw[:, offset : offset + count * dtype.itemsize].view(dtype)


def gather(raw: np.ndarray, runs: list[Run], width: int) -> np.ndarray:
    """`(rows, width)` float32 of the input columns from raw records `(rows, record_size)`."""
    out = np.empty((raw.shape[0], width), np.float32)
    for run in runs:
        out[:, run.start : run.stop] = field_view(raw, run.offset, run.dtype, run.stop - run.start)
    return out


def all_finite(x: np.ndarray) -> bool:
    """Whether every value is finite; two reductions, no temporary of the array's size."""
    # NaN propagates through min/max, inf shows up in them
    return x.size == 0 or bool(np.isfinite(x.min()) and np.isfinite(x.max()))


class Columns(Mapping):
    """Named fields of raw records `(n, record_size)`, each a `(rows,)` array made on demand.

    With `rows` given, only those records (a gather of the one column); else a view of all.
    Cut objects of atlas-ftag-tools index an array by variable name (``array[cut.variable]``);
    this mapping gives them the columns they ask for and nothing else.
    """

    def __init__(self, raw: np.ndarray, record: np.dtype, rows: np.ndarray | None = None):
        self.raw = raw
        self.record = record
        self.rows = rows
        self.size = len(raw) if rows is None else len(rows)

    def __getitem__(self, name: str) -> np.ndarray:
        dtype, offset = self.record.fields[name][:2]
        column = field_view(self.raw, offset, dtype)[:, 0]
        return column if self.rows is None else column[self.rows]

    def __iter__(self) -> Iterator[str]:
        return iter(self.record.names or ())

    def __len__(self) -> int:
        return len(self.record.names or ())
