"""data.selections: constituents failing a cut become padding, before packing.

Every batch is compared with a plain h5py + numpy reading of the same rows with the cuts applied
by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_data_loading import (
    LABELS,
    VARIABLES,
    assert_batch_equal,
    assert_batches_equal,
    expected_batch,
    make_dataset,
    make_module,
    read_file,
    write_upp,
)

from salt.errors import SaltError

# numberOfSCTHits and IP3D_signed_z0_significance are cut on but are not inputs
CUTS = ["d0 < 0.5", "numberOfSCTHits > 5", "IP3D_signed_z0_significance >= -3"]


@pytest.fixture(scope="module")
def content(demo) -> tuple[np.ndarray, np.ndarray]:
    return read_file(demo["train"])


def cut_by_hand(tracks: np.ndarray) -> np.ndarray:
    """The tracks with those failing CUTS turned into padding (valid False)."""
    tracks = tracks.copy()
    passing = (
        (tracks["d0"] < 0.5)
        & (tracks["numberOfSCTHits"] > 5)
        & (tracks["IP3D_signed_z0_significance"] >= -3)
    )
    tracks["valid"] &= passing
    return tracks


def test_assumptions_of_these_tests(content):
    assert "IP3D_signed_z0_significance" not in VARIABLES["tracks"]
    valid = content[1]["valid"]
    dropped = valid & ~cut_by_hand(content[1])["valid"]
    assert 0.05 < dropped.sum() / valid.sum() < 0.6, "the cuts must drop some tracks, not all"


@pytest.mark.parametrize("index", [0, 3, 8])
def test_selected_batches_equal_the_cut_file(demo, content, index):
    dataset = make_dataset(demo["train"], selections={"tracks": CUTS})
    start, stop = dataset.rows(index)
    jets, tracks = content[0], cut_by_hand(content[1])
    batch = dataset[index]
    assert_batch_equal(batch, expected_batch(jets, tracks, start, stop))
    # the valid mask keeps holes where tracks were cut out
    valid = batch["valid"]["tracks"].numpy()
    assert (valid[:, 1:] & ~valid[:, :-1]).any()


def test_selection_with_truncated_slots(demo, content):
    dataset = make_dataset(
        demo["train"], selections={"tracks": CUTS}, num_constituents={"tracks": 15}
    )
    tracks = cut_by_hand(content[1])
    assert_batch_equal(dataset[2], expected_batch(content[0], tracks, 1400, 2100, slots=15))


def test_null_selection_and_null_cuts_change_nothing(demo):
    plain = make_dataset(demo["train"])
    for selections in (None, {}, {"tracks": None}):
        dataset = make_dataset(demo["train"], selections=selections)
        assert_batches_equal([dataset[1]], [plain[1]])


def test_selection_of_a_labels_only_constituent(demo, content):
    # DL1-like: tracks carry only a label; the cut still decides which tracks are real
    dataset = make_dataset(
        demo["train"],
        variables={"jets": VARIABLES["jets"]},
        labels={"tracks": ["ftagTruthOriginLabel"]},
        selections={"tracks": CUTS},
    )
    tracks = cut_by_hand(content[1])[:700]
    batch = dataset[0]
    np.testing.assert_array_equal(batch["valid"]["tracks"], tracks["valid"])
    np.testing.assert_array_equal(
        batch["labels"]["tracks"]["ftagTruthOriginLabel"],
        tracks["ftagTruthOriginLabel"][tracks["valid"]],
    )


def test_several_constituent_types_with_their_own_selections(content, tmp_path):
    jets, tracks = content[0][:2000], content[1][:2000]
    # a second constituent type with its own slots and fields, holes and all
    flows = np.zeros((2000, 12), [("a", "<f4"), ("b", "|u1"), ("valid", "|b1"), ("t", "<i4")])
    rng = np.random.default_rng(5)
    flows["a"] = rng.normal(size=flows.shape)
    flows["b"] = rng.integers(0, 10, flows.shape)
    flows["valid"] = rng.random(flows.shape) < 0.6
    flows["t"] = rng.integers(0, 3, flows.shape)
    path = write_upp(tmp_path / "two.h5", {"jets": jets, "tracks": tracks, "flows": flows})
    variables = {**VARIABLES, "flows": ["b", "a"]}
    labels = {**LABELS, "flows": ["t"]}
    dataset = make_dataset(
        path,
        variables=variables,
        labels=labels,
        label_classes={"flows": {"t": 3}},
        selections={"tracks": CUTS, "flows": ["b <= 6", "a notin (0,)"]},
        batch_size=600,
    )
    cut_flows = flows.copy()
    cut_flows["valid"] &= (flows["b"] <= 6) & (flows["a"] != 0)
    cut_tracks = cut_by_hand(tracks)
    for index in range(len(dataset)):
        start, stop = dataset.rows(index)
        batch = dataset[index]
        assert_batch_equal(
            {k: {o: v for o, v in batch[k].items() if o != "flows"} for k in batch},
            expected_batch(jets, cut_tracks, start, stop),
        )
        f = cut_flows[start:stop]
        np.testing.assert_array_equal(batch["valid"]["flows"], f["valid"])
        expected = np.stack([f["b"], f["a"]], -1).astype(np.float32)[f["valid"]]
        np.testing.assert_array_equal(batch["inputs"]["flows"], expected)
        np.testing.assert_array_equal(batch["labels"]["flows"]["t"], f["t"][f["valid"]])


def test_selection_through_the_datamodule_and_workers(demo):
    batches = []
    for workers in (0, 1):
        module = make_module(demo, check_jets=0, num_workers=workers, selections={"tracks": CUTS})
        module.setup("fit")
        loader = module.train_dataloader()
        batches.append(list(loader))
        reference = [module.datasets["train"][int(i)] for i in loader.sampler.order()]
        assert_batches_equal(batches[-1], reference)
        module.teardown("fit")
    assert_batches_equal(batches[0], batches[1])


# ------------------------------------------------------------------------------------ errors
def test_cut_on_a_missing_variable_names_cut_dataset_and_file(demo):
    with pytest.raises(SaltError) as info:
        make_dataset(demo["train"], selections={"tracks": ["d0 < 3.5", "numberOfTRTHoles < 1.1"]})
    message = str(info.value)
    assert "cut 'numberOfTRTHoles < 1.1'" in message and "dataset 'tracks'" in message
    assert str(demo["train"]) in message
    # and from the datamodule's setup, before any batch is read
    module = make_module(demo, selections={"tracks": ["numberOfTRTHoles < 1.1"]})
    with pytest.raises(SaltError, match="numberOfTRTHoles"):
        module.setup("fit")


@pytest.mark.parametrize(
    ("cuts", "expected"),
    [
        (["d0<3.5"], "cannot be parsed"),
        (["d0 ~ 3.5"], "unknown operator '~'"),
        (["d0 < three"], "not a number"),
    ],
)
def test_malformed_cuts_fail_when_the_datamodule_is_built(demo, cuts, expected):
    with pytest.raises(SaltError, match=expected):
        make_module(demo, selections={"tracks": cuts})


def test_selections_on_jets_or_unknown_objects_are_refused(demo):
    with pytest.raises(SaltError, match="jets cannot be dropped from a batch"):
        make_module(demo, selections={"jets": ["pt > 20000"]})
    with pytest.raises(SaltError, match=r"data.selections.trakcs"):
        make_module(demo, selections={"trakcs": ["d0 < 3.5"]})
