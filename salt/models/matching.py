"""Hungarian matching of predicted objects (queries) to the true objects of each jet.

Shapes: B jets, Q queries, K true object slots, L track slots (the batch's longest jet; `valid`
(B, L) says which are real tracks), C real classes (+1 for the null class).

The cost of giving query q the true object k of a jet is a weighted sum over that jet's valid
tracks only:

* ``object_class_ce``: -p_q(class of k), the predicted probability of the true class;
* ``mask_ce``: the mean binary cross entropy of q's mask logits against k's mask;
* ``mask_dice``: 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1), p = sigmoid(mask logit);
* ``mask_focal``: the mean sigmoid focal loss (gamma 2);
* ``regression``: the mean absolute difference of predicted and true (scaled) properties, over
  the properties that are known (finite).

All cost matrices are built at once on the model's device, copied to numpy once, and
`scipy.optimize.linear_sum_assignment` is called only for jets with two or more true objects: a
jet without one needs no solving (every query is "no object"), and for a jet with one the best
query is the argmin of its cost column, taken for all such jets at once on the device.
`benchmarks/matching.py` times it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

COST_TERMS = ("object_class_ce", "mask_ce", "mask_dice", "mask_focal", "regression")

# a finite stand-in for a NaN or infinite cost: linear_sum_assignment refuses those, and a model
# that produced them shows it in its (NaN) loss, not as a crash in the matcher
_BAD_COST = 1e9


def _mask_costs(
    mask_logits: Tensor, target_masks: Tensor, valid: Tensor, weights: Mapping[str, float]
) -> Tensor:
    """(B, Q, L) logits, (B, K, L) targets, (B, L) valid -> (B, Q, K) weighted mask cost."""
    logits = mask_logits.float()
    v = valid.to(logits.dtype)[:, None, :]  # (B, 1, L)
    t = target_masks.to(logits.dtype) * v
    n_valid = v.sum(-1, keepdim=True).clamp(min=1)  # (B, 1, 1)
    cost = logits.new_zeros((*logits.shape[:2], t.shape[1]))
    if weights.get("mask_ce"):
        pos = F.softplus(-logits) * v  # BCE against 1
        neg = F.softplus(logits) * v  # BCE against 0
        ce = torch.einsum("bql,bkl->bqk", pos, t) + torch.einsum("bql,bkl->bqk", neg, 1 - t)
        cost = cost + weights["mask_ce"] * ce / n_valid
    if weights.get("mask_dice"):
        p = logits.sigmoid() * v
        num = 2 * torch.einsum("bql,bkl->bqk", p, t)
        den = p.sum(-1)[:, :, None] + t.sum(-1)[:, None, :]
        cost = cost + weights["mask_dice"] * (1 - (num + 1) / (den + 1))
    if weights.get("mask_focal"):
        p = logits.sigmoid()
        pos = (1 - p) ** 2 * F.softplus(-logits) * v
        neg = p**2 * F.softplus(logits) * v
        focal = torch.einsum("bql,bkl->bqk", pos, t) + torch.einsum("bql,bkl->bqk", neg, 1 - t)
        cost = cost + weights["mask_focal"] * focal / n_valid
    return cost


def regression_cost(pred: Tensor, target: Tensor) -> Tensor:
    """(B, Q, R) predictions, (B, K, R) targets with NaN for unknown -> (B, Q, K) mean |diff|."""
    known = torch.isfinite(target)[:, None]  # (B, 1, K, R)
    diff = (pred.float()[:, :, None] - torch.nan_to_num(target.float())[:, None]).abs()
    diff = torch.where(known, diff, torch.zeros_like(diff))
    return diff.sum(-1) / known.sum(-1).clamp(min=1)


@torch.no_grad()
def match_cost(
    class_logits: Tensor,
    mask_logits: Tensor,
    valid: Tensor,
    target_class: Tensor,
    target_masks: Tensor,
    weights: Mapping[str, float],
    regression_pred: Tensor | None = None,
    regression_target: Tensor | None = None,
) -> Tensor:
    """The (B, Q, K) cost of assigning each query to each true object slot.

    Parameters
    ----------
    class_logits
        (B, Q, C+1).
    mask_logits
        (B, Q, L); values at invalid slots are ignored.
    valid
        (B, L) bool, True for a real track.
    target_class
        (B, K) int64 mapped classes; slots of the null class are not objects (their columns hold
        meaningless costs that `hungarian` never reads).
    target_masks
        (B, K, L) bool.
    weights
        ``{term: weight}`` over `COST_TERMS`; missing or 0 terms are not computed.
    regression_pred, regression_target
        (B, Q, R) and (B, K, R) in the same (scaled) units; used when ``weights["regression"]``.
    """
    probs = class_logits.float().softmax(-1)
    null = class_logits.shape[-1] - 1
    index = target_class.clamp(max=null)[:, None, :].expand(-1, probs.shape[1], -1)
    cost = -weights.get("object_class_ce", 0.0) * torch.gather(probs, 2, index)
    cost = cost + _mask_costs(mask_logits, target_masks, valid, weights)
    if weights.get("regression") and regression_pred is not None:
        if regression_target is None:
            raise ValueError("a regression cost needs regression targets")
        cost = cost + weights["regression"] * regression_cost(regression_pred, regression_target)
    return cost


def hungarian(cost: Tensor, real: Tensor) -> Tensor:
    """Optimal one-to-one assignment of queries to the real true objects, jet by jet.

    Parameters
    ----------
    cost
        (B, Q, K) from `match_cost`.
    real
        (B, K) bool, True for a real true object.

    Returns
    -------
    (B, K) int64 on `cost`'s device: the query matched to each true object slot; -1 for a slot
    that is no real object, or a real one left over when a jet has more objects than queries.
    """
    cost = torch.nan_to_num(cost.float(), nan=_BAD_COST, posinf=_BAD_COST, neginf=-_BAD_COST)
    out = torch.full(real.shape, -1, dtype=torch.long, device=cost.device)
    n_real = real.sum(1)
    # one object: the best query is the argmin of its column, found for all such jets at once
    single = torch.nonzero(n_real == 1).flatten()
    slot = real[single].long().argmax(1)
    out[single, slot] = cost[single, :, slot].argmin(1)
    # several objects: one linear_sum_assignment per jet, after a single copy to numpy
    jets = torch.nonzero(n_real > 1).flatten()
    if len(jets):
        costs = cost[jets].cpu().numpy()
        real_np = real[jets].cpu().numpy()
        rows_all, slots_all, jets_all = [], [], []
        for i in range(len(jets)):
            cols = np.flatnonzero(real_np[i])
            rows, picked = linear_sum_assignment(costs[i][:, cols])
            rows_all.append(rows)
            slots_all.append(cols[picked])
            jets_all.append(np.full(len(rows), i))
        index = torch.from_numpy(np.concatenate(jets_all)).to(cost.device)
        slots = torch.from_numpy(np.concatenate(slots_all)).to(cost.device)
        out[jets[index], slots] = torch.from_numpy(np.concatenate(rows_all)).to(cost.device)
    return out


def query_targets(query_for_target: Tensor, n_queries: int) -> Tensor:
    """(B, K) query per true object -> (B, Q) true object slot per query, -1 for none."""
    n_jets, n_slots = query_for_target.shape
    out = query_for_target.new_full((n_jets, n_queries + 1), -1)
    slots = torch.arange(n_slots, device=out.device).expand(n_jets, -1)
    # unmatched slots write into the spare column n_queries, dropped below
    out.scatter_(1, torch.where(query_for_target >= 0, query_for_target, n_queries), slots)
    return out[:, :n_queries]
