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


def combine_files(paths: list[Path], split: str, workdir: Path | None = None) -> Path:
    """One file to read from: the file itself, or a virtual dataset over several (no copying).

    The virtual file lives in `workdir` (a fresh temporary folder by default); the caller owns
    its removal (see `salt.data.tempcopy.cleanup`).
    """
    if len(paths) == 1:
        return paths[0]
    from ftag.vds import get_virtual_layout

    names: set[str] | None = None
    for path in paths:
        with open_h5(path, split) as f:
            here = {k for k, v in f.items() if isinstance(v, h5py.Dataset)}
        names = here if names is None else names & here
    if not names:
        raise SaltError(f"data.{split}_file: the files {[str(p) for p in paths]} share no dataset.")
    workdir = Path(workdir or tempfile.mkdtemp(prefix=f"salt_vds_{split}_"))
    out = workdir / f"{split}_combined_vds.h5"
    abs_paths = [str(p.resolve()) for p in paths]
    with h5py.File(out, "w") as fout:
        for name in sorted(names):
            fout.create_virtual_dataset(name, get_virtual_layout(abs_paths, name))
            with h5py.File(abs_paths[0], "r") as f0:
                for key, value in f0[name].attrs.items():
                    fout[name].attrs[key] = value
    return out
