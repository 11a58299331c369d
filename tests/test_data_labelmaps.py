"""data.label_maps: raw integer labels mapped to class indices; unmapped values pass through."""

from __future__ import annotations

import numpy as np
import pytest
from test_data_loading import LABELS, make_dataset, make_module, read_file

from salt.data.labelmaps import LabelMap
from salt.errors import SaltError

TRUTH_MAP = {5: 0, 4: 1, 0: 2, 15: 3}  # HadronConeExclTruthLabelID -> b, c, u, tau


@pytest.fixture(scope="module")
def content(demo) -> tuple[np.ndarray, np.ndarray]:
    return read_file(demo["train"])


def truth_dataset(path, label_map, n_classes=4, **kwargs):
    return make_dataset(
        path,
        labels={"jets": ["HadronConeExclTruthLabelID"], "tracks": LABELS["tracks"]},
        label_classes={
            "jets": {"HadronConeExclTruthLabelID": n_classes},
            "tracks": {"ftagTruthOriginLabel": 8},
        },
        label_maps={"jets": {"HadronConeExclTruthLabelID": label_map}},
        **kwargs,
    )


def test_truth_ids_mapped_to_the_upp_classes(demo, content):
    dataset = truth_dataset(demo["train"], TRUTH_MAP, batch_size=6000)
    labels = dataset[0]["labels"]["jets"]["HadronConeExclTruthLabelID"].numpy()
    np.testing.assert_array_equal(labels, content[0]["flavour_label"])


def test_unmapped_values_pass_through(demo, content):
    # a map of only the values to renumber, as GN3's track-type map is
    label_map = {2: 0, 3: 1, 0: 2, 1: 3}
    dataset = make_dataset(
        demo["train"],
        labels={"tracks": ["ftagTruthTypeLabel"]},
        label_classes={"tracks": {"ftagTruthTypeLabel": 6}},
        label_maps={"tracks": {"ftagTruthTypeLabel": label_map}},
    )
    tracks = content[1][700:1400]
    raw = tracks["ftagTruthTypeLabel"][tracks["valid"]]
    expected = np.array([label_map.get(int(v), int(v)) for v in raw])
    got = dataset[1]["labels"]["tracks"]["ftagTruthTypeLabel"].numpy()
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(raw)) > set(label_map), "the test needs unmapped values (4, 5)"


def test_label_map_on_arrays_and_string_keys():
    # YAML written by hand may quote the keys
    label_map = LabelMap({"-11": 0, "11": 0, "13": 1, "-13": 1, "211": 2}, "test")
    values = np.array([211, -11, 13, 7, -13, 11, 999, -999, 212])
    np.testing.assert_array_equal(label_map(values), [2, 0, 1, 7, 1, 0, 999, -999, 212])
    assert 13 in label_map and 7 not in label_map


def test_value_missing_from_the_map_names_field_value_jet_and_file(demo, content):
    without_tau = {5: 0, 4: 1, 0: 2}
    dataset = truth_dataset(demo["train"], without_tau, n_classes=3, batch_size=6000)
    with pytest.raises(SaltError) as info:
        dataset[0]
    jet = int(np.flatnonzero(content[0]["HadronConeExclTruthLabelID"] == 15)[0])
    message = str(info.value)
    assert f"label 'HadronConeExclTruthLabelID' of dataset 'jets' is 15 for jet {jet}" in message
    assert "missing from the task's label_map" in message and "add it to label_map" in message
    assert str(demo["train"]) in message


def test_bad_label_maps(demo):
    with pytest.raises(SaltError, match="integer labels"):
        make_dataset(
            demo["train"],
            labels={"jets": ["HadronConeExclTruthLabelPt", "flavour_label"]},
            label_maps={"jets": {"HadronConeExclTruthLabelPt": {1: 0}}},
        )
    with pytest.raises(SaltError, match=r"no task reads label 'n_tracks' of 'jets'"):
        make_module(demo, label_maps={"jets": {"n_tracks": {1: 0}}})
    with pytest.raises(SaltError, match="should map integer raw values"):
        make_module(demo, label_maps={"jets": {"flavour_label": {"b": 0}}})
