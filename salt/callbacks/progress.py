"""ProgressBar: a live bar in a terminal, plain lines in a log file or a pipe.

In an interactive terminal, Lightning's tqdm bar with the training throughput (``jets/s``). Where
stdout is not one (a batch job's log, ``salt fit ... | tee``, a pseudo-terminal that reports no
width, in which tqdm draws nothing at all), one line per epoch and one every `interval_minutes`
inside long epochs:

    epoch 3/20  batch 400/1200  elapsed 0:12:31  ETA 1:47:10  1,234 jets/s  train/loss 0.812
    epoch 3/20  done            elapsed 0:37:02  ETA 1:20:44  1,230 jets/s  train/loss 0.801
    val/loss 0.794

ETA is the time the remaining training steps take at this run's average pace so far,
validation included.
"""

from __future__ import annotations

import math
import os
import sys
import time
from datetime import timedelta

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf

MODES = ("auto", "bar", "lines")


def interactive(stream=None) -> bool:
    """Whether `stream` (stdout) is a terminal that can show a bar: a tty with a width."""
    stream = sys.stdout if stream is None else stream
    try:
        if not stream.isatty():
            return False
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


def _clock(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    return str(timedelta(seconds=round(max(seconds, 0))))


def _batch_jets(batch) -> int:
    """Jets in a training batch (`{inputs, valid, labels}`, see salt.data.dataset)."""
    valid = batch.get("valid") or {}
    first = next(iter(valid.values()), None)
    if first is None:
        first = next(iter(batch["inputs"].values()))
    return int(first.shape[0])


class ProgressBar(TQDMProgressBar):
    """Progress of `salt fit`, `test`, `validate` and `predict`, as a bar or as lines.

    Parameters
    ----------
    refresh_rate
        Bar mode: redraw every this many batches.
    smoothing
        Weight of the past in the bar's ``jets/s`` (exponential smoothing per batch).
    mode
        ``auto`` (a bar in an interactive terminal with a width, lines elsewhere), ``bar`` or
        ``lines``.
    interval_minutes
        Lines mode: also print a line inside an epoch whenever this much time has passed since
        the last line (0: only one line per epoch).
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        smoothing: float = 0.9,
        mode: str = "auto",
        interval_minutes: float = 2.0,
    ):
        if mode not in MODES:
            raise ValueError(f"ProgressBar mode must be one of {MODES}, got '{mode}'")
        super().__init__(refresh_rate=refresh_rate)
        self.smoothing = smoothing
        self.mode = mode
        self.interval = max(float(interval_minutes), 0.0) * 60
        self.lines = mode == "lines" or (mode == "auto" and not interactive())
        self._last: float | None = None
        self._rate: float | None = None
        # lines mode: when this start of training began, and the last line
        self._t0 = self._t_line = 0.0
        self._step0 = 0
        self._jets_since_line = 0
        self._placeholder = False
        self._epoch_t0 = self._epoch_t1 = 0.0
        self._epoch_jets = 0

    # ----------------------------------------------------------------------------- both modes
    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.lines:
            self.disable()  # tqdm draws nothing; the hooks below print the lines

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None
        self._epoch_t0 = self._epoch_t1 = time.monotonic()
        self._epoch_jets = 0
        if not self._placeholder:
            super().on_train_epoch_start(trainer, pl_module)
            return
        # the first epoch's bar is created with its name and total, so that no "Training: 0/?"
        # is drawn before it (in lines mode it is disabled: the inherited hooks update it
        # without drawing)
        self._placeholder = False
        self._train_progress_bar.close()
        self.train_progress_bar = Tqdm(
            desc=f"Epoch {trainer.current_epoch}",
            total=convert_inf(self.total_train_batches),
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = self._t_line = time.monotonic()
        self._step0 = trainer.global_step
        self._jets_since_line = 0
        # a placeholder that draws nothing until the first epoch starts
        self.train_progress_bar = Tqdm(disable=True)
        self._placeholder = True
        if self.lines:
            total = trainer.estimated_stepping_batches
            steps = "" if not math.isfinite(total) else f", {int(total) - self._step0} steps"
            self._print(
                f"training: {trainer.max_epochs} epoch{'s' * (trainer.max_epochs != 1)}{steps}; "
                "a line per epoch"
                + (f" and every {self.interval / 60:g} min" if self.interval else "")
            )

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self.train_progress_bar = Tqdm(disable=True)
        self._val_progress_bar = None  # made with its total by the first batch

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        if self._val_progress_bar is not None:
            self._val_progress_bar.close()
        self.train_progress_bar.close()

    def on_validation_batch_start(
        self, trainer, pl_module, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self._val_progress_bar is not None:
            super().on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
            return
        # the bar is created with its name and total, so that no "Validation: 0/?" is drawn
        self.has_dataloader_changed(dataloader_idx)  # tells the tracker this loader's index
        has_main_bar = trainer.state.fn != "validate"
        self.val_progress_bar = Tqdm(
            desc=self.sanity_check_description if trainer.sanity_checking else "Validation",
            total=convert_inf(self.total_val_batches_current_dataloader),
            position=2 * self.process_position + has_main_bar,
            disable=self.is_disabled,
            leave=not has_main_bar,
            dynamic_ncols=True,
            file=sys.stdout,
            bar_format=self.BAR_FORMAT,
        )

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._val_progress_bar is None:  # no validation batch (limit_val_batches 0)
            self.reset_dataloader_idx_tracker()
        else:
            super().on_validation_end(trainer, pl_module)
        if self.lines and trainer.state.fn == "validate":
            self._print(f"validation done  elapsed {_clock(time.monotonic() - self._t0)}")

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":
            self._t0 = time.monotonic()
        # made when the first batch arrives, with its total (see on_validation_batch_start)
        self._val_progress_bar = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.lines:  # after the epoch's validation: its losses are known
            # the epoch's training throughput, validation excluded
            rate = self._epoch_jets / max(self._epoch_t1 - self._epoch_t0, 1e-9)
            self._line(trainer, pl_module, "done", rate)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        n_jets = _batch_jets(batch) * trainer.world_size
        if self._last is not None:
            rate = n_jets / max(now - self._last, 1e-9)
            s = self.smoothing
            self._rate = rate if self._rate is None else s * self._rate + (1 - s) * rate
        self._last = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.lines:
            return
        self._jets_since_line += n_jets
        self._epoch_jets += n_jets
        self._epoch_t1 = time.monotonic()
        if self.interval and time.monotonic() - self._t_line >= self.interval:
            total = convert_inf(self.total_train_batches)
            of = f"/{total}" if total is not None else ""
            self._line(trainer, pl_module, f"batch {batch_idx + 1}{of}")

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if self._rate is not None and trainer.training:
            metrics["jets/s"] = f"{self._rate:,.0f}"
        return metrics

    # ----------------------------------------------------------------------------- evaluation
    def on_test_start(self, trainer, pl_module) -> None:
        self._t0 = self._t_line = time.monotonic()
        super().on_test_start(trainer, pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        if self.lines and self.interval and time.monotonic() - self._t_line >= self.interval:
            total = convert_inf(self.total_test_batches_current_dataloader)
            self._t_line = time.monotonic()
            self._print(f"testing: batch {batch_idx + 1}/{total or '?'}")

    def on_test_end(self, trainer, pl_module) -> None:
        super().on_test_end(trainer, pl_module)
        if self.lines:
            self._print(f"testing done  elapsed {_clock(time.monotonic() - self._t0)}")

    # ----------------------------------------------------------------------------- lines mode
    def _line(self, trainer, pl_module, where: str, jets_per_s: float | None = None) -> None:
        now = time.monotonic()
        elapsed = now - self._t0
        steps = trainer.global_step - self._step0
        total = trainer.estimated_stepping_batches
        eta = None
        if steps > 0 and math.isfinite(total):
            eta = elapsed / steps * max(total - trainer.global_step, 0)
        if jets_per_s is None:
            jets_per_s = self._jets_since_line / max(now - self._t_line, 1e-9)
        self._t_line, self._jets_since_line = now, 0
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        parts = [
            f"epoch {trainer.current_epoch + 1}/{epochs}",
            f"{where:<14}",
            f"elapsed {_clock(elapsed)}",
            f"ETA {_clock(eta)}",
        ]
        if jets_per_s > 0:
            parts.append(f"{jets_per_s:,.0f} jets/s")
        metrics = super().get_metrics(trainer, pl_module)
        for key, value in metrics.items():
            if key == "v_num" or not ("loss" in key or key.startswith("val/")):
                continue
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        self._print("  ".join(parts))

    def _print(self, text: str) -> None:
        if self._trainer is not None and not self._trainer.is_global_zero:
            return
        print(text, file=sys.stdout, flush=True)
