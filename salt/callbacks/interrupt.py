"""Interruption: SIGTERM, Ctrl-C and Slurm's time-limit signal end a run cleanly, resumable.

Lightning stops after the current batch on SIGTERM but exits 0 and saves nothing. salt:

* before training (set-up, file copies): ends at once, removing temporary copies (atexit);
* during training: lets the current batch finish (under DDP the ranks agree after every batch,
  so a signal to any one rank stops all of them at the same batch), saves
  `ckpts/interrupted-epoch=NNN-step=N.ckpt` once training has started, stops the dataloader
  workers, and `salt` exits with 128 + the signal number, printing the command that resumes. A
  second Ctrl-C aborts without waiting (and without a checkpoint).
* an input error met mid-training (a damaged HDF5 chunk: a SaltError from the dataloader) first
  saves the same `interrupted-...` checkpoint, then `salt` exits 2 with the error and the resume
  command;
* SIGUSR1 inside a Slurm job (`#SBATCH --signal=USR1@120`, see submit/submit_slurm.sh) does the
  same and then requeues the job (`scontrol requeue`); the requeued job resumes from that
  checkpoint in the same run folder.

Dataloader workers (forked from the main process) ignore all three: the main process shuts them
down, and they are bound to die with it (see salt.data.datamodule). A worker that left on its
own would make torch abort the batch in flight.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

SIGNAL_NAMES = {
    signal.SIGINT: "SIGINT (Ctrl-C)",
    signal.SIGTERM: "SIGTERM",
    signal.SIGUSR1: "SIGUSR1 (Slurm time limit)",
}


@dataclass
class _State:
    owner: int = field(default_factory=os.getpid)
    signal: int | None = None
    interrupts: int = 0
    training: bool = False
    started: bool = False
    checkpoint: Path | None = None
    requeue: bool = False


STATE = _State()


def _record(signum: int) -> None:
    if STATE.signal is None:
        STATE.signal = signum
    if signum == signal.SIGUSR1 and os.environ.get("SLURM_JOB_ID"):
        STATE.requeue = True


def _handler(signum, frame) -> None:
    if os.getpid() != STATE.owner:  # a forked worker: the main process shuts it down
        return
    _record(signum)
    if not STATE.training:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)
    if signum == signal.SIGINT:
        STATE.interrupts += 1
        if STATE.interrupts > 1:
            raise KeyboardInterrupt
        log.warning("Ctrl-C: finishing this batch and saving a checkpoint (Ctrl-C again to abort)")
    if signum != signal.SIGTERM:
        # Lightning's SIGTERM handling stops the loop at the end of the batch, on every rank
        os.kill(os.getpid(), signal.SIGTERM)


def install_handlers() -> None:
    """Take over SIGTERM, SIGINT and SIGUSR1 (the `salt` entry point calls it first).

    Installed before Lightning's trainer starts, the SIGUSR1 handler also keeps Lightning's own
    Slurm requeue handler (which saves mid-step) out of the way.
    """
    STATE.owner = os.getpid()
    STATE.signal = None
    STATE.interrupts = 0
    STATE.training = False
    STATE.started = False
    STATE.checkpoint = None
    STATE.requeue = False
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, _handler)


def requeue_slurm_job() -> str:
    """`scontrol requeue` this Slurm job; returns what happened, for the user."""
    job = os.environ.get("SLURM_JOB_ID", "")
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    try:
        result = subprocess.run(
            ["scontrol", "requeue", job], capture_output=True, text=True, check=False
        )
    except OSError as err:
        return f"could not requeue Slurm job {job}: {err}"
    if result.returncode != 0:
        return f"could not requeue Slurm job {job}: {(result.stderr or result.stdout).strip()}"
    return f"requeued Slurm job {job}: it resumes in the same run folder"


class Interruption(Callback):
    """Saves a resumable checkpoint when a run is interrupted by a signal."""

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._arm(trainer)

    def on_train_start(self, trainer, pl_module) -> None:
        self._arm(trainer)

    @staticmethod
    def _arm(trainer) -> None:
        """From here on a SIGTERM (or the SIGTERM that Ctrl-C and SIGUSR1 become) stops the
        training loop after the current batch, instead of Lightning's handler (installed when
        fitting starts).

        Lightning's handler broadcasts to the other DDP ranks from inside the signal handler,
        that is at whatever point each rank happens to be: in another collective on another
        rank (a gradient all-reduce, a validation metric, the broadcast at the next batch's
        start), the ranks wait for each other forever. Here the handler only records the signal
        and passes it on to the ranks this process started; without DDP it sets Lightning's
        flag, and under DDP the ranks agree at the end of every training batch
        (`on_train_batch_end`), a point that all of them reach in step.
        """
        STATE.training = True
        if getattr(signal.getsignal(signal.SIGTERM), "salt_armed", False):
            return
        connector = trainer._signal_connector
        launcher = trainer.strategy.launcher
        distributed = trainer.world_size > 1

        def on_sigterm(signum, frame) -> None:
            if os.getpid() != STATE.owner:  # a forked worker: the main process shuts it down
                return
            _handler(signum, frame)
            if on_sigterm.fired:
                return
            on_sigterm.fired = True
            if STATE.signal == signal.SIGTERM:  # (Ctrl-C and SIGUSR1 said so already)
                log.warning("SIGTERM: finishing this batch and saving a checkpoint")
            if launcher is not None:  # the other ranks on this node, when this one started them
                launcher.kill(signum)
            if not distributed:
                connector.received_sigterm = True  # Lightning stops after the batch

        on_sigterm.fired = False
        on_sigterm.salt_armed = True
        signal.signal(signal.SIGTERM, on_sigterm)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        STATE.training = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        STATE.started = True
        if trainer.world_size > 1:
            self._agree(trainer)

    @staticmethod
    def _agree(trainer) -> None:
        """Under DDP, every rank stops after this batch if any rank has had a signal (a rank
        that had none takes the other's); Lightning then raises its SIGTERMException on all of
        them before the next batch, and all of them save the checkpoint together."""
        mine = torch.tensor(STATE.signal or 0, device=trainer.strategy.root_device)
        signum = int(trainer.strategy.reduce(mine, reduce_op="max"))
        if signum:
            _record(signum)
            trainer._signal_connector.received_sigterm = True

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if STATE.signal is None and not isinstance(exception, KeyboardInterrupt):
            if _is_input_error(exception) and STATE.training:
                self._save_after_input_error(trainer)
            return
        STATE.training = False
        STATE.started = STATE.started or trainer.global_step > 0
        if STATE.interrupts > 1:  # a second Ctrl-C: the step may be half done, save nothing
            return
        path = _interrupted_path(trainer)
        if path is None:
            return
        # every rank calls it (it ends in a barrier); only rank 0 writes
        trainer.save_checkpoint(path, weights_only=False)
        STATE.checkpoint = path
        if trainer.is_global_zero:
            log.warning("saved %s", path)

    @staticmethod
    def _save_after_input_error(trainer) -> None:
        """Keep the work done before a batch that cannot be read (a damaged HDF5 chunk, say).

        The error comes from fetching the next batch, between two steps, so the state is that
        of the last finished batch; a resume (with the file repaired or replaced) starts with
        the batch that failed. Under DDP only the rank that met the error is here, while the
        others wait in the next collective: rank 0 writes its copy of the (identical) weights
        without the barrier of `trainer.save_checkpoint`; on another rank nothing is saved.
        """
        STATE.training = False
        STATE.started = STATE.started or trainer.global_step > 0
        path = _interrupted_path(trainer)
        if path is None or not trainer.is_global_zero:
            return
        try:
            if trainer.world_size == 1:
                trainer.save_checkpoint(path, weights_only=False)
            else:
                checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
                trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, path)
        except Exception as err:  # the input error is what the user must see first
            log.warning("could not save the training so far to %s: %s", path, err)
            return
        STATE.checkpoint = path
        log.warning("saved %s before stopping", path)


def _interrupted_path(trainer) -> Path | None:
    """`<ckpts>/interrupted-epoch=NNN-step=N.ckpt`, or None when there is nothing to save."""
    ckpt_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
    if not STATE.started or not ckpt_dir or trainer.fast_dev_run:
        return None
    return Path(ckpt_dir) / (
        f"interrupted-epoch={trainer.current_epoch:03d}-step={trainer.global_step}.ckpt"
    )


def _is_input_error(exception: BaseException) -> bool:
    """A problem with the data that salt explains (not a failed checkpoint write or a bug)."""
    from salt.callbacks.checkpoint import CheckpointWriteError
    from salt.errors import SaltError

    return isinstance(exception, SaltError) and not isinstance(exception, CheckpointWriteError)
