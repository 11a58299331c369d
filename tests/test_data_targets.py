"""data.multi_target: regression targets swapped or built by a condition on another label."""

from __future__ import annotations

import numpy as np
import pytest
from test_data_loading import make_dataset, make_module, read_file

from salt.data.targets import MultiTarget
from salt.errors import SaltError

TAU = {"input_name": "jets", "sel_label": "HadronConeExclTruthLabelID", "value": 15}
# salt-ml's regression_multi_target.yaml: truth pT for tau jets, the jet pT for the others
HANDLE = [
    {
        **TAU,
        "opp": "==",
        "custom_target": "pt_label_handle",
        "source": "HadronConeExclTruthLabelPt",
    },
    {**TAU, "opp": "!=", "custom_target": "pt_label_handle", "source": "pt"},
]


@pytest.fixture(scope="module")
def content(demo) -> tuple[np.ndarray, np.ndarray]:
    return read_file(demo["train"])


def regression(path, labels, multi_target, batch_size=6000):
    return make_dataset(
        path, labels={"jets": labels}, label_classes={}, multi_target=multi_target,
        batch_size=batch_size,
    )  # fmt: skip


def test_custom_target_filled_by_two_conditions(demo, content):
    dataset = regression(demo["train"], ["pt_label_handle"], HANDLE)
    got = dataset[0]["labels"]["jets"]["pt_label_handle"].numpy()
    jets = content[0]
    tau = jets["HadronConeExclTruthLabelID"] == 15
    assert 0 < tau.sum() < len(jets)
    expected = np.where(tau, jets["HadronConeExclTruthLabelPt"], jets["pt"]).astype(np.float32)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32


def test_custom_target_is_nan_where_no_entry_holds(demo, content):
    dataset = regression(demo["train"], ["pt_label_handle", "pt"], HANDLE[:1])
    labels = dataset[0]["labels"]["jets"]
    assert list(labels) == ["pt_label_handle", "pt"]
    got = labels["pt_label_handle"].numpy()
    tau = content[0]["HadronConeExclTruthLabelID"] == 15
    np.testing.assert_array_equal(got[tau], content[0]["HadronConeExclTruthLabelPt"][tau])
    assert np.isnan(got[~tau]).all()
    np.testing.assert_array_equal(labels["pt"], content[0]["pt"])


def test_target_replaced_in_order(demo, content):
    entries = [
        {**TAU, "opp": "==", "target": "pt_btagJes", "source": "pt"},
        # a later entry wins where both hold
        MultiTarget("jets", "HadronConeExclTruthLabelLxy", ">", 2.0, "mass", target="pt_btagJes"),
    ]
    dataset = regression(demo["train"], ["pt_btagJes"], entries)
    jets = content[0]
    expected = jets["pt_btagJes"].copy()
    expected = np.where(jets["HadronConeExclTruthLabelID"] == 15, jets["pt"], expected)
    late = jets["HadronConeExclTruthLabelLxy"] > 2.0
    assert late.any() and (late & (jets["HadronConeExclTruthLabelID"] == 15)).any()
    expected = np.where(late, jets["mass"], expected)
    np.testing.assert_array_equal(dataset[0]["labels"]["jets"]["pt_btagJes"], expected)


def test_constituent_targets_on_packed_tracks(demo, content):
    entry = {
        "input_name": "tracks",
        "sel_label": "ftagTruthOriginLabel",
        "opp": ">=",
        "value": 3,
        "custom_target": "d0_if_heavy",
        "source": "d0",
    }
    dataset = make_dataset(
        demo["train"],
        labels={"tracks": ["d0_if_heavy", "ftagTruthOriginLabel"]},
        multi_target=[entry],
    )
    tracks = content[1][:700]
    valid = tracks[tracks["valid"]]
    expected = np.where(valid["ftagTruthOriginLabel"] >= 3, valid["d0"], np.nan)
    got = dataset[0]["labels"]["tracks"]["d0_if_heavy"].numpy()
    np.testing.assert_array_equal(got, expected.astype(np.float32))


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"target": "pt"}, "exactly one of target .* it has both"),
        ({"custom_target": None}, "it has neither"),
        ({"opp": "=>"}, "opp '=>' is unknown"),
        ({"valeu": 3}, r"unknown keys \['valeu'\].*Did you mean: value"),
        ({"value": "tau"}, "value 'tau' is not a number"),
    ],
)
def test_malformed_entries_fail_when_the_datamodule_is_built(demo, change, expected):
    entry = {**HANDLE[0], **change}
    with pytest.raises(SaltError, match=expected):
        make_module(demo, labels={"jets": ["pt_label_handle"]}, multi_target=[entry])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"source": "pt_visFromTruthTaus"}, "source 'pt_visFromTruthTaus' is not a variable"),
        (
            {"sel_label": "HadronGhostExtendedTruthLabelID"},
            "sel_label 'HadronGhostExtendedTruthLabelID'",
        ),
        ({"custom_target": None, "target": "n_tracks"}, "'n_tracks' .* is an integer label"),
    ],
)
def test_entries_the_file_cannot_serve(demo, change, expected):
    entry = {**HANDLE[0], **change}
    label = entry.get("custom_target") or entry["target"]
    with pytest.raises(SaltError, match=expected) as info:
        regression(demo["train"], [label], [entry])
    assert str(demo["train"]) in str(info.value)


def test_entries_must_write_a_label_that_a_task_uses(demo):
    with pytest.raises(SaltError, match=r"writes jets\.pt_label_handle, but no task uses"):
        make_module(demo, multi_target=HANDLE)
    with pytest.raises(SaltError, match="input_name 'muons' is not an object"):
        make_module(demo, multi_target=[{**HANDLE[0], "input_name": "muons"}])
