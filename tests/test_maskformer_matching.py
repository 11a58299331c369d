"""Hungarian matching: optimal against brute force, cost terms against direct computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from salt.models.matching import hungarian, match_cost, query_targets, regression_cost


def brute_force_best(cost: np.ndarray, cols: np.ndarray) -> float:
    """Lowest total cost of a one-to-one assignment of queries (rows) to the given columns."""
    n_queries = cost.shape[0]
    best = math.inf
    if len(cols) <= n_queries:
        for rows in itertools.permutations(range(n_queries), len(cols)):
            best = min(best, sum(cost[r, c] for r, c in zip(rows, cols)))
    else:  # more objects than queries: every query takes one, some objects stay unmatched
        for chosen in itertools.permutations(cols, n_queries):
            best = min(best, sum(cost[r, c] for r, c in enumerate(chosen)))
    return best


@pytest.mark.parametrize("n_queries", [3, 5])
def test_hungarian_is_optimal_against_brute_force(n_queries):
    gen = torch.Generator().manual_seed(n_queries)
    n_jets, n_slots = 40, 6  # 6 slots > 5 queries: some jets have more objects than queries
    cost = torch.rand(n_jets, n_queries, n_slots, generator=gen)
    real = torch.rand(n_jets, n_slots, generator=gen) < 0.4
    real[0] = False  # a jet without objects
    real[1] = True  # a jet with more objects than queries
    real[2, ::2] = True  # holes between the real slots
    # both ways of solving: one object (argmin) and several (linear_sum_assignment)
    assert (real.sum(1) == 1).any() and (real.sum(1) > 2).any()
    match = hungarian(cost, real)

    for b in range(n_jets):
        cols = torch.nonzero(real[b]).flatten().numpy()
        picked = match[b]
        assert (picked[~real[b]] == -1).all()  # non-objects are never matched
        used = picked[picked >= 0]
        assert len(used) == min(len(cols), n_queries)
        assert len(set(used.tolist())) == len(used)  # one to one
        total = sum(float(cost[b, q, k]) for k, q in enumerate(picked.tolist()) if q >= 0)
        assert total == pytest.approx(brute_force_best(cost[b].numpy(), cols), abs=1e-6)


def test_jets_without_objects_need_no_solving_and_stay_null():
    cost = torch.rand(3, 4, 2)
    real = torch.zeros(3, 2, dtype=torch.bool)
    assert (hungarian(cost, real) == -1).all()


def test_non_finite_costs_do_not_crash_the_matcher():
    cost = torch.rand(2, 3, 2)
    cost[0, 0, 0] = float("nan")
    cost[1, :, 1] = float("inf")
    real = torch.ones(2, 2, dtype=torch.bool)
    match = hungarian(cost, real)
    assert (match >= 0).all()
    assert match[0, 0] != 0  # a NaN cost is the worst choice


def test_query_targets_inverts_the_matching():
    match = torch.tensor([[2, -1, 0], [-1, -1, -1], [1, 3, -1]])
    assert query_targets(match, 4).tolist() == [
        [2, -1, 0, -1],
        [-1, -1, -1, -1],
        [-1, 0, -1, 1],
    ]


def test_match_cost_terms_equal_direct_computation():
    gen = torch.Generator().manual_seed(3)
    n_jets, n_q, n_k, length = 3, 4, 2, 6
    logits = torch.randn(n_jets, n_q, 3, generator=gen)
    masks = torch.randn(n_jets, n_q, length, generator=gen) * 3
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]]).bool()
    true_class = torch.tensor([[0, 1], [1, 2], [0, 0]])
    true_masks = torch.rand(n_jets, n_k, length, generator=gen) < 0.5
    weights = {"object_class_ce": 2.0, "mask_ce": 10.0, "mask_dice": 3.0, "mask_focal": 0.5}
    cost = match_cost(logits, masks, valid, true_class, true_masks, weights)

    probs = logits.softmax(-1)
    for b, q, k in itertools.product(range(n_jets), range(n_q), range(n_k)):
        if true_class[b, k] == 2:
            continue  # a null slot: its column is never read
        v = valid[b]
        x, t = masks[b, q][v], true_masks[b, k][v].float()
        bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p = x.sigmoid()
        focal = bce * (1 - (p * t + (1 - p) * (1 - t))) ** 2
        dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
        expected = (
            -2.0 * probs[b, q, true_class[b, k]]
            + 10.0 * bce.mean()
            + 3.0 * dice
            + 0.5 * focal.mean()
        )
        assert float(cost[b, q, k]) == pytest.approx(float(expected), rel=1e-5, abs=1e-5)


def test_padded_track_slots_do_not_change_the_cost():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 3, 3, generator=gen)
    masks = torch.randn(1, 3, 4, generator=gen)
    true_masks = torch.tensor([[[1, 0, 1, 0], [0, 1, 0, 0]]]).bool()
    true_class = torch.tensor([[0, 1]])
    weights = {"object_class_ce": 1.0, "mask_ce": 1.0, "mask_dice": 1.0}
    short = match_cost(logits, masks, torch.ones(1, 4).bool(), true_class, true_masks, weights)
    # the same jet padded to 7 slots, with garbage logits in the padding
    padded_masks = torch.cat([masks, torch.randn(1, 3, 3, generator=gen) * 50], -1)
    padded_true = torch.cat([true_masks, torch.zeros(1, 2, 3, dtype=torch.bool)], -1)
    valid = torch.arange(7)[None] < 4
    long = match_cost(logits, padded_masks, valid, true_class, padded_true, weights)
    torch.testing.assert_close(short, long)


def test_regression_cost_skips_unknown_properties():
    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    target = torch.tensor([[[1.5, float("nan")], [float("nan"), float("nan")]]])
    cost = regression_cost(pred, target)
    assert cost[0, 0, 0] == pytest.approx(0.5)  # only the known property counts
    assert cost[0, 1, 0] == pytest.approx(1.5)
    assert cost[0, 0, 1] == 0  # nothing known: no cost
