"""Checkpoints: their names, how they are written, and which one to test or resume from.

* `Checkpoint`: ModelCheckpoint with salt's file names, ``epoch=NNN-val_loss=X.XXXXX.ckpt``.
* `AtomicCheckpointIO`: every checkpoint lands whole or not at all. It is written to a temporary
  file in the same folder, flushed and fsync'ed, then renamed over its final name (a rename
  within one file system is atomic), and the folder is fsync'ed so that the rename survives a
  power cut. A process killed mid-write (SIGKILL after a batch system's grace period, a node
  failure) leaves at most a ``.<name>.<pid>.tmp`` file, which no resume picks up. A full disk
  stops the run with the path and the space needed; the earlier checkpoints are not touched.
* `best_checkpoint`, `loadable`: what `salt test` and a requeued job's resume choose.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from salt.errors import SaltError

log = logging.getLogger(__name__)

CKPT_PATTERN = re.compile(r"epoch=(\d+)-val_loss=([-+0-9.eEinfna]+)\.ckpt$")
TMP_SUFFIX = ".tmp"
# kept free beyond the checkpoint itself: a file system filled to the last byte fails others
HEADROOM = 16 * 1024**2


class CheckpointWriteError(SaltError):
    """A checkpoint could not be written (full disk, quota, permissions)."""


def _size(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def temporary_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (same folder, hidden)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def write_atomically(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either its old content or all of `data`.

    Raises CheckpointWriteError, naming the folder and the space needed, when the file system
    lacks room (checked first, and caught again if the write itself runs out).
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if len(data) + HEADROOM > free:
        raise _no_room(path, len(data), free)
    tmp = temporary_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise _no_room(path, len(data), shutil.disk_usage(folder).free, err) from None
        raise CheckpointWriteError(f"cannot write the checkpoint '{path}': {err}") from None
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # some file systems refuse to sync a folder; the data itself is synced
        pass


def _no_room(path: Path, needed: int, free: int, err: OSError | None = None) -> SaltError:
    reason = f" ({err.strerror})" if err is not None else ""
    return CheckpointWriteError(
        f"no room to save the checkpoint '{path}'{reason}: it needs {_size(needed)} "
        f"(plus {_size(HEADROOM)} headroom) and '{path.parent}' has {_size(free)} free. The "
        "earlier checkpoints are intact; free some space (or give the run a --trainer."
        "default_root_dir on a larger disk) and resume from the newest of them."
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into memory, then `write_atomically` (see the module docstring).

    Lightning's own save goes through fsspec, whose local transaction writes to the system's
    temporary folder and moves the file over (a copy when /tmp is another disk), without fsync.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomically(path, buffer.getbuffer())


class Checkpoint(ModelCheckpoint):
    """Saves a checkpoint after every validation, named by epoch and validation loss.

    Parameters
    ----------
    dirpath
        `<run folder>/ckpts`; `salt fit` sets it.
    save_top_k
        Keep the best k by validation loss (-1: keep all, the default, so that any epoch can be
        resumed or tested).
    **kwargs
        Further ModelCheckpoint arguments.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "epoch={epoch:03d}-val_loss={val_loss:.5f}",
        monitor: str = "val_loss",
        save_top_k: int = -1,
        auto_insert_metric_name: bool = False,
        **kwargs,
    ):
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            save_top_k=save_top_k,
            auto_insert_metric_name=auto_insert_metric_name,
            **kwargs,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        # a resume writes into a run folder of its own: the ranking of the earlier folder's
        # files must not come along (with save_top_k it would delete them), and Lightning's
        # warning about it, on every resume, tells the user nothing
        self.best_model_path = state_dict["best_model_path"]


def best_checkpoint(ckpt_dir: str | Path) -> Path:
    """The checkpoint in `ckpt_dir` with the lowest validation loss in its name."""
    ckpt_dir = Path(ckpt_dir)
    scored = []
    for path in ckpt_dir.glob("*.ckpt"):
        match = CKPT_PATTERN.search(path.name)
        if match:
            scored.append((float(match.group(2)), -int(match.group(1)), path))
    if not scored:
        found = ", ".join(p.name for p in ckpt_dir.glob("*.ckpt")) or "none"
        raise SaltError(
            f"no checkpoint named epoch=NNN-val_loss=X.ckpt in '{ckpt_dir}' (found: {found}). "
            "Train first, or name one with --ckpt_path."
        )
    # lowest loss; on a tie the later epoch
    return min(scored)[2]


def loadable(path: Path) -> str | None:
    """None if `path` loads as a Lightning checkpoint, else why not (for the user)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, pickle errors...
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return f"does not load ({type(err).__name__}: {first[:160]})"
    missing = [k for k in ("state_dict", "loops", "optimizer_states") if k not in checkpoint]
    if missing:
        return f"is not a resumable Lightning checkpoint (no {', '.join(missing)})"
    return None
