"""Vertex-finding efficiency and fake rate on hand-made jets."""

from __future__ import annotations

import math

import numpy as np

from salt.evaluation.vertex_finding import (
    match_found,
    predicted_objects,
    vertex_finding_counts,
    vertex_finding_rates,
)

NAMES = ["b", "c", "null"]


def masks(*rows: str) -> np.ndarray:
    """("110", "001") -> (2, 3) bool."""
    return np.array([[c == "1" for c in row] for row in rows])


def test_predicted_objects_threshold_valid_and_null():
    class_logits = np.array([[[3.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])  # a b object, then a null one
    mask_logits = np.array([[[1.0, -1.0, 2.0], [4.0, 4.0, 4.0]]])
    valid = np.array([[True, True, False]])
    pred_class, pred_masks = predicted_objects(class_logits, mask_logits, valid)
    assert pred_class.tolist() == [[0, 2]]
    # sigmoid > 0.5 on valid tracks only; the null object's mask is emptied
    assert pred_masks.tolist() == [[[True, False, False], [False, False, False]]]
    _, strict = predicted_objects(class_logits, mask_logits, valid, threshold=0.8)
    assert strict[0, 0].tolist() == [False, False, False]  # sigmoid(1) = 0.73


def test_found_needs_half_the_tracks_and_half_purity():
    true = masks("1111000000")[None]  # one true object with 4 tracks
    preds = {
        "all four": ("1111000000", 0),
        "two of four, pure": ("1100000000", 0),
        "one of four": ("1000000000", -1),
        "four plus four others": ("1111111100", 0),  # purity 0.5
        "three plus four others": ("1110111100", -1),  # purity 3/7
        "none": ("0000000000", -1),
    }
    for name, (pred, expected) in preds.items():
        found = match_found(masks(pred)[None], true, np.array([[True]]))
        assert found.tolist() == [[expected]], name


def test_counts_and_rates_per_class():
    # jet 0: a b (tracks 0-2) and a c (tracks 3-4); jet 1: a c (tracks 0-1) and a b owning no
    # track; jet 2: no hadron
    true_class = np.array([[0, 1], [1, 0], [2, 2]])
    true_masks = np.stack(
        [masks("111000", "000110"), masks("110000", "000000"), masks("000000", "000000")]
    )
    # predictions: jet 0 finds the b (2 of 3 tracks), calls the c's tracks 3-5 a b (purity 2/3:
    # found, though with the wrong class); jet 1 misses the c (1 of 2 tracks + 2 others: purity
    # 1/3), jet 2 predicts a fake c
    pred_class = np.array([[0, 0, 2], [1, 2, 2], [1, 2, 2]])
    pred_masks = np.stack(
        [
            masks("110000", "000111", "000000"),
            masks("101100", "000000", "000000"),
            masks("111111", "000000", "000000"),
        ]
    )
    counts = vertex_finding_counts(pred_class, pred_masks, true_class, true_masks, NAMES)
    assert counts == {
        "b_true": 1,  # the b without tracks is not counted
        "b_found": 1,
        "b_pred": 2,
        "b_fake": 0,
        "c_true": 2,
        "c_found": 1,
        "c_pred": 2,
        "c_fake": 2,
    }
    rates = vertex_finding_rates(counts, NAMES)
    assert rates["b_eff"] == 1.0 and rates["c_eff"] == 0.5
    assert rates["b_fake_rate"] == 0.0 and rates["c_fake_rate"] == 1.0
    assert rates["all_eff"] == 2 / 3 and rates["all_fake_rate"] == 0.5

    # requiring the right class: the c called b is no longer found, and that b is a fake
    strict = vertex_finding_counts(
        pred_class, pred_masks, true_class, true_masks, NAMES, same_class=True
    )
    assert strict["c_found"] == 0 and strict["b_fake"] == 1 and strict["b_found"] == 1


def test_one_to_one_when_several_predictions_pass():
    # two predictions both pass for the same true object: one finds it, the other is a fake
    true_class = np.array([[0, 2]])
    true_masks = masks("1111", "0000")[None]
    pred_class = np.array([[0, 0]])
    pred_masks = masks("1110", "1100")[None]
    counts = vertex_finding_counts(pred_class, pred_masks, true_class, true_masks, NAMES)
    assert counts["b_found"] == 1 and counts["b_pred"] == 2 and counts["b_fake"] == 1
    # the one sharing more tracks is chosen
    assert match_found(pred_masks, true_masks, true_class != 2).tolist() == [[0, -1]]


def test_one_to_one_prefers_more_found_objects():
    # prediction 0 passes for both objects (half of its tracks each), prediction 1 only for the
    # first: the assignment that finds both wins over the one with most shared tracks
    true_class = np.array([[0, 1]])
    true_masks = masks("1100", "0011")[None]
    pred_masks = masks("1111", "1100")[None]
    found = match_found(pred_masks, true_masks, true_class != 2)
    assert found.tolist() == [[1, 0]]


def test_rates_without_objects_are_nan_and_counts_add_over_batches():
    empty = vertex_finding_counts(
        np.full((1, 2), 2),
        np.zeros((1, 2, 3), bool),
        np.full((1, 1), 2),
        np.zeros((1, 1, 3), bool),
        NAMES,
    )
    assert all(v == 0 for v in empty.values())
    rates = vertex_finding_rates(empty, NAMES)
    assert all(math.isnan(v) for v in rates.values())

    one = vertex_finding_counts(
        np.array([[0]]), masks("11")[None], np.array([[0]]), masks("11")[None], NAMES
    )
    total = {k: empty[k] + one[k] for k in one}
    assert vertex_finding_rates(total, NAMES)["b_eff"] == 1.0
