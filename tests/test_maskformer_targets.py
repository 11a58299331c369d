"""Truth objects and their track masks from the file's labels."""

from __future__ import annotations

import pytest
import torch

from salt.errors import SaltError
from salt.models.layout import Packed
from salt.models.object_targets import ObjectClasses, build_object_targets

UPSTREAM_CLASSES = {
    "b": {"raw": 5, "mapped": 0},
    "c": {"raw": 4, "mapped": 1},
    "null": {"raw": -1, "mapped": 2},
}


def test_object_classes_from_config():
    # given out of order: the mapped index decides, the null class is the last one
    classes = ObjectClasses.from_config(
        {"null": {"raw": -1, "mapped": 2}, "c": {"raw": 4, "mapped": 1}, "b": UPSTREAM_CLASSES["b"]}
    )
    assert classes.names == ("b", "c", "null")
    assert classes.num_classes == 2 and classes.null_index == 2
    assert classes.map_raw(torch.tensor([[5, 4], [-1, 5]])).tolist() == [[0, 1], [2, 0]]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"b": {"raw": 5, "mapped": 0}}, "at least one object class and the null class"),
        ({"b": {"raw": 5, "mapped": 0}, "null": {"raw": -1, "mapped": 2}}, "mapped values"),
        ({"b": {"raw": 5, "mapped": 0}, "null": {"raw": 5, "mapped": 1}}, "share a raw label"),
        ({"b": {"raw": 5}, "null": {"raw": -1, "mapped": 1}}, "expected {raw"),
    ],
)
def test_object_classes_errors(config, message):
    with pytest.raises(SaltError, match=message):
        ObjectClasses.from_config(config)


def test_targets_masks_classes_and_documented_cases():
    classes = ObjectClasses.from_config(UPSTREAM_CLASSES)
    # jet 0: 4 tracks; jet 1: no tracks; jet 2: 3 tracks, in slots with a hole
    valid = torch.tensor([[1, 1, 1, 1, 0], [0, 0, 0, 0, 0], [1, 0, 1, 1, 0]], dtype=torch.bool)
    layout = Packed(valid)
    ids = torch.tensor([[11, 12, -1], [21, -1, -1], [31, 32, 33]])
    raw = torch.tensor([[5, 4, -1], [5, -1, -1], [4, -1, 5]])
    # jet 0: tracks from 11, 12, 11 and one primary (parent -1); jet 2: a track whose parent (99)
    # is no listed object, one from 33, one from 31
    parents = torch.tensor([11, 12, 11, -1, 99, 33, 31])
    targets = build_object_targets(ids, raw, parents, layout, classes)

    assert targets.object_class.tolist() == [[0, 1, 2], [0, 2, 2], [1, 2, 0]]
    masks = targets.masks
    assert masks.shape == (7, 3)
    assert masks[:4].tolist() == [
        [True, False, False],
        [False, True, False],
        [True, False, False],
        [False, False, False],  # parent -1: belongs to no object (the -1 slot is no object)
    ]
    assert masks[4].tolist() == [False, False, False]  # parent 99 matches no object
    assert masks[5].tolist() == [False, False, True]
    assert masks[6].tolist() == [True, False, False]
    # the object of the jet without tracks is kept, with an empty mask
    assert targets.object_class[1, 0] == 0
    # slot 1 of jet 2 has id 32 but the null class: not an object, its column stays empty
    assert not masks[:, 1][layout.batch == 2].any()


def test_valid_field_and_negative_ids():
    classes = ObjectClasses.from_config(UPSTREAM_CLASSES)
    layout = Packed(torch.ones(1, 3, dtype=torch.bool))
    ids = torch.tensor([[-1, 7, 8]])
    raw = torch.tensor([[5, 5, 123]])  # 123: no class, but its slot is not valid
    object_valid = torch.tensor([[True, True, False]])
    parents = torch.tensor([-1, 7, 8])
    targets = build_object_targets(ids, raw, parents, layout, classes, object_valid)
    assert targets.object_class.tolist() == [[0, 0, 2]]
    # a negative object id matches no track, not even a track whose parent id is -1
    assert targets.masks.tolist() == [[False, False, False], [False, True, False], [False] * 3]


def test_unknown_object_class_is_an_error_naming_it():
    classes = ObjectClasses.from_config(UPSTREAM_CLASSES)
    layout = Packed(torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(SaltError, match=r"truth_hadrons.flavour.*\[15\].*object_classes"):
        build_object_targets(
            torch.tensor([[1, 2]]),
            torch.tensor([[5, 15]]),
            torch.tensor([1, 2]),
            layout,
            classes,
            where="file f.h5, truth_hadrons.flavour",
        )


def test_parent_ids_must_match_the_tracks():
    classes = ObjectClasses.from_config(UPSTREAM_CLASSES)
    layout = Packed(torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(SaltError, match="2 track parent ids for 3 valid tracks"):
        build_object_targets(
            torch.tensor([[1]]), torch.tensor([[5]]), torch.tensor([1, 1]), layout, classes
        )
