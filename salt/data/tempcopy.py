"""`data.move_files_temp`: copy the input files to fast storage and always remove the copies.

The copies are removed when training ends (`SaltDataModule.teardown`), and otherwise when the
process ends: normally, by an exception (atexit, and the `salt` entry point's own clean-up), and
on SIGTERM or Ctrl-C (salt's signal handling ends the run with an exception, so the same clean-up
runs). Only the process that made a copy removes it, so forked dataloader workers never delete
what the main process is still reading.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
from pathlib import Path

from salt.errors import SaltError

log = logging.getLogger(__name__)

_owned: list[tuple[int, Path]] = []  # (pid that created it, path)
_atexit_registered = False

# keep this much free beyond the copies, so the copy does not fill /dev/shm to the last byte
_HEADROOM = 64 * 1024**2


def register_for_cleanup(path: Path) -> None:
    """Remove `path` (file or folder) when this process ends."""
    global _atexit_registered
    _owned.append((os.getpid(), Path(path)))
    if not _atexit_registered:
        atexit.register(cleanup)
        _atexit_registered = True


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink(missing_ok=True)
    log.info("removed temporary %s", path)


def cleanup() -> None:
    """Remove everything this process registered; safe to call more than once."""
    pid = os.getpid()
    for _, path in [entry for entry in _owned if entry[0] == pid]:
        _remove(path)
    _owned[:] = [entry for entry in _owned if entry[0] != pid]


def remove_now(path: Path) -> None:
    """Remove `path` now if this process registered it (and forget it)."""
    pid, path = os.getpid(), Path(path)
    if (pid, path) in _owned:
        _remove(path)
        _owned[:] = [entry for entry in _owned if entry != (pid, path)]


def _size(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def copy_destinations(paths: list[Path], folder: Path) -> list[Path]:
    """Where `copy_to_temp` puts each of `paths` inside `folder` (the same on every rank)."""
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    # the index prefix keeps equal names from different folders apart
    where = {src: folder / f"{i:03d}_{src.name}" for i, src in enumerate(unique)}
    return [where[p.resolve()] for p in paths]


def copy_to_temp(paths: list[Path], folder: str | Path) -> list[Path]:
    """Copy `paths` into the new folder `folder`; refuse before copying if room is short."""
    folder = Path(os.path.expandvars(os.path.expanduser(str(folder))))
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SaltError(
            f"data.move_files_temp: cannot create '{folder.parent}' ({err}). Choose a folder "
            "you can write to."
        ) from None
    unique = list(dict.fromkeys(p.resolve() for p in paths))
    needed = sum(p.stat().st_size for p in unique)
    free = shutil.disk_usage(folder.parent).free
    if needed + _HEADROOM > free:
        raise SaltError(
            f"data.move_files_temp: '{folder.parent}' has {_size(free)} free, but the input files "
            f"need {_size(needed)} (plus {_size(_HEADROOM)} headroom). Free space there, choose "
            "another folder, or drop --data.move_files_temp to read the files where they are."
        )
    register_for_cleanup(folder)
    destinations = copy_destinations(paths, folder)
    try:
        folder.mkdir()
        for src, dst in zip(paths, destinations):
            if not dst.exists():
                log.info("copying %s to %s", src, dst)
                shutil.copyfile(src, dst)
    except OSError as err:
        remove_now(folder)
        raise SaltError(
            f"data.move_files_temp: copying the input files into '{folder}' failed ({err}). "
            "Choose another folder or drop --data.move_files_temp."
        ) from None
    return destinations
