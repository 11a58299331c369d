"""The MaskFormer loss: match queries to true objects, then score classes, masks and properties.

Shapes: B jets, Q queries, K true object slots, N valid tracks (packed), L the batch's longest
jet, C real classes (the null class "no object" is index C), R regressed properties.

Per jet the queries are matched one to one to the real true objects (`salt.models.matching`);
then, with the weights of ``loss_weights``:

* ``object_class_ce``: cross entropy of every query's class logits, the target being its matched
  object's class, or null for an unmatched query. The null class is weighted by
  ``null_class_weight`` (0.5, upstream salt-ml's default) since most queries are null.
* ``mask_ce``: binary cross entropy of a matched query's mask logits against its object's mask,
  averaged over the jet's valid tracks, then over the matched objects of the batch.
* ``mask_dice``: 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) per matched object, averaged.
* ``mask_focal``: sigmoid focal loss (gamma 2), averaged like ``mask_ce``.
* ``regression``: the object regression's own loss on matched objects (see `ObjectRegression`).

Unlike upstream, which averages the mask cross entropy over all stored track slots (40, padding
included), ``mask_ce`` here is a mean over each jet's valid tracks: it does not change with the
file's slot count, and is larger by about slots / mean tracks per jet for the same predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salt.errors import SaltError, close_matches
from salt.models.matching import COST_TERMS, hungarian, match_cost
from salt.models.object_targets import ObjectTargets

LOSS_TERMS = COST_TERMS


class ObjectRegression(Protocol):
    """What a regression of object properties provides to the MaskFormer loss.

    Its targets travel in `ObjectTargets.regression` (B, K, R), already scaled.
    """

    def predict(self, embed: Tensor) -> Tensor:
        """(B, Q, D) object embeddings -> (B, Q, R) predictions in the scaled units."""
        ...

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Scalar loss over (P, R) matched predictions and targets (NaN: unknown, skipped)."""
        ...


def _check_weights(weights: Mapping[str, float], key: str) -> dict[str, float]:
    unknown = [k for k in weights if k not in LOSS_TERMS]
    if unknown:
        raise SaltError(
            f"mask_decoder loss_config.{key}: unknown terms {unknown}; the terms are "
            f"{', '.join(LOSS_TERMS)}.{close_matches(unknown[0], LOSS_TERMS)}"
        )
    if not any(weights.values()):
        raise SaltError(f"mask_decoder loss_config.{key}: every weight is 0: nothing to learn.")
    return {k: float(v) for k, v in weights.items()}


def _zero(x: Tensor) -> Tensor:
    # keeps the graph connected (DDP needs every parameter used) when a batch has no object
    return x.sum() * 0.0


class MaskFormerLoss(nn.Module):
    """Matching and losses for one set of object predictions.

    Parameters
    ----------
    num_classes
        Real object classes C (the null class is added as index C).
    loss_weights
        ``{term: weight}`` over `LOSS_TERMS`; a term with weight 0 or absent is not computed.
    matcher_weights
        Weights of the matching cost; default `loss_weights`.
    null_class_weight
        Weight of the null class in ``object_class_ce``.
    """

    def __init__(
        self,
        num_classes: int,
        loss_weights: Mapping[str, float],
        matcher_weights: Mapping[str, float] | None = None,
        null_class_weight: float = 0.5,
    ):
        super().__init__()
        if num_classes < 1:
            raise SaltError(f"mask_decoder loss_config.num_classes must be >= 1, not {num_classes}")
        self.num_classes = num_classes
        self.loss_weights = _check_weights(loss_weights, "loss_weights")
        self.matcher_weights = (
            self.loss_weights
            if matcher_weights is None
            else _check_weights(matcher_weights, "matcher_weights")
        )
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = null_class_weight
        self.register_buffer("class_weight", class_weight, persistent=False)

    def forward(
        self,
        class_logits: Tensor,
        mask_logits: Tensor,
        embed: Tensor,
        targets: ObjectTargets,
        layout,
        regression: ObjectRegression | None = None,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Weighted losses by term, and the matching.

        Parameters
        ----------
        class_logits
            (B, Q, C+1).
        mask_logits
            (N, Q) packed (or (B, L, Q) with a `Padded` layout).
        embed
            (B, Q, D) object embeddings, read by `regression`.
        targets
            The true objects; ``targets.masks`` in the layout of `mask_logits`.
        layout
            The tracks' layout (`Packed` in training).
        regression
            Predicts and scores object properties; needs ``targets.regression``.

        Returns
        -------
        ``{term: weighted loss}`` and the (B, K) query matched to each true object (-1: none).
        """
        null = self.num_classes
        if class_logits.shape[-1] != null + 1:
            raise SaltError(
                f"mask_decoder: class_net gives {class_logits.shape[-1]} logits but "
                f"loss_config.num_classes is {null} (+1 null class); make them agree."
            )
        pred_masks, valid = layout.pad(mask_logits)  # (B, L, Q)
        true_masks, _ = layout.pad(targets.masks)  # (B, L, K)
        pred_masks, true_masks = pred_masks.transpose(1, 2), true_masks.transpose(1, 2)
        if valid is None:
            valid = torch.ones(pred_masks.shape[::2], dtype=torch.bool, device=pred_masks.device)
        real = targets.object_class != null  # (B, K)

        reg_pred = None
        use_regression = regression is not None and targets.regression is not None
        if use_regression:
            reg_pred = regression.predict(embed)
        cost = match_cost(
            class_logits,
            pred_masks,
            valid,
            targets.object_class,
            true_masks,
            self.matcher_weights,
            reg_pred,
            targets.regression,
        )
        query_for_target = hungarian(cost, real)

        jet, slot = (query_for_target >= 0).nonzero(as_tuple=True)  # matched pairs (P,)
        query = query_for_target[jet, slot]
        class_target = torch.full(class_logits.shape[:2], null, device=class_logits.device)
        class_target[jet, query] = targets.object_class[jet, slot]

        w = self.loss_weights
        losses: dict[str, Tensor] = {}
        if w.get("object_class_ce"):
            ce = F.cross_entropy(
                class_logits.float().flatten(0, 1), class_target.flatten(), self.class_weight
            )
            losses["object_class_ce"] = w["object_class_ce"] * ce

        logits = pred_masks[jet, query].float()  # (P, L)
        v = valid[jet].float()
        truth = true_masks[jet, slot].float() * v
        n_valid = v.sum(-1).clamp(min=1)
        for term in ("mask_ce", "mask_dice", "mask_focal"):
            if not w.get(term):
                continue
            if len(jet) == 0:
                losses[term] = _zero(mask_logits)
                continue
            if term == "mask_dice":
                p = logits.sigmoid() * v
                num = 2 * (p * truth).sum(-1) + 1
                per_object = 1 - num / (p.sum(-1) + truth.sum(-1) + 1)
            else:
                bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
                if term == "mask_focal":
                    p = logits.sigmoid()
                    p_true = p * truth + (1 - p) * (1 - truth)
                    bce = bce * (1 - p_true) ** 2
                per_object = (bce * v).sum(-1) / n_valid
            losses[term] = w[term] * per_object.mean()

        if w.get("regression") and use_regression:
            assert reg_pred is not None and targets.regression is not None
            pred, target = reg_pred[jet, query], targets.regression[jet, slot]
            known = torch.isfinite(target).any(-1)
            if known.any():
                reg_loss = regression.loss(pred[known], target[known])
            else:
                reg_loss = _zero(reg_pred)
            losses["regression"] = w["regression"] * reg_loss
        return losses, query_for_target
