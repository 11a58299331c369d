"""Truth objects for MaskFormer (`data.mf_config`): padded object labels, the constituents' parent
ids packed with their labels, and the errors that stop a run before training.

The files are the demo jets and tracks plus what a MaskFormer file adds: `truth_hadrons` (K = 5
slots: barcode, flavour, pt, Lxy, deta, dphi, mass, valid) and the tracks' parent barcode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from jsonargparse import Namespace
from test_data_loading import LABELS, VARIABLES, make_dataset, make_module, read_file, write_upp

from salt.data.objects import ObjectConfig
from salt.data.options import ReadOptions
from salt.errors import SaltError
from tests.conftest import DEMO_MF_CONFIG as MF_CONFIG

FLAVOURS = {"jets": {"flavour_label": ["bjets", "cjets", "ujets", "taujets"]}}
TARGETS = ["pt", "Lxy", "deta", "dphi", "mass"]
HADRON = np.dtype(
    [("barcode", "<i4"), ("flavour", "<i4"), ("pt", "<f4"), ("Lxy", "<f4"), ("deta", "<f4"),
     ("dphi", "<f4"), ("mass", "<f4"), ("valid", "|b1")]
)  # fmt: skip


def with_field(records: np.ndarray, name: str, values: np.ndarray) -> np.ndarray:
    """`records` with the field `name` set to `values` (replaced when the demo writes it)."""
    kept = [n for n in records.dtype.names if n != name]
    dtype = np.dtype([*((n, records.dtype[n]) for n in kept), (name, values.dtype)])
    out = np.empty(records.shape, dtype)
    for field in kept:
        out[field] = records[field]
    out[name] = values
    return out


def make_objects(jets: np.ndarray, tracks: np.ndarray, seed: int = 0):
    """Hadrons per jet (b jets a B and its C, c jets a C) and the tracks' parent barcodes."""
    rng = np.random.default_rng(seed)
    n = len(jets)
    hadrons = np.zeros((n, 5), HADRON)
    hadrons["barcode"] = hadrons["flavour"] = -1
    for field in TARGETS:
        # padding holds garbage here (UPP writes NaN): the loader must blank it
        hadrons[field] = rng.normal(size=(n, 5))
    truth = jets["HadronConeExclTruthLabelID"]
    count = np.where(truth == 5, 2, np.where(truth == 4, 1, 0))
    slot = np.arange(5)[None, :]
    real = slot < count[:, None]
    hadrons["valid"] = real
    hadrons["barcode"] = np.where(real, 10_000 + 10 * np.arange(n)[:, None] + slot, -1)
    first = np.where(truth == 5, 5, 4)[:, None]
    hadrons["flavour"] = np.where(real, np.where(slot == 0, first, 4), -1)
    # each valid track: from one of its jet's hadrons (or none, -1)
    pick = rng.integers(-1, 2, size=tracks.shape)
    own = np.take_along_axis(hadrons["barcode"], np.clip(pick, 0, 4), axis=1)
    parent = np.where(tracks["valid"] & (pick >= 0) & (pick < count[:, None]), own, -1)
    return hadrons, with_field(tracks, "ftagTruthParentBarcode", parent.astype("<i4"))


@pytest.fixture(scope="module")
def content(demo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    jets, tracks = read_file(demo["train"])
    jets, tracks = jets[:1500], tracks[:1500]
    hadrons, tracks = make_objects(jets, tracks)
    return jets, tracks, hadrons


@pytest.fixture(scope="module")
def mf_file(content, tmp_path_factory) -> Path:
    jets, tracks, hadrons = content
    folder = tmp_path_factory.mktemp("mf")
    datasets = {"jets": jets, "tracks": tracks, "truth_hadrons": hadrons}
    return write_upp(folder / "mf.h5", datasets, FLAVOURS)


def labels_with(objects: list[str]) -> dict[str, list[str]]:
    return {**LABELS, "objects": objects}


def crafted(tmp_path: Path, content, edit) -> Path:
    jets, tracks, hadrons = (a.copy() for a in content)
    datasets = edit({"jets": jets, "tracks": tracks, "truth_hadrons": hadrons})
    return write_upp(tmp_path / "crafted.h5", datasets, FLAVOURS)


def error_of(path: Path, **kwargs) -> str:
    with pytest.raises(SaltError) as info:
        args = {"labels": labels_with(TARGETS), "mf_config": MF_CONFIG, "batch_size": 500}
        dataset = make_dataset(path, **{**args, **kwargs})
        for index in range(len(dataset)):
            dataset[index]
    return str(info.value)


# ------------------------------------------------------------------------------------ batches
def test_object_labels_are_padded_per_jet_and_match_the_file(content, mf_file):
    _, tracks, hadrons = content
    dataset = make_dataset(mf_file, labels=labels_with(TARGETS), mf_config=MF_CONFIG)
    assert dataset.dataset_name("objects") == "truth_hadrons"
    for index in (0, 2):  # batches of 700: 0..700 and the last, 1400..1500
        start, stop = dataset.rows(index)
        batch = dataset[index]
        objects = batch["labels"]["objects"]
        assert list(objects) == [*TARGETS, "barcode", "flavour", "valid"]
        expected = hadrons[start:stop]
        valid = expected["valid"]
        assert objects["valid"].dtype == torch.bool and objects["valid"].shape == (stop - start, 5)
        np.testing.assert_array_equal(objects["valid"], valid)
        for field in ("barcode", "flavour"):
            assert objects[field].dtype == torch.int64
            np.testing.assert_array_equal(objects[field], expected[field])
        for field in TARGETS:
            assert objects[field].dtype == torch.float32
            np.testing.assert_array_equal(objects[field].numpy()[valid], expected[field][valid])
            assert torch.isnan(objects[field][~torch.from_numpy(valid)]).all()
        # the parent barcodes travel packed with the other track labels
        track_valid = tracks["valid"][start:stop]
        packed = batch["labels"]["tracks"]
        assert list(packed) == [*LABELS["tracks"], "ftagTruthParentBarcode"]
        parents = tracks["ftagTruthParentBarcode"][start:stop][track_valid]
        np.testing.assert_array_equal(packed["ftagTruthParentBarcode"], parents)
        assert len(packed["ftagTruthParentBarcode"]) == len(batch["inputs"]["tracks"])
        # every parent id that is not -1 is a barcode of the same jet's objects
        jet_of = np.repeat(np.arange(stop - start), track_valid.sum(1))
        some = parents >= 0
        owners = expected["barcode"][jet_of[some]]
        assert (owners == parents[some, None]).any(1).all()


def test_objects_need_no_task_and_are_not_inputs(content, mf_file):
    # no task on the objects: the MaskFormer's matching alone needs ids, classes and valid
    dataset = make_dataset(mf_file, mf_config=MF_CONFIG)
    objects = dataset[1]["labels"]["objects"]
    assert list(objects) == ["barcode", "flavour", "valid"]
    assert "objects" not in dataset[1]["inputs"] and "objects" not in dataset[1]["valid"]
    assert "objects" not in dataset.num_slots  # not packed


def test_objects_through_the_datamodule_with_and_without_workers(demo, mf_file):
    batches = []
    for workers in (0, 2):
        module = make_module(
            demo,
            train_file=str(mf_file),
            val_file=str(mf_file),
            labels=labels_with(["pt"]),
            mf_config=MF_CONFIG,
            num_workers=workers,
        )
        module.setup("fit")  # the preflight reads every object label of the first jets
        loader = module.train_dataloader()
        loader.sampler.set_epoch(2)
        batches.append(list(loader))
        module.teardown("fit")
    assert len(batches[0]) == 3
    for a, b in zip(*batches):
        assert list(a["labels"]["objects"]) == ["pt", "barcode", "flavour", "valid"]
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_mf_config_as_a_parsed_namespace(mf_file):
    # what jsonargparse hands over for a YAML mapping under data.mf_config
    namespace = Namespace(
        object=Namespace(**{**MF_CONFIG["object"], "object_classes": Namespace(
            **{k: Namespace(**v) for k, v in MF_CONFIG["object"]["object_classes"].items()}
        )}),
        constituent=Namespace(**MF_CONFIG["constituent"]),
    )  # fmt: skip
    config = ObjectConfig.parse(namespace)
    assert config == ObjectConfig.parse(MF_CONFIG)
    assert config.class_names == ("b", "c", "null") and config.raw_classes == (5, 4, -1)
    dataset = make_dataset(mf_file, mf_config=namespace)
    assert list(dataset[0]["labels"]["objects"]) == ["barcode", "flavour", "valid"]


def test_object_dataset_without_valid_counts_every_slot(content, tmp_path):
    def drop_valid(datasets):
        hadrons = datasets["truth_hadrons"]
        names = [n for n in hadrons.dtype.names if n != "valid"]
        datasets["truth_hadrons"] = np.ascontiguousarray(hadrons[names]).astype(
            np.dtype([(n, hadrons.dtype[n]) for n in names])
        )
        return datasets

    path = crafted(tmp_path, content, drop_valid)
    objects = make_dataset(path, labels=labels_with(["pt"]), mf_config=MF_CONFIG)[0]
    objects = objects["labels"]["objects"]
    assert objects["valid"].all()
    # padding slots carry the null class's raw value, -1, which object_classes lists
    np.testing.assert_array_equal(objects["flavour"], content[2]["flavour"][:700])


# ------------------------------------------------------------------------------------ errors
def test_missing_object_dataset(content, tmp_path):
    path = crafted(
        tmp_path, content, lambda d: {k: v for k, v in d.items() if k != "truth_hadrons"}
    )
    message = error_of(path)
    assert "no dataset 'truth_hadrons' (data.mf_config.object.name)" in message
    assert "crafted.h5" in message


def test_a_task_on_objects_without_mf_config(mf_file):
    message = error_of(mf_file, mf_config=None)
    assert "no dataset 'objects'" in message and "set it" in message
    assert "data.mf_config" in message


@pytest.mark.parametrize(
    ("dataset", "field", "key"),
    [
        ("truth_hadrons", "barcode", "object.id_label"),
        ("truth_hadrons", "flavour", "object.class_label"),
        ("tracks", "ftagTruthParentBarcode", "constituent.id_label"),
    ],
)
def test_missing_id_and_class_labels(content, tmp_path, dataset, field, key):
    def rename(datasets):
        records = datasets[dataset]
        names = [f"{n}_old" if n == field else n for n in records.dtype.names]
        datasets[dataset] = records.view(
            np.dtype({"names": names, "formats": [records.dtype[n] for n in records.dtype.names]})
        )
        return datasets

    message = error_of(crafted(tmp_path, content, rename))
    assert f"dataset '{dataset}' has no variable '{field}'" in message
    assert f"data.mf_config.{key}" in message and "crafted.h5" in message
    assert f"Did you mean: {field}_old" in message


def test_float_id_label_is_refused(content, tmp_path):
    def as_float(datasets):
        hadrons = datasets["truth_hadrons"]
        dtype = np.dtype([(n, "<f4" if n == "barcode" else hadrons.dtype[n])
                          for n in hadrons.dtype.names])  # fmt: skip
        datasets["truth_hadrons"] = hadrons.astype(dtype)
        return datasets

    message = error_of(crafted(tmp_path, content, as_float))
    assert "'barcode' of dataset 'truth_hadrons'" in message and "must be integers" in message


def test_unlisted_object_class(content, tmp_path):
    jet = 1234
    assert content[2]["valid"][jet, 0], "the test needs an object in this jet"

    def tau(datasets):
        datasets["truth_hadrons"]["flavour"][jet, 0] = 15
        return datasets

    message = error_of(crafted(tmp_path, content, tau))
    assert "'flavour' of dataset 'truth_hadrons' is 15 for jet 1234 (object slot 0)" in message
    assert "does not list (b: 5, c: 4, null: -1)" in message and "crafted.h5" in message


def test_unlisted_class_on_padding_is_ignored(content, tmp_path):
    def padding(datasets):
        hadrons = datasets["truth_hadrons"]
        hadrons["flavour"][~hadrons["valid"]] = 99  # padding content is unspecified
        return datasets

    dataset = make_dataset(crafted(tmp_path, content, padding), mf_config=MF_CONFIG)
    for index in range(len(dataset)):
        assert (dataset[index]["labels"]["objects"]["flavour"] == 99).any()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"object": MF_CONFIG["object"]}, "exactly the keys 'object' and 'constituent'"),
        (
            {**MF_CONFIG, "object": {**MF_CONFIG["object"], "id_label": None}},
            r"mf_config.object lacks \['id_label'\]",
        ),
        (
            {**MF_CONFIG, "constituent": {**MF_CONFIG["constituent"], "ids": "x"}},
            r"mf_config.constituent has unknown keys \['ids'\]",
        ),
        (
            {**MF_CONFIG, "object": {**MF_CONFIG["object"], "object_classes": {"b": 5}}},
            r"object_classes.b: expected \{raw",
        ),
        (
            {**MF_CONFIG, "object": {**MF_CONFIG["object"], "object_classes": {
                "b": {"raw": 5, "mapped": 0}, "bb": {"raw": 5, "mapped": 1}}}},
            "two classes share a raw value",
        ),
        (
            {**MF_CONFIG, "constituent": {**MF_CONFIG["constituent"], "name": "flows"}},
            "constituent.name is 'flows', which is not a constituent type with inputs",
        ),
    ],
)  # fmt: skip
def test_bad_mf_config_fails_without_a_file(config, match):
    with pytest.raises(SaltError, match=match):
        ReadOptions.parse(VARIABLES, labels_with(TARGETS), "jets", mf_config=config)


def test_objects_cannot_be_selected_nor_inputs(mf_file):
    with pytest.raises(SaltError, match="truth objects are not selected"):
        ReadOptions.parse(
            VARIABLES, LABELS, "jets", mf_config=MF_CONFIG, selections={"objects": ["pt > 1"]}
        )
    message = error_of(mf_file, variables={**VARIABLES, "objects": ["pt"]})
    assert "truth objects are labels, not inputs" in message
