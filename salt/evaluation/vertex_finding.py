"""Vertex finding: which true objects a MaskFormer found, and which of its objects are fake.

Plain numpy on arrays from the model or a prediction file. Shapes: B jets, Q predicted objects,
K true object slots, L track slots per jet; `valid` (B, L) says which slots are real tracks.

Definitions (those of upstream salt-ml's MaskformerMetrics "loose" criterion, made one to one):

* a predicted object is *real* when its most probable class is not the null class and its mask
  (sigmoid > 0.5 on valid tracks) holds at least one track;
* a true object counts when it is real and owns at least one track (an object without tracks
  cannot be found by any track selection);
* a predicted object *finds* a true object of the same jet when its track efficiency
  (shared / true tracks) and its purity (shared / predicted tracks) are both >= 0.5;
* each true object is found by at most one predicted object and vice versa: where several pairs
  pass, the assignment with the most found objects wins (ties: the most shared tracks). Upstream
  pairs them by the training matching instead, which depends on the loss weights;
* efficiency of class c = found true c objects / true c objects; fake rate of predicted class c =
  real predicted c objects that find nothing / real predicted c objects. The predicted class need
  not equal the true one unless ``same_class=True``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


def predicted_objects(
    class_logits: np.ndarray, mask_logits: np.ndarray, valid: np.ndarray, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class (B, Q) and boolean masks (B, Q, L) from logits.

    Parameters
    ----------
    class_logits
        (B, Q, C+1), the last class being null (probabilities work as well: only argmax is used).
    mask_logits
        (B, Q, L).
    valid
        (B, L) bool.
    threshold
        A track is in a mask when sigmoid(logit) > threshold.

    Masks of objects predicted null are empty.
    """
    pred_class = np.argmax(class_logits, axis=-1)
    null = class_logits.shape[-1] - 1
    cut = np.log(threshold / (1 - threshold))
    masks = (mask_logits > cut) & valid[:, None, :] & (pred_class != null)[:, :, None]
    return pred_class, masks


def match_found(
    pred_masks: np.ndarray,
    true_masks: np.ndarray,
    true_real: np.ndarray,
    min_efficiency: float = 0.5,
    min_purity: float = 0.5,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """For each true object, the predicted object that finds it.

    Parameters
    ----------
    pred_masks
        (B, Q, L) bool; an empty mask is no predicted object.
    true_masks
        (B, K, L) bool.
    true_real
        (B, K) bool, True for a real true object.
    min_efficiency, min_purity
        Thresholds on shared / true and shared / predicted tracks.
    allowed
        (B, Q, K) bool, pairs that may match at all (e.g. same class); None: all.

    Returns
    -------
    (B, K) int64: the index of the finding predicted object, -1 where none.
    """
    pred_masks, true_masks = pred_masks.astype(bool), true_masks.astype(bool)
    shared = np.einsum("bql,bkl->bqk", pred_masks.astype(np.int32), true_masks.astype(np.int32))
    n_pred = pred_masks.sum(-1)[:, :, None]
    n_true = true_masks.sum(-1)[:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        passes = (shared >= min_efficiency * n_true) & (shared >= min_purity * n_pred)
    passes &= (n_pred > 0) & (n_true > 0) & true_real[:, None, :].astype(bool)
    if allowed is not None:
        passes &= allowed
    found = np.full(true_real.shape, -1, dtype=np.int64)
    # most jets have at most one passing pair per object on either side: no choice to make
    ambiguous = (passes.sum(1) > 1).any(1) | (passes.sum(2) > 1).any(1)
    jet, q, k = np.nonzero(passes & ~ambiguous[:, None, None])
    found[jet, k] = q
    # elsewhere: most found objects first (a pass is worth more than all shared tracks), then
    # the most shared tracks
    worth = passes * (pred_masks.shape[-1] + 1 + shared)
    for b in np.flatnonzero(ambiguous):
        rows, cols = linear_sum_assignment(-worth[b])
        keep = passes[b, rows, cols]
        found[b, cols[keep]] = rows[keep]
    return found


def vertex_finding_counts(
    pred_class: np.ndarray,
    pred_masks: np.ndarray,
    true_class: np.ndarray,
    true_masks: np.ndarray,
    class_names: Sequence[str],
    min_efficiency: float = 0.5,
    min_purity: float = 0.5,
    same_class: bool = False,
) -> dict[str, int]:
    """Counts of true, found, predicted and fake objects per class; they add over batches.

    Parameters
    ----------
    pred_class, pred_masks
        (B, Q) and (B, Q, L) from `predicted_objects`.
    true_class
        (B, K) mapped class per true object slot; the null index (len(class_names) - 1) for none.
    true_masks
        (B, K, L) bool.
    class_names
        Names of the classes by mapped index, the null class last (e.g. ``b, c, null``).
    same_class
        Require the finding object's predicted class to equal the true class.

    Returns
    -------
    ``{<name>_true, <name>_found, <name>_pred, <name>_fake}`` for every real class.
    """
    null = len(class_names) - 1
    true_real = true_class != null
    allowed = pred_class[:, :, None] == true_class[:, None, :] if same_class else None
    found = match_found(pred_masks, true_masks, true_real, min_efficiency, min_purity, allowed)
    true_counted = true_real & true_masks.any(-1)
    pred_real = (pred_class != null) & pred_masks.any(-1)
    finds = np.zeros(pred_class.shape, dtype=bool)
    jet, slot = np.nonzero(found >= 0)
    finds[jet, found[jet, slot]] = True
    counts = {}
    for c, name in enumerate(class_names[:null]):
        counts[f"{name}_true"] = int((true_counted & (true_class == c)).sum())
        counts[f"{name}_found"] = int(((found >= 0) & (true_class == c)).sum())
        counts[f"{name}_pred"] = int((pred_real & (pred_class == c)).sum())
        counts[f"{name}_fake"] = int((pred_real & ~finds & (pred_class == c)).sum())
    return counts


def vertex_finding_rates(counts: dict[str, int], class_names: Sequence[str]) -> dict[str, float]:
    """``<name>_eff`` and ``<name>_fake_rate`` per real class and over all (``all_...``).

    A rate without a denominator is NaN.
    """

    def ratio(num: int, den: int) -> float:
        return num / den if den else float("nan")

    rates = {}
    totals = dict.fromkeys(("true", "found", "pred", "fake"), 0)
    for name in class_names[:-1]:
        for key in totals:
            totals[key] += counts[f"{name}_{key}"]
        rates[f"{name}_eff"] = ratio(counts[f"{name}_found"], counts[f"{name}_true"])
        rates[f"{name}_fake_rate"] = ratio(counts[f"{name}_fake"], counts[f"{name}_pred"])
    rates["all_eff"] = ratio(totals["found"], totals["true"])
    rates["all_fake_rate"] = ratio(totals["fake"], totals["pred"])
    return rates
