"""Checkpoint: ModelCheckpoint with salt's file names, `epoch=NNN-val_loss=X.XXXXX.ckpt`."""

from __future__ import annotations

import re
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint

from salt.errors import SaltError

CKPT_PATTERN = re.compile(r"epoch=(\d+)-val_loss=([-+0-9.eEinfna]+)\.ckpt$")


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
