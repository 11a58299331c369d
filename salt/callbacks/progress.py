"""ProgressBar: Lightning's progress bar, showing jets per second as well."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Adds ``jets/s`` to the bar: training throughput of all ranks, smoothed over recent batches.

    Measured from batch end to batch end, so reading the data counts; under DDP it is this
    rank's rate times the number of ranks (they step together).
    """

    def __init__(self, refresh_rate: int = 1, smoothing: float = 0.9):
        super().__init__(refresh_rate=refresh_rate)
        self.smoothing = smoothing
        self._last: float | None = None
        self._rate: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._last = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None:
            valid = batch.get("valid") or {}
            inputs = batch.get("inputs") or {}
            first = next(iter(valid.values()), None)
            if first is None:
                first = next(iter(inputs.values()))
            rate = first.shape[0] * trainer.world_size / max(now - self._last, 1e-9)
            s = self.smoothing
            self._rate = rate if self._rate is None else s * self._rate + (1 - s) * rate
        self._last = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if self._rate is not None and trainer.training:
            metrics["jets/s"] = f"{self._rate:,.0f}"
        return metrics
