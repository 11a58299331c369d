"""ModelWrapper: the LightningModule around a SaltModel (steps, losses, optimiser, schedule)."""

from __future__ import annotations

import logging
import math
import random
import warnings

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.optim.lr_scheduler import LRScheduler

from salt.errors import SaltError
from salt.models.layout import host_sizes
from salt.models.object_tasks import OBJECT_OUTPUTS
from salt.models.saltmodel import SaltModel
from salt.models.tasks import ClassificationTask

log = logging.getLogger(__name__)
# salt's hook below only adds host-side sizes; the datamodule has no transfer hook of its own
warnings.filterwarnings("ignore", message=".*overridden `on_before_batch_transfer`.*")

LRS_KEYS = ("initial", "max", "end", "pct_start", "weight_decay")
OPTIMIZERS = ("AdamW", "lion")
LOSS_MODES = ("wsum", "GLS")


class OneCycle(LRScheduler):
    """Cosine warm-up from `initial` to `max`, then cosine decay to `end`, stepped per batch.

    The length is a plain attribute, `total_steps`, set from the trainer whenever training
    (re)starts, so a resumed run with more epochs stretches the schedule instead of crashing.
    The warm-up is a whole number of steps, at least one and less than the total.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        initial: float,
        peak: float,
        end: float,
        pct_start: float,
        total_steps: int,
    ):
        self.initial, self.peak, self.end, self.pct_start = initial, peak, end, pct_start
        self.total_steps = int(total_steps)
        super().__init__(optimizer)

    @property
    def warmup_steps(self) -> int:
        if self.total_steps <= 1:
            return 0
        return min(max(1, round(self.pct_start * self.total_steps)), self.total_steps - 1)

    def lr_at(self, step: int) -> float:
        warm, total = self.warmup_steps, max(self.total_steps, 1)
        if step < warm:
            frac = step / warm
            return self.peak + (self.initial - self.peak) * (1 + math.cos(math.pi * frac)) / 2
        frac = min((step - warm) / max(total - warm, 1), 1.0)
        return self.end + (self.peak - self.end) * (1 + math.cos(math.pi * frac)) / 2

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch) for _ in self.optimizer.param_groups]


def _rng_states() -> dict:
    """Every RNG that can feed training, as tensors and plain numbers (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss_next],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal.tolist()), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ModelWrapper(L.LightningModule):
    """Trains a SaltModel: the total loss is the loss-weighted sum of its tasks' losses.

    Parameters
    ----------
    model
        The SaltModel.
    lrs_config
        ``{initial, max, end, pct_start, weight_decay}`` of the one-cycle schedule.
    name
        Model name: prefixes the written predictions (``GN2_pb``) and names the run folder.
    optimizer
        ``AdamW``, or ``lion`` (Chen et al., arXiv:2302.06675, from the lion-pytorch package;
        it usually wants a smaller learning rate than AdamW).
    loss_mode
        How task losses combine: ``wsum``, the loss-weighted sum; or ``GLS`` (geometric loss
        strategy), the geometric mean of the weighted losses, which balances tasks whose losses
        differ in scale: each task's gradient is scaled by the inverse of its own loss.
    """

    def __init__(
        self,
        model: SaltModel,
        lrs_config: dict[str, float],
        name: str = "salt",
        optimizer: str = "AdamW",
        loss_mode: str = "wsum",
    ):
        super().__init__()
        missing = [k for k in LRS_KEYS if k not in lrs_config]
        unknown = [k for k in lrs_config if k not in LRS_KEYS]
        if missing or unknown:
            found = f"lacks {missing}" if missing else f"has unknown keys {unknown}"
            raise SaltError(f"model.lrs_config {found}; it takes exactly {list(LRS_KEYS)}.")
        if optimizer not in OPTIMIZERS:
            raise SaltError(f"model.optimizer '{optimizer}' is not one of {list(OPTIMIZERS)}.")
        if loss_mode not in LOSS_MODES:
            raise SaltError(f"model.loss_mode '{loss_mode}' is not one of {list(LOSS_MODES)}.")
        self.model = model
        self.lrs_config = dict(lrs_config)
        self.name = name
        self.optimizer_name = optimizer
        self.loss_mode = loss_mode
        self._rng_to_restore: dict | None = None
        if self.jet_task is not None:
            from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy

            self.val_accuracy = MulticlassAccuracy(len(self.jet_task.class_names), average="micro")
            self.val_auc = BinaryAUROC()

    @property
    def jet_task(self) -> ClassificationTask | None:
        """The jet flavour task, whose accuracy and b-vs-light AUC are logged on validation."""
        for task in self.model.tasks:
            if isinstance(task, ClassificationTask) and task.input_name == self.model.global_object:
                return task
        return None

    def forward(self, inputs, valid=None, labels=None):
        return self.model(inputs, valid, labels)

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # the packed layouts' sizes, read on the host before the batch goes to the device, so
        # that no training step waits for the device to report a length
        if isinstance(batch, dict) and batch.get("valid") and "sizes" not in batch:
            batch["sizes"] = host_sizes(batch["valid"], self.model.constituents)
        return batch

    # ----------------------------------------------------------------------------- steps
    def _shared_step(self, batch: dict, stage: str) -> tuple[dict[str, Tensor], Tensor]:
        outputs, losses = self.model(
            batch["inputs"], batch["valid"], batch["labels"], batch.get("sizes")
        )
        n_jets = (
            int(batch["inputs"][self.model.global_object].shape[0])
            if (self.model.global_object in batch["inputs"])
            else next(iter(batch["valid"].values())).shape[0]
        )
        total = self.total_loss(losses)
        sync = stage != "train"
        for name, loss in losses.items():
            self.log(f"{stage}/{name}_loss", loss, batch_size=n_jets, sync_dist=sync)
        self.log(f"{stage}/loss", total, batch_size=n_jets, sync_dist=sync, prog_bar=True)
        if stage == "val":
            # the un-prefixed name is what checkpoint file names and monitors use
            self.log("val_loss", total, batch_size=n_jets, sync_dist=True, logger=False)
        return outputs, total

    def total_loss(self, losses: dict[str, Tensor]) -> Tensor:
        """The loss that is minimised: the tasks' weighted losses, summed or (GLS) their
        geometric mean."""
        weighted = [self.model.loss_weight(name) * loss for name, loss in losses.items()]
        if self.loss_mode == "GLS":
            # exp(mean(log)) rather than a product: twelve small losses underflow a product
            return torch.stack(weighted).clamp(min=1e-12).log().mean().exp()
        return sum(weighted)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")[1]

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        outputs, total = self._shared_step(batch, "val")
        # the mask decoder's objects, for salt.callbacks.MaskformerMetrics
        self.val_objects = outputs.get(OBJECT_OUTPUTS)
        if self.jet_task is not None:
            self._update_jet_metrics(outputs[self.jet_task.name], batch)
        return total

    def _update_jet_metrics(self, logits: Tensor, batch: dict) -> None:
        task = self.jet_task
        labels = batch["labels"][task.input_name][task.label]
        probs = torch.softmax(logits.float(), -1)
        self.val_accuracy.update(probs, labels)
        self.log("val/jet_accuracy", self.val_accuracy, on_epoch=True, batch_size=len(labels))
        names = task.class_names
        if "bjets" in names and "ujets" in names:
            b, u = names.index("bjets"), names.index("ujets")
            keep = (labels == b) | (labels == u)
            score = probs[keep, b] / (probs[keep, b] + probs[keep, u]).clamp(min=1e-12)
            self.val_auc.update(score, (labels[keep] == b).long())
            self.log("val/b_vs_light_auc", self.val_auc, on_epoch=True, batch_size=len(labels))

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self.model.predict(
            batch["inputs"], batch["valid"], batch.get("labels"), batch.get("sizes")
        )

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return self.test_step(batch, batch_idx)

    # ----------------------------------------------------------------------------- optimiser
    def total_steps(self) -> int:
        return max(int(self.trainer.estimated_stepping_batches), 1)

    def configure_optimizers(self):
        cfg = self.lrs_config
        if self.optimizer_name == "lion":
            from lion_pytorch import Lion

            optimizer = Lion(self.parameters(), lr=cfg["initial"], weight_decay=cfg["weight_decay"])
        else:
            optimizer = torch.optim.AdamW(
                self.parameters(), lr=cfg["initial"], weight_decay=cfg["weight_decay"]
            )
        # Sized in on_train_start. Asking the trainer for its total steps here would build the
        # training dataloader before a checkpoint's loop state is restored, and Lightning would
        # then never hand the loader its mid-epoch position: a resumed epoch would start over.
        scheduler = OneCycle(optimizer, cfg["initial"], cfg["max"], cfg["end"], cfg["pct_start"], 1)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_start(self) -> None:
        total = self.total_steps()
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if not isinstance(scheduler, OneCycle) or scheduler.total_steps == total:
                continue
            if scheduler.last_epoch > 0:  # resumed, and the new run is longer or shorter
                log.warning(
                    "learning-rate schedule resized from %d to %d steps (max_epochs changed on "
                    "resume); it continues from step %d",
                    scheduler.total_steps,
                    total,
                    scheduler.last_epoch,
                )
            scheduler.total_steps = total
            # the optimiser holds the rate of the current step; recompute it for the new length
            lrs = scheduler.get_lr()
            for group, lr in zip(scheduler.optimizer.param_groups, lrs):
                group["lr"] = lr
            scheduler._last_lr = lrs

    # ----------------------------------------------------------------------------- RNG state
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning does not save RNG states; without them a resumed run draws different
        # dropout masks and is not the run it continues
        checkpoint["salt_rng_states"] = _rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get("salt_rng_states")

    def on_train_epoch_start(self) -> None:
        # restore as late as possible: nothing between loading and the first batch may draw
        if self._rng_to_restore is not None:
            _set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
