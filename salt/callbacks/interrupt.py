"""Interruption: SIGTERM and Ctrl-C end a run cleanly, with a checkpoint to resume from.

Lightning stops after the current batch on SIGTERM but exits 0 and saves nothing. salt:

* before training (set-up, file copies): ends at once, removing temporary copies (atexit);
* during training: lets the current batch finish, saves `ckpts/interrupted-...ckpt` once training
  has started, stops the dataloader workers, and `salt` exits with 128 + the signal number and
  prints the command that resumes. A second Ctrl-C aborts without waiting.

Dataloader workers (forked from the main process) ignore Ctrl-C and leave on SIGTERM; they are
also bound to die with the main process (see salt.data.datamodule).
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


@dataclass
class _State:
    owner: int = field(default_factory=os.getpid)
    signal: int | None = None
    interrupts: int = 0
    training: bool = False
    checkpoint: Path | None = None


STATE = _State()


def _handler(signum, frame) -> None:
    if os.getpid() != STATE.owner:  # a forked worker: the main process shuts it down
        if signum == signal.SIGTERM:
            os._exit(128 + signum)
        return
    if STATE.signal is None:
        STATE.signal = signum
    if not STATE.training:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
    if signum == signal.SIGINT:
        STATE.interrupts += 1
        if STATE.interrupts > 1:
            raise KeyboardInterrupt
        log.warning("Ctrl-C: finishing this batch and saving a checkpoint (Ctrl-C again to abort)")
        # Lightning's SIGTERM handling stops the loop at the end of the batch, on every rank
        os.kill(os.getpid(), signal.SIGTERM)


def install_handlers() -> None:
    """Take over SIGTERM and SIGINT for this process (the `salt` entry point calls it first)."""
    STATE.owner = os.getpid()
    STATE.signal = None
    STATE.interrupts = 0
    STATE.checkpoint = None
    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


class Interruption(Callback):
    """Saves a resumable checkpoint when a run is interrupted by a signal."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        STATE.training = stage == "fit"

    def teardown(self, trainer, pl_module, stage: str) -> None:
        STATE.training = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if STATE.signal is None and not isinstance(exception, KeyboardInterrupt):
            return
        STATE.training = False
        started = trainer.global_step > 0
        ckpt_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
        if not started or not ckpt_dir or trainer.fast_dev_run:
            return
        path = Path(ckpt_dir) / (
            f"interrupted-epoch={trainer.current_epoch:03d}-step={trainer.global_step}.ckpt"
        )
        trainer.save_checkpoint(path)
        STATE.checkpoint = path
        log.warning("saved %s", path)
