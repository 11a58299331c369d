"""Finding, opening and combining the HDF5 files of one split, with errors that say what to fix."""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  UPP writes LZ4 (HDF5 filter 32004); h5py alone cannot read it

from salt.errors import SaltError

FileSpec = str | Path | list[str] | list[Path]


def resolve_files(spec: FileSpec, split: str) -> list[Path]:
    """Expand one path, a glob or a list of either into existing files, in a stable order."""
    items = spec if isinstance(spec, list | tuple) else [spec]
    if not items:
        raise SaltError(f"data.{split}_file is empty: give a path, a glob or a list of paths.")
    paths: list[Path] = []
    for item in items:
        item = os.path.expandvars(os.path.expanduser(str(item)))
        if glob.has_magic(item):
            matched = sorted(glob.glob(item))
            if not matched:
                raise SaltError(f"data.{split}_file: no file matches the pattern '{item}'.")
            paths.extend(Path(m) for m in matched)
        else:
            path = Path(item)
            if not path.exists():
                hint = _sibling_hint(path)
                raise SaltError(
                    f"data.{split}_file: '{path}' does not exist.{hint} Set --data.{split}_file "
                    "to a UPP output file (make demo files with `salt-demo-data OUT_DIR`)."
                )
            if path.is_dir():
                raise SaltError(f"data.{split}_file: '{path}' is a directory, not an HDF5 file.")
            paths.append(path)
    return paths


def _sibling_hint(path: Path) -> str:
    parent = path.parent if str(path.parent) else Path()
    if not parent.is_dir():
        return f" (its folder '{parent}' does not exist either)"
    h5s = sorted(p.name for p in parent.glob("*.h5"))[:5]
    return f" Files in '{parent}': {', '.join(h5s)}." if h5s else ""


def open_h5(path: str | Path, split: str, **kwargs) -> h5py.File:
    """Open `path` read-only, turning h5py's low-level failures into messages about the file."""
    path = Path(path)
    try:
        return h5py.File(path, "r", **kwargs)
    except FileNotFoundError:
        raise SaltError(f"data.{split}_file: '{path}' does not exist.") from None
    except OSError as err:
        text = str(err)
        if "truncated" in text:
            why = "is truncated (its size is smaller than HDF5 recorded: an interrupted copy?)"
        elif "signature" in text:
            why = "is not an HDF5 file"
        else:
            why = f"cannot be opened as HDF5 ({text})"
        raise SaltError(
            f"data.{split}_file: '{path}' {why}. Point --data.{split}_file to a UPP output file."
        ) from None


def check_readable(path: Path, split: str, names: list[str]) -> None:
    """Read the first and last row of each dataset so that a damaged file fails now, not mid-run."""
    with open_h5(path, split) as f:
        for name in names:
            ds = f[name]
            if ds.shape[0] == 0:
                continue
            try:
                ds[:1]
                ds[-1:]
            except OSError as err:
                raise SaltError(
                    f"data.{split}_file: dataset '{name}' in '{path}' cannot be read ({err}). "
                    "The file is damaged or truncated; copy or produce it again."
                ) from None


def combine_files(
    paths: list[Path], split: str, names: list[str] | None = None, workdir: Path | None = None
) -> Path:
    """One file to read from: the file itself, or a virtual file over several (no copying).

    Each dataset in `names` (default: all that every file has) becomes one HDF5 virtual dataset
    that concatenates the files' rows in the order given, with the first file's attributes.
    The virtual file lives in `workdir` (a fresh temporary folder by default); the caller owns
    its removal (see `salt.data.tempcopy`).
    """
    if len(paths) == 1:
        return paths[0]
    abs_paths = [str(Path(p).resolve()) for p in paths]
    shapes: dict[str, list[tuple]] = {}
    dtypes: dict[str, object] = {}
    attrs: dict[str, dict] = {}
    for path in abs_paths:
        with open_h5(path, split) as f:
            here = [k for k, v in f.items() if isinstance(v, h5py.Dataset)]
            if names is None:
                names = here
            for name in names:
                if name not in here:
                    continue  # the dataset checks name the missing dataset and the file
                ds = f[name]
                if name not in dtypes:
                    dtypes[name], attrs[name] = ds.dtype, dict(ds.attrs)
                elif ds.dtype != dtypes[name] or ds.shape[1:] != shapes[name][0][1:]:
                    raise SaltError(
                        f"data.{split}_file: dataset '{name}' of '{path}' has shape "
                        f"{ds.shape} and type {ds.dtype}, but in '{abs_paths[0]}' it has rows of "
                        f"shape {shapes[name][0][1:]} and type {dtypes[name]}; files combined "
                        "into one split must share their layout."
                    )
                shapes.setdefault(name, []).append(ds.shape)
    names = [n for n in names if len(shapes.get(n, ())) == len(abs_paths)]
    workdir = Path(workdir or tempfile.mkdtemp(prefix=f"salt_vds_{split}_"))
    out = workdir / f"{split}_combined.h5"
    with h5py.File(out, "w") as fout:
        for name in names:
            total = sum(shape[0] for shape in shapes[name])
            layout = h5py.VirtualLayout((total, *shapes[name][0][1:]), dtypes[name])
            start = 0
            for path, shape in zip(abs_paths, shapes[name]):
                layout[start : start + shape[0]] = h5py.VirtualSource(path, name, shape)
                start += shape[0]
            ds = fout.create_virtual_dataset(name, layout)
            for key, value in attrs[name].items():
                ds.attrs[key] = value
    return out
