"""data.labeller_config: the jets' flavour_label computed from truth with ftag's flavours."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.lib import recfunctions as rfn
from test_data_loading import LABELS, make_dataset, make_module, read_file, write_upp

from salt.data.labeller import LabellerConfig
from salt.errors import SaltError

BTAG = ["bjets", "cjets", "ujets", "taujets"]
TRUTH = {"bjets": 5, "cjets": 4, "ujets": 0, "taujets": 15}


def labeller(class_names, require_labels=True) -> dict:
    return {"use_labeller": True, "class_names": class_names, "require_labels": require_labels}


@pytest.fixture(scope="module")
def content(demo) -> tuple[np.ndarray, np.ndarray]:
    return read_file(demo["train"])


def classes(n: int) -> dict:
    return {"jets": {"flavour_label": n}, "tracks": {"ftagTruthOriginLabel": 8}}


def test_labels_from_truth_equal_what_upp_wrote(demo, content):
    # UPP wrote flavour_label in the order bjets, cjets, ujets, taujets
    dataset = make_dataset(demo["train"], labeller_config=labeller(BTAG), batch_size=6000)
    labels = dataset[0]["labels"]["jets"]["flavour_label"].numpy()
    np.testing.assert_array_equal(labels, content[0]["flavour_label"])
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_class_order_is_the_order_of_class_names(demo, content):
    names = ["taujets", "ujets", "bjets", "cjets"]
    config = LabellerConfig(use_labeller=True, class_names=names)
    dataset = make_dataset(demo["train"], labeller_config=config)
    truth = content[0]["HadronConeExclTruthLabelID"][700:1400]
    expected = np.select([truth == TRUTH[n] for n in names], range(4), -1)
    np.testing.assert_array_equal(dataset[1]["labels"]["jets"]["flavour_label"], expected)


def test_file_without_flavour_label(demo, content, tmp_path):
    # a test file that never went through UPP: the label is made, not read
    jets = rfn.drop_fields(content[0][:1000], "flavour_label", usemask=False)
    path = write_upp(tmp_path / "raw.h5", {"jets": jets, "tracks": content[1][:1000]})
    with pytest.raises(SaltError, match="no variable 'flavour_label'"):
        make_dataset(path)
    dataset = make_dataset(path, labeller_config=labeller(BTAG), batch_size=1000)
    labels = dataset[0]["labels"]["jets"]["flavour_label"].numpy()
    np.testing.assert_array_equal(labels, content[0]["flavour_label"][:1000])


def test_unlabelled_jets_are_an_error_or_ignored(demo, content):
    two = ["bjets", "cjets"]
    with pytest.raises(SaltError) as info:
        make_dataset(demo["train"], labeller_config=labeller(two), label_classes=classes(2))[0]
    first = int(np.flatnonzero(~np.isin(content[0]["HadronConeExclTruthLabelID"], (4, 5)))[0])
    message = str(info.value)
    assert f"jet {first} passes the cuts of none of the classes bjets, cjets" in message
    assert str(demo["train"]) in message and "require_labels: false" in message

    dataset = make_dataset(
        demo["train"], labeller_config=labeller(two, False), label_classes=classes(2)
    )
    with pytest.warns(UserWarning, match="label -1") as caught:
        batches = [dataset[i] for i in range(3)]
    assert len(caught) == 1, "warned once"
    truth = content[0]["HadronConeExclTruthLabelID"][:2100]
    expected = np.select([truth == 5, truth == 4], [0, 1], -1)
    got = np.concatenate([b["labels"]["jets"]["flavour_label"].numpy() for b in batches])
    np.testing.assert_array_equal(got, expected)
    assert (got == -1).sum() > 100


def test_xbb_classes_on_the_fly(content, tmp_path):
    # large-R jets: qcd split by its ghost hadron counts, as in salt-ml's docs
    rng = np.random.default_rng(2)
    n = 1200
    jets = np.zeros(
        n,
        [
            ("pt", "<f4"),
            ("R10TruthLabel_R22v1", "<i4"),
            ("GhostBHadronsFinalCount", "<i4"),
            ("GhostCHadronsFinalCount", "<i4"),
        ],
    )
    jets["pt"] = rng.uniform(250e3, 1e6, n)
    jets["R10TruthLabel_R22v1"] = rng.choice([11, 12, 1, 6, 7, 10], n)
    jets["GhostBHadronsFinalCount"] = rng.integers(0, 3, n)
    jets["GhostCHadronsFinalCount"] = rng.integers(0, 2, n)
    path = write_upp(tmp_path / "xbb.h5", {"jets": jets, "tracks": content[1][:n]})
    names = ["hbb", "hcc", "top", "qcdbb", "qcdbx", "qcdcx", "qcdll"]
    dataset = make_dataset(
        path,
        variables={"jets": ["pt"]},
        labels={"jets": ["flavour_label"]},
        label_classes={"jets": {"flavour_label": 7}},
        labeller_config=labeller(names),
        batch_size=n,
    )
    r10, nb, nc = (jets[k] for k in jets.dtype.names[1:])
    qcd = r10 == 10
    expected = np.select(
        [
            r10 == 11,
            r10 == 12,
            np.isin(r10, (1, 6, 7)),
            qcd & (nb >= 2),
            qcd & (nb == 1),
            qcd & (nb == 0) & (nc >= 1),
            qcd & (nb == 0) & (nc == 0),
        ],
        range(7),
        -1,
    )
    assert (expected >= 0).all()
    np.testing.assert_array_equal(dataset[0]["labels"]["jets"]["flavour_label"], expected)


def test_overlapping_classes_are_an_error(content, tmp_path):
    jets = np.zeros(
        300, [("pt", "<f4"), ("R10TruthLabel_R22v1", "<i4"), ("GhostBHadronsFinalCount", "<i4")]
    )
    jets["R10TruthLabel_R22v1"] = 11
    jets["R10TruthLabel_R22v1"][150] = 10
    jets["GhostBHadronsFinalCount"][150] = 2
    path = write_upp(tmp_path / "overlap.h5", {"jets": jets, "tracks": content[1][:300]})
    dataset = make_dataset(
        path,
        variables={"jets": ["pt"]},
        labels={"jets": ["flavour_label"]},
        label_classes={},
        labeller_config=labeller(["hbb", "qcd", "qcdbb"]),
    )
    with pytest.raises(SaltError, match=r"jet 150 belongs to the classes qcd and qcdbb"):
        dataset[0]


# ------------------------------------------------------------------------------------ errors
def test_unknown_class_fails_when_the_datamodule_is_built(demo):
    with pytest.raises(SaltError, match=r"'bjet' is not a flavour.*Did you mean: bjets"):
        make_module(demo, labeller_config=labeller(["bjet", "cjets"]))


def test_class_whose_truth_variables_the_file_lacks(demo):
    with pytest.raises(SaltError) as info:
        make_dataset(
            demo["train"], labeller_config=labeller(["hbb", "top"]), label_classes=classes(2)
        )
    message = str(info.value)
    assert "class 'hbb'" in message and "R10TruthLabel_R22v1" in message
    assert str(demo["train"]) in message


def test_labeller_needs_a_jet_flavour_label_task(demo):
    with pytest.raises(SaltError, match=r"no task uses jets\.flavour_label.*works for jets"):
        make_module(demo, labels={"tracks": LABELS["tracks"]}, labeller_config=labeller(BTAG))
    with pytest.raises(SaltError, match=r"has 4 classes but the task .* has 3"):
        make_module(demo, labeller_config=labeller(BTAG), label_classes=classes(3))
    with pytest.raises(SaltError, match="class_names is empty"):
        make_module(demo, labeller_config=labeller([]))


def test_turned_off_reads_the_file(demo, content):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = make_dataset(
            demo["train"], labeller_config={"use_labeller": False, "class_names": ["hbb"]}
        )
        labels = dataset[0]["labels"]["jets"]["flavour_label"].numpy()
    np.testing.assert_array_equal(labels, content[0]["flavour_label"][:700])
