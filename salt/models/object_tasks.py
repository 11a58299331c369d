"""The mask decoder inside a SaltModel: its truth targets, its regression task, its predictions.

Shapes: B jets, Q object queries, K true object slots, N valid tracks (packed) or L slots
(padded, export), C real object classes (index C is "no object"), R regressed properties.

* Targets come from a batch's labels: ``labels["objects"]`` (the `data.mf_config` object dataset,
  padded per jet) and the constituents' parent id, packed with their labels.
* A `RegressionTask` with ``input_name: objects`` reads the decoder's object embeddings. Its
  targets go through the task's scaling (``scaler`` functions, then ``(y - mean) / std``), the
  loss is the task's own (l1, mse, huber) on matched objects only; predictions come back in
  physical units through the task's inverse.
* Predictions per jet: class probabilities (B, Q, C+1) and, per track, the index of the object
  that owns it (-1: none). A track belongs to the predicted object (argmax class not null) whose
  mask holds it (sigmoid > 0.5) with the largest mask logit: the objects that the vertex-finding
  metrics count (`salt.evaluation.vertex_finding.predicted_objects`), made exclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from salt.data.objects import OBJECTS, VALID, ObjectConfig
from salt.errors import SaltError
from salt.models.maskformer import MaskDecoderOutput
from salt.models.object_targets import ObjectClasses, ObjectTargets, build_object_targets
from salt.models.tasks import RegressionTask

#: key of the decoder's outputs among the task outputs, and of its predictions
OBJECT_OUTPUTS = OBJECTS
#: the MaskFormer loss terms, as they appear among the model's losses
DECODER_TERMS = ("object_class_ce", "mask_ce", "mask_dice", "mask_focal")


class TaskRegression:
    """A `RegressionTask` on objects, seen as the MaskFormer loss's `ObjectRegression`."""

    def __init__(self, task: RegressionTask):
        self.task = task

    def predict(self, embed: Tensor) -> Tensor:
        return self.task.net(embed)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        finite = torch.isfinite(target)
        return self.task._loss(pred.float(), torch.nan_to_num(target), finite)

    def scaled_targets(self, labels: Mapping[str, Tensor]) -> Tensor:
        """(B, K, R) scaled targets, NaN where unknown (padding, a missing property)."""
        y, finite = self.task._scaled_targets(labels)
        return torch.where(finite, y, torch.full_like(y, float("nan")))


class ObjectSetup:
    """What a SaltModel needs to run its mask decoder, checked at build time.

    Parameters
    ----------
    mf_config
        `data.mf_config` (filled in by `salt`).
    decoder
        The model's `MaskDecoder`.
    tasks
        The model's tasks; those on ``objects`` must be one plain `RegressionTask`.
    """

    def __init__(self, mf_config: Mapping, decoder, tasks):
        config = ObjectConfig.parse(mf_config)
        if config is None:
            raise SaltError(
                "model.model.init_args.mask_decoder needs data.mf_config (the truth objects and "
                "the constituents' id label); add it."
            )
        self.config = config
        plain = mf_config.as_dict() if hasattr(mf_config, "as_dict") else mf_config
        self.classes = ObjectClasses.from_config(
            plain["object"]["object_classes"], "data.mf_config.object.object_classes"
        )
        if decoder.num_classes != self.classes.num_classes:
            raise SaltError(
                f"mask_decoder loss_config.num_classes is {decoder.num_classes} but "
                f"data.mf_config.object.object_classes has {self.classes.num_classes} real "
                f"classes ({', '.join(self.classes.names[:-1])}) and the null class; make them "
                "agree (class_net's output_size is num_classes + 1)."
            )
        on_objects = [t for t in tasks if t.input_name == OBJECTS]
        self.regression: RegressionTask | None = None
        for task in on_objects:
            if type(task) is not RegressionTask:
                raise SaltError(
                    f"task '{task.name}' reads 'objects': only a RegressionTask can (the "
                    "decoder predicts the object classes itself)."
                )
            if self.regression is not None:
                raise SaltError(
                    f"tasks '{self.regression.name}' and '{task.name}' both regress objects; "
                    "put all object targets in one task."
                )
            if task.context_size:
                raise SaltError(f"task '{task.name}': an object task has no context_size.")
            if task.target_denominators:
                raise SaltError(f"task '{task.name}': object targets take no denominators.")
            if task.input_size != decoder.embed_dim:
                raise SaltError(
                    f"task '{task.name}' has dense_config.input_size {task.input_size}, but "
                    f"the mask decoder's objects have embed_dim {decoder.embed_dim} features."
                )
            self.regression = task
        weights = decoder.criterion.loss_weights
        if self.regression is not None and not weights.get("regression"):
            raise SaltError(
                f"task '{self.regression.name}' regresses objects, but mask_decoder "
                "loss_config.loss_weights has no 'regression' weight: add one (e.g. 2.0)."
            )
        if self.regression is None and weights.get("regression"):
            raise SaltError(
                "mask_decoder loss_config.loss_weights has a 'regression' weight but no task "
                "regresses objects: add a RegressionTask with input_name: objects, or remove it."
            )
        clash = [t.name for t in tasks if t.name in (*DECODER_TERMS, OBJECT_OUTPUTS)]
        if clash:
            raise SaltError(
                f"task names {clash} are taken by the mask decoder's losses and outputs; rename "
                "the tasks."
            )

    @property
    def constituent(self) -> str:
        return self.config.constituent

    def head(self) -> TaskRegression | None:
        return TaskRegression(self.regression) if self.regression is not None else None

    def targets(self, labels: Mapping, layout) -> ObjectTargets:
        """The true objects of a batch from its labels (see the module docstring)."""
        objects = labels.get(OBJECTS)
        parts = labels.get(self.constituent) or {}
        if objects is None or self.config.constituent_id not in parts:
            raise SaltError(
                f"the mask decoder needs labels['{OBJECTS}'] and "
                f"labels['{self.constituent}']['{self.config.constituent_id}'] (data.mf_config); "
                "the batch has neither."
            )
        regression = None
        if self.regression is not None:
            regression = self.head().scaled_targets(objects)
        return build_object_targets(
            objects[self.config.id_label],
            objects[self.config.class_label],
            parts[self.config.constituent_id],
            layout,
            self.classes,
            objects.get(VALID),
            regression,
            where=f"data.mf_config object '{self.config.dataset}'",
        )

    def rename_losses(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The decoder's ``regression`` terms under the regression task's name."""
        if self.regression is None:
            return dict(losses)
        name = self.regression.name
        return {
            (name + k.removeprefix("regression") if k.startswith("regression") else k): v
            for k, v in losses.items()
        }


def track_object_index(out: MaskDecoderOutput, layout, threshold: float = 0.5) -> Tensor:
    """Per track, the query of the predicted object that owns it; -1 for none.

    (N,) int64 for packed tracks, (B, L) for padded ones (see the module docstring).
    """
    logits = out.objects.class_logits
    is_object = logits.argmax(-1) != logits.shape[-1] - 1  # (B, Q)
    mask_logits = out.objects.mask_logits.float()  # (N, Q) or (B, L, Q)
    per_track = is_object[layout.batch] if mask_logits.dim() == 2 else is_object[:, None, :]
    held = (mask_logits > math.log(threshold / (1 - threshold))) & per_track
    if mask_logits.dim() == 3 and layout.mask is not None:
        held = held & layout.mask[:, :, None]
    scores = torch.where(held, mask_logits, torch.full_like(mask_logits, float("-inf")))
    best = scores.argmax(-1)
    return torch.where(held.any(-1), best, torch.full_like(best, -1))


def object_predictions(out: MaskDecoderOutput, layout) -> dict[str, Tensor]:
    """``probs`` (B, Q, C+1), and per track ``track_index`` and ``mask_logits`` (Q each)."""
    return {
        "probs": torch.softmax(out.objects.class_logits.float(), -1),
        "track_index": track_object_index(out, layout),
        "mask_logits": out.objects.mask_logits.float(),
    }
