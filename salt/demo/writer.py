"""UPP's file layout for the demo data: datasets, chunks, compression, attributes, dicts.

What the ATLAS preprocessing tool UPP writes (shared/FORMAT.md): one structured dataset per object
type at the file root, ``jets`` ``(N,)`` and constituents ``(N, slots)``, LZ4 (HDF5 filter 32004)
with (100, slots) chunks for constituents, padding NaN / -1 / 0 by type with ``valid`` False,
the class names in ``jets.attrs["flavour_label"]``, and the root attributes UPP sets. The
norm dict and class dict follow UPP's formulas, computed while the training file is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import ftag
import h5py
import hdf5plugin
import numpy as np

import salt

# Jets are generated in blocks of this size, each from its own seed, so the output of a seed does
# not depend on how many blocks are in memory; changing it changes every dataset.
GEN_BLOCK = 20_000  # a multiple of the (100, slots) chunks; larger blocks run slower
NORM_JETS = 100_000  # like UPP's num_jets_estimate_norm: the jets are i.i.d., a fair sample
# integer fields UPP leaves out of the class dict
NOT_CLASS_LABELS = (
    "VertexIndex",
    "ftagTruthParentBarcode",
    "barcode",
    "eventNumber",
    "jetFoldHash",
)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the files: its dtype, slots, and which fields the dicts describe."""

    name: str
    dtype: np.dtype
    slots: int | None  # None: a per-jet dataset (N,); else (N, slots) constituents
    inputs: tuple[str, ...]  # normalised (norm dict)
    labels: tuple[str, ...] = ()  # integer labels (class dict)

    def padding(self) -> np.ndarray:
        """One padded row ``(slots,)``: floats NaN, signed ints -1, unsigned ints 0, invalid."""
        pad = np.zeros(self.slots or 1, dtype=self.dtype)
        for name in self.dtype.names:
            kind = self.dtype[name].kind
            pad[name] = np.nan if kind == "f" else -1 if kind == "i" else 0
        return pad


@dataclass(frozen=True)
class Split:
    name: str
    key: int  # enters the seed, keeps splits independent
    filename: str
    num_jets: int
    natural: bool  # test: natural spectrum and class mix; train/val: resampled-like


class Arena:
    """Arrays reused from one block to the next, keyed by name.

    A fresh array of tens of MB costs a page fault per 4 kB on first touch, more than filling it;
    and a padded constituent array reused needs only the entries the last block filled reset to
    padding, a third of it. The writer keeps two arenas and alternates, as one block is written
    while the next is made.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}
        self._padded: dict[str, np.ndarray] = {}
        self._filled: dict[str, np.ndarray] = {}

    def empty(self, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``, valid until ``key`` is asked again."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        buf = self._buffers.get(key)
        if buf is None or len(buf) < nbytes:
            buf = self._buffers[key] = np.empty(int(nbytes * 1.25) + 64, dtype=np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)

    def padded(self, spec: DatasetSpec, n: int) -> np.ndarray:
        """All-padding ``(n, slots)`` array of ``spec``; `filled` says which entries to reset."""
        out = self._padded.get(spec.name)
        if out is None or out.shape != (n, spec.slots):
            out = self._padded[spec.name] = _padding_array(spec, n)
        elif (dirty := self._filled.get(spec.name)) is not None:
            raw = np.dtype((np.void, spec.dtype.itemsize))
            out.reshape(-1).view(raw)[dirty] = spec.padding().view(raw)[0]
        self._filled.pop(spec.name, None)
        return out

    def filled(self, spec: DatasetSpec, flat_index: np.ndarray) -> None:
        """Record the entries (flat indices) a caller wrote into `padded`'s array."""
        self._filled[spec.name] = flat_index


def _padding_array(spec: DatasetSpec, n: int) -> np.ndarray:
    out = np.empty((n, spec.slots), dtype=spec.dtype)
    # Records are copied as raw bytes: numpy copies structured items field by field, which is
    # several times slower than moving the same bytes as one opaque item.
    out.view(np.uint8).reshape(n, -1)[...] = spec.padding().view(np.uint8)
    return out


# generate(rng, n, split, first_jet, arena) -> ({dataset: array}, component id per jet)
Generator = Callable[
    [np.random.Generator, int, Split, int, Arena], tuple[dict[str, np.ndarray], np.ndarray]
]


def pad(
    packed: np.ndarray,
    jet: np.ndarray,
    n: int,
    slots: int,
    spec: DatasetSpec,
    arena: Arena | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Constituents ``(M,)`` grouped by jet (``jet`` sorted) -> ``(n, slots)``.

    Only entries where ``mask`` is True are taken; entries beyond ``slots`` in a jet are dropped,
    so callers sort each jet's entries by priority. The result lives in ``arena`` (under the
    dataset's name) when one is given.
    """
    take = np.ones(len(jet), dtype=bool) if mask is None else mask.copy()
    jet = jet[take]
    counts = np.bincount(jet, minlength=n)
    position = np.arange(len(jet)) - (np.cumsum(counts) - counts)[jet]
    keep = position < slots
    take[take] = keep
    dest = jet[keep] * slots + position[keep]
    out = _padding_array(spec, n) if arena is None else arena.padded(spec, n)
    raw = np.dtype((np.void, spec.dtype.itemsize))  # raw bytes again: see _padding_array
    out.reshape(-1).view(raw)[dest] = packed.view(raw)[take]
    if arena is not None:
        arena.filled(spec, dest)
    return out


def pack(
    columns: dict[str, np.ndarray | float | int],
    order: np.ndarray,
    dtype: np.dtype,
    arena: Arena | None = None,
    key: str = "",
) -> np.ndarray:
    """A structured array of ``dtype`` from columns, rows taken in ``order``."""
    shape = (len(order),)
    out = np.empty(shape, dtype) if arena is None else arena.empty(f"packed {key}", shape, dtype)
    # Filled in slices that stay in the CPU cache: writing one field of every record in turn
    # would stream the whole array through memory once per field.
    step = max(256, 2**18 // dtype.itemsize)
    for start in range(0, len(order), step):
        chunk, rows = out[start : start + step], order[start : start + step]
        for name in dtype.names:
            values = columns[name]
            chunk[name] = values[rows] if isinstance(values, np.ndarray) else values
    return out


@dataclass
class Statistics:
    """Norm-dict moments and class-dict counts, accumulated block by block (Chan's formulas)."""

    specs: list[DatasetSpec]
    moments: dict[tuple[str, str], tuple[int, float, float]] = field(default_factory=dict)
    counts: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)

    def add(self, data: dict[str, np.ndarray]) -> None:
        for spec in self.specs:
            arr = data[spec.name].reshape(-1)
            if spec.slots is not None:  # constituents count valid entries only
                raw = np.dtype((np.void, spec.dtype.itemsize))
                arr = arr.view(raw)[arr["valid"]].view(spec.dtype)
            for var in spec.inputs:
                x = arr[var].astype(np.float64)
                finite = np.isfinite(x)
                if not finite.all():  # NaN-safe: absent values (e.g. no soft muon) don't count
                    x = x[finite]
                n, mean = len(x), float(x.mean()) if len(x) else 0.0
                x -= mean
                m2 = float(np.square(x, out=x).sum())  # not np.dot: BLAS threads cost more here
                self.moments[spec.name, var] = _combine(
                    self.moments.get((spec.name, var)), n, mean, m2
                )
            for label in spec.labels:
                values, counts = _value_counts(arr[label])
                acc = self.counts.setdefault((spec.name, label), {})
                for v, c in zip(values.tolist(), counts.tolist()):
                    acc[v] = acc.get(v, 0) + c

    def norm_dict(self, warn: Callable[[str], None]) -> dict[str, dict[str, dict[str, float]]]:
        """``{dataset: {variable: {"mean", "std"}}}``, population std, as UPP writes it."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for spec in self.specs:
            if not spec.inputs:
                continue
            out[spec.name] = {}
            for var in spec.inputs:
                n, mean, m2 = self.moments[spec.name, var]
                std = float(np.sqrt(m2 / n)) if n else float("nan")
                if not (np.isfinite(std) and std > 0):
                    # UPP refuses std == 0; only a file of a handful of jets gets here
                    warn(f"{spec.name}.{var} has std {std}, writing std 1.0")
                    mean, std = (mean if n else 0.0), 1.0
                out[spec.name][var] = {"mean": mean, "std": std}
        return out

    def class_dict(self) -> dict[str, dict[str, list[float]]]:
        """Inverse-frequency class weights, UPP's formula and layout.

        The weight of value k is ``(total / count_k) / min_j(total / count_j)`` rounded to 2
        decimals, listed in the order of the sorted unique values.
        """
        out: dict[str, dict[str, list[float]]] = {}
        for spec in self.specs:
            if not spec.labels:
                continue
            out[spec.name] = {}
            for label in spec.labels:
                counts = self.counts[spec.name, label]
                c = np.array([counts[k] for k in sorted(counts)], dtype=np.float64)
                inv = c.sum() / c
                out[spec.name][label] = [round(float(w), 2) for w in inv / inv.min()]
        return out


def _value_counts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values present in an integer array and how often each occurs."""
    if len(x) == 0:
        return x[:0], x[:0]
    low = int(x.min())
    counts = np.bincount(x.astype(np.int64) - low)  # labels span a small range: no sort needed
    values = np.flatnonzero(counts)
    return values + low, counts[values]


def _combine(
    old: tuple[int, float, float] | None, n: int, mean: float, m2: float
) -> tuple[int, float, float]:
    if old is None or old[0] == 0:
        return n, mean, m2
    n0, mean0, m20 = old
    total = n0 + n
    delta = mean - mean0
    return total, mean0 + delta * n / total, m20 + m2 + delta**2 * n0 * n / total


def write_split(
    path: Path,
    split: Split,
    specs: list[DatasetSpec],
    generate: Generator,
    seed: int,
    compression: str,
    class_names: tuple[str, ...],
    component_names: list[str],
    config: dict,
    dsids: list[str],
    stats: Statistics | None = None,
) -> None:
    """Write one split's file, block by block; feed the first NORM_JETS jets to ``stats``."""
    # Same dataset creation as ftag's H5Writer (which UPP uses): fixed size, h5py's own chunk guess
    # for jets, (100, slots) chunks for constituents, no shuffle filter.
    comp = {"lz4": hdf5plugin.LZ4(), "gzip": "gzip", "none": None}[compression]
    n = split.num_jets
    component_counts = np.zeros(len(component_names), dtype=np.int64)
    with h5py.File(path, "w") as f:
        f.attrs["writer_version"] = ftag.__version__
        datasets = {}
        for spec in specs:
            shape = (n,) if spec.slots is None else (n, spec.slots)
            chunks = None if spec.slots is None else (min(100, n), spec.slots)
            datasets[spec.name] = f.create_dataset(
                spec.name, shape=shape, dtype=spec.dtype, compression=comp, chunks=chunks
            )

        def write(start: int, stop: int, data: dict[str, np.ndarray]) -> None:
            for name, ds in datasets.items():
                ds[start:stop] = data[name]

        # One thread writes (compresses) block k while this one generates block k+1: h5py
        # releases the GIL in HDF5 calls. Each block fills one of two arenas in turn.
        arenas = (Arena(), Arena())
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for block, start in enumerate(range(0, n, GEN_BLOCK)):
                stop = min(start + GEN_BLOCK, n)
                key = (split.key, block)
                rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
                data, component = generate(rng, stop - start, split, start, arenas[block % 2])
                if pending is not None:
                    pending.result()  # at most one block waits, and errors surface here
                pending = pool.submit(write, start, stop, data)
                if stats is not None and start < NORM_JETS:
                    keep = min(stop, NORM_JETS) - start
                    stats.add({k: v[:keep] for k, v in data.items()})
                component_counts += np.bincount(component, minlength=len(component_names))
            if pending is not None:
                pending.result()

        datasets["jets"].attrs["flavour_label"] = list(class_names)
        counts = {
            k: {"num_jets": int(c), "unique_jets": int(c)}
            for k, c in zip(component_names, component_counts)
        }
        counts["total"] = {"num_jets": n, "unique_jets": n}
        f.attrs["config"] = json.dumps({**config, "split": split.name, "num_jets": n})
        f.attrs["jets_counts"] = json.dumps(counts)
        f.attrs["unique_jets"] = np.int64(n)
        f.attrs["dsids"] = str(dsids)
        f.attrs["resampling_method"] = "none"
        f.attrs["upp_hash"] = f"salt-demo-data v{salt.__version__}"
