"""MaskformerMetrics: how well a MaskFormer finds the true objects (vertex finding), per class.

Counts and rates are those of `salt.evaluation.vertex_finding` (a predicted object finds a true
one when it holds at least half of the true object's tracks and at least half of its own tracks
are the true object's; one to one). Per real object class (``b``, ``c`` of ``data.mf_config``)
and over all:

* ``val/vertex_<class>_eff``: found true objects / true objects with tracks;
* ``val/vertex_<class>_fake_rate``: predicted objects of that class finding nothing / predicted
  objects of that class.

They are logged at the end of every validation epoch. In `salt test` the same numbers over the
test file go into the evaluation report (``vertex_finding`` in ``<stem>__report.json`` and a
"Vertex finding" table in ``<stem>__report.md``) when a `PredictionWriter` writes one, and are
printed either way.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from salt.data.objects import OBJECTS
from salt.errors import SaltError
from salt.evaluation.vertex_finding import (
    predicted_objects,
    vertex_finding_counts,
    vertex_finding_rates,
)
from salt.models.layout import Packed

log = logging.getLogger(__name__)


def batch_counts(
    model,
    class_scores: torch.Tensor,
    mask_logits: torch.Tensor,
    layout,
    labels: dict,
    min_efficiency: float = 0.5,
    min_purity: float = 0.5,
    threshold: float = 0.5,
) -> dict[str, int]:
    """Vertex-finding counts of one batch.

    Parameters
    ----------
    model
        The SaltModel (its mask decoder's object classes and targets).
    class_scores
        (B, Q, C+1) class logits or probabilities (only the most probable class counts).
    mask_logits
        (N, Q) packed over the layout's tracks.
    layout
        The decoder constituents' `Packed` layout.
    labels
        The batch's labels (the truth objects and the constituents' parent ids).
    """
    targets = model.objects.targets(labels, layout)
    pred, valid = layout.pad(mask_logits.float())  # (B, L, Q)
    true, _ = layout.pad(targets.masks)
    pred_class, pred_masks = predicted_objects(
        class_scores.float().cpu().numpy(),
        pred.transpose(1, 2).cpu().numpy(),
        valid.cpu().numpy(),
        threshold,
    )
    return vertex_finding_counts(
        pred_class,
        pred_masks,
        targets.object_class.cpu().numpy(),
        true.transpose(1, 2).cpu().numpy(),
        model.objects.classes.names,
        min_efficiency,
        min_purity,
    )


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


class MaskformerMetrics(Callback):
    """Vertex-finding efficiency and fake rate of a MaskFormer (see the module docstring).

    Parameters
    ----------
    min_efficiency, min_purity
        Track-overlap thresholds for a predicted object to find a true one.
    threshold
        A track is in a predicted object's mask when sigmoid(mask logit) > threshold.
    """

    def __init__(
        self, min_efficiency: float = 0.5, min_purity: float = 0.5, threshold: float = 0.5
    ):
        super().__init__()
        self.min_efficiency, self.min_purity, self.threshold = min_efficiency, min_purity, threshold
        self.counts: Counter = Counter()
        self.missing_labels = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        if getattr(pl_module.model, "objects", None) is None:
            raise SaltError(
                "salt.callbacks.MaskformerMetrics needs a model with a mask_decoder; remove the "
                "callback from trainer.callbacks."
            )

    def _names(self, pl_module) -> tuple[str, ...]:
        return pl_module.model.objects.classes.names

    def _add(self, pl_module, class_scores, mask_logits, batch) -> None:
        model = pl_module.model
        labels = batch.get("labels") or {}
        if OBJECTS not in labels:
            self.missing_labels = True
            return
        layout = Packed(batch["valid"][model.objects.constituent])
        counts = batch_counts(
            model, class_scores, mask_logits, layout, labels,
            self.min_efficiency, self.min_purity, self.threshold,
        )  # fmt: skip
        self.counts.update(counts)

    def _rates(self, trainer, pl_module) -> tuple[dict[str, int], dict[str, float]]:
        names = self._names(pl_module)
        keys = [f"{n}_{k}" for n in names[:-1] for k in ("true", "found", "pred", "fake")]
        totals = torch.tensor([self.counts.get(k, 0) for k in keys], dtype=torch.float64)
        if trainer.world_size > 1:
            totals = trainer.strategy.reduce(totals.to(pl_module.device), reduce_op="sum").cpu()
        counts = {k: int(v) for k, v in zip(keys, totals.tolist())}
        return counts, vertex_finding_rates(counts, names)

    # ----------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.counts = Counter()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        decoded = getattr(pl_module, "val_objects", None)
        if decoded is None:
            return
        with torch.no_grad():
            self._add(pl_module, decoded.objects.class_logits, decoded.objects.mask_logits, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        _, rates = self._rates(trainer, pl_module)
        pl_module.log_dict({f"val/vertex_{k}": v for k, v in rates.items()}, sync_dist=False)

    # ----------------------------------------------------------------------------- test
    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.counts = Counter()

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        objects = outputs.get(OBJECTS) if isinstance(outputs, dict) else None
        if objects is not None:
            self._add(pl_module, objects["probs"], objects["mask_logits"], batch)

    def on_test_end(self, trainer, pl_module) -> None:
        if self.missing_labels:
            log.warning("MaskformerMetrics: the test batches have no truth objects; no metrics")
            return
        counts, rates = self._rates(trainer, pl_module)
        if not trainer.is_global_zero:
            return
        result = {
            "classes": list(self._names(pl_module)[:-1]),
            "criteria": {
                "min_efficiency": self.min_efficiency,
                "min_purity": self.min_purity,
                "mask_threshold": self.threshold,
            },
            "counts": counts,
            "rates": {k: _finite_or_none(v) for k, v in rates.items()},
        }
        print("vertex finding: " + ", ".join(f"{k} {v:.3f}" for k, v in rates.items()))
        report = self._report_json(trainer)
        if report is not None and report.is_file():
            add_to_report(report, result)

    @staticmethod
    def _report_json(trainer) -> Path | None:
        from salt.callbacks.predictionwriter import PredictionWriter

        for callback in trainer.callbacks:
            if isinstance(callback, PredictionWriter) and callback.report and callback.path:
                return callback.path.parent / f"{callback.path.stem}__report.json"
        return None


def add_to_report(json_path: Path, result: dict) -> None:
    """Put `result` under ``vertex_finding`` in a report's JSON and re-render its markdown."""
    from salt.evaluation.markdown import render_markdown

    report = json.loads(json_path.read_text())
    report["vertex_finding"] = result
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    md = json_path.with_name(json_path.name.removesuffix(".json") + ".md")
    md.write_text(render_markdown(report))
