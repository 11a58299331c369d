"""Reading UPP-format files: batch format, packing, limits, weak shuffling, workers, DDP, files.

Every batch is checked against a straightforward h5py + numpy reading of the same rows.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import torch
from numpy.lib.recfunctions import structured_to_unstructured

from salt.data.datamodule import SaltDataLoader, SaltDataModule
from salt.data.dataset import JetDataset
from salt.data.sampler import BatchOrderSampler
from salt.errors import SaltError

JET_VARS = ["pt_btagJes", "eta_btagJes"]
# floats, then hit counts (u1) and leptonID (i1): several runs of adjacent fields, out of order
TRACK_VARS = ["d0", "z0SinTheta", "numberOfPixelHits", "numberOfSCTHits", "leptonID", "dphi"]
VARIABLES = {"jets": JET_VARS, "tracks": TRACK_VARS}
LABELS = {"jets": ["flavour_label"], "tracks": ["ftagTruthOriginLabel", "ftagTruthVertexIndex"]}
CLASSES = {"jets": {"flavour_label": 4}, "tracks": {"ftagTruthOriginLabel": 8}}


# ------------------------------------------------------------------------------------ helpers
def write_upp(path: Path, datasets: dict[str, np.ndarray], attrs: dict | None = None) -> Path:
    """Write structured arrays as UPP does: datasets at the root, LZ4, (100, T) track chunks."""
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            chunks = (min(100, len(data)), *data.shape[1:]) if len(data) else None
            f.create_dataset(name, data=data, compression=hdf5plugin.LZ4(), chunks=chunks)
        for name, values in (attrs or {}).items():
            for key, value in values.items():
                f[name].attrs[key] = value
    return path


def read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["jets"][:], f["tracks"][:]


def expected_batch(
    jets: np.ndarray,
    tracks: np.ndarray,
    start: int,
    stop: int,
    variables: dict[str, list[str]] = VARIABLES,
    labels: dict[str, list[str]] = LABELS,
    slots: int | None = None,
) -> dict:
    """The batch of jets [start, stop) read the plain way: padded arrays, then masked."""
    j, t = jets[start:stop], tracks[start:stop, :slots]
    valid = t["valid"]
    return {
        "inputs": {
            "jets": structured_to_unstructured(j[variables["jets"]], dtype=np.float32),
            "tracks": structured_to_unstructured(t[variables["tracks"]], dtype=np.float32)[valid],
        },
        "valid": {"tracks": valid},
        "labels": {
            "jets": {k: j[k].astype(np.int64) for k in labels["jets"]},
            "tracks": {k: t[k][valid].astype(np.int64) for k in labels["tracks"]},
        },
    }


def assert_batch_equal(batch: dict, expected: dict) -> None:
    as_numpy = {
        "inputs": {k: v.numpy() for k, v in batch["inputs"].items()},
        "valid": {k: v.numpy() for k, v in batch["valid"].items()},
        "labels": {o: {k: v.numpy() for k, v in d.items()} for o, d in batch["labels"].items()},
    }
    for section in ("inputs", "valid"):
        assert as_numpy[section].keys() == expected[section].keys()
        for name, value in expected[section].items():
            np.testing.assert_array_equal(as_numpy[section][name], value, err_msg=name)
    for name, fields in expected["labels"].items():
        assert as_numpy["labels"][name].keys() == fields.keys()
        for field, value in fields.items():
            np.testing.assert_array_equal(as_numpy["labels"][name][field], value, err_msg=field)


def assert_batches_equal(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)


def make_dataset(path: Path, **kwargs) -> JetDataset:
    args = {"variables": VARIABLES, "batch_size": 700, "labels": LABELS, "label_classes": CLASSES}
    return JetDataset(path, **{**args, **kwargs})


def make_module(demo: dict[str, Path], **kwargs) -> SaltDataModule:
    args = {
        "train_file": str(demo["train"]),
        "val_file": str(demo["val"]),
        "test_file": str(demo["test"]),
        "norm_dict": str(demo["norm_dict"]),
        "class_dict": str(demo["class_dict"]),
        "variables": VARIABLES,
        "labels": LABELS,
        "label_classes": CLASSES,
        "batch_size": 500,
    }
    return SaltDataModule(**{**args, **kwargs})


@pytest.fixture(scope="module")
def content(demo) -> tuple[np.ndarray, np.ndarray]:
    return read_file(demo["train"])


# ------------------------------------------------------------------------------------ batches
def test_batch_format_and_dtypes(demo):
    dataset = make_dataset(demo["train"])
    batch = dataset[1]
    assert set(batch) == {"inputs", "valid", "labels"}
    valid = batch["valid"]["tracks"]
    assert valid.dtype == torch.bool and valid.shape == (700, 40)
    n_valid = int(valid.sum())
    assert 4 * 700 < n_valid < 25 * 700  # realistic multiplicities, far fewer than 40 per jet
    assert batch["inputs"]["jets"].shape == (700, len(JET_VARS))
    assert batch["inputs"]["tracks"].shape == (n_valid, len(TRACK_VARS))
    assert batch["inputs"]["jets"].dtype == batch["inputs"]["tracks"].dtype == torch.float32
    assert batch["labels"]["jets"]["flavour_label"].shape == (700,)
    for label in LABELS["tracks"]:
        assert batch["labels"]["tracks"][label].shape == (n_valid,)
        assert batch["labels"]["tracks"][label].dtype == torch.int64
    assert batch["labels"]["jets"]["flavour_label"].dtype == torch.int64


@pytest.mark.parametrize("index", [0, 4, 8])  # 6000 jets in batches of 700: batch 8 has 400
def test_packed_batches_equal_file_content(demo, content, index):
    dataset = make_dataset(demo["train"])
    start, stop = dataset.rows(index)
    assert_batch_equal(dataset[index], expected_batch(*content, start, stop))
    assert len(dataset) == 9 and dataset.rows(8) == (5600, 6000)


def test_batches_own_their_memory(demo, content):
    # the read buffer is reused: a batch kept while the next is read must not change
    dataset = make_dataset(demo["train"])
    kept = [dataset[0], dataset[1]]
    dataset[2]
    for index, batch in enumerate(kept):
        assert_batch_equal(batch, expected_batch(*content, 700 * index, 700 * (index + 1)))


def test_variables_choose_fields_in_config_order(demo, content):
    variables = {"jets": ["eta_btagJes"], "tracks": ["leptonID", "IP3D_signed_d0_significance"]}
    dataset = make_dataset(demo["train"], variables=variables, labels={})
    batch = dataset[0]
    expected = expected_batch(*content, 0, 700, variables, {"jets": [], "tracks": []})
    np.testing.assert_array_equal(batch["inputs"]["jets"], expected["inputs"]["jets"])
    np.testing.assert_array_equal(batch["inputs"]["tracks"], expected["inputs"]["tracks"])
    assert batch["labels"] == {}


def test_labels_only_object_gives_valid_and_labels(demo, content):
    # DL1-like: no track inputs, but a track label for an auxiliary task still needs `valid`
    dataset = make_dataset(
        demo["train"], variables={"jets": JET_VARS}, labels={"tracks": ["ftagTruthOriginLabel"]}
    )
    batch = dataset[0]
    assert set(batch["inputs"]) == {"jets"}
    valid = content[1]["valid"][:700]
    np.testing.assert_array_equal(batch["valid"]["tracks"], valid)
    np.testing.assert_array_equal(
        batch["labels"]["tracks"]["ftagTruthOriginLabel"],
        content[1]["ftagTruthOriginLabel"][:700][valid],
    )


def test_holes_in_valid(demo, content, tmp_path):
    jets, tracks = content[0][:1000].copy(), content[1][:1000].copy()
    # a track selection that drops tracks in place (ftag's TrackSelector): holes, not a prefix
    dropped = tracks["valid"] & (np.arange(40) % 3 == 1)
    padding = tracks[~tracks["valid"]][0]
    tracks[dropped] = padding
    # and a valid track in the last slot, behind padding
    tracks[:, 39] = tracks[:, 0]
    valid = tracks["valid"]
    assert (valid[:, 1:] & ~valid[:, :-1]).any(), "the test needs holes"
    path = write_upp(tmp_path / "holes.h5", {"jets": jets, "tracks": tracks})
    dataset = make_dataset(path, batch_size=400)
    for index in range(len(dataset)):
        start, stop = dataset.rows(index)
        assert_batch_equal(dataset[index], expected_batch(jets, tracks, start, stop))


def test_truncated_constituents(demo, content):
    dataset = make_dataset(demo["train"], num_constituents={"tracks": 20})
    batch = dataset[2]
    assert batch["valid"]["tracks"].shape == (700, 20)
    assert_batch_equal(batch, expected_batch(*content, 1400, 2100, slots=20))
    assert content[1]["valid"][1400:2100, 20:].any(), "the test needs tracks beyond slot 20"
    with pytest.raises(SaltError, match=r"num_inputs\.tracks = 41.*choose 1\.\.40"):
        make_dataset(demo["train"], num_constituents={"tracks": 41})


def test_input_map_renames_datasets(content, tmp_path):
    jets, tracks = content[0][:800], content[1][:800]
    path = write_upp(tmp_path / "consts.h5", {"jets": jets, "consts": tracks})
    dataset = make_dataset(path, input_map={"tracks": "consts"})
    assert dataset.dataset_name("tracks") == "consts"
    assert_batch_equal(dataset[1], expected_batch(jets, tracks, 700, 800))
    with pytest.raises(SaltError, match=r"no dataset 'tracks'.*consts"):
        make_dataset(path)


def test_global_object_names_the_jet_level_dataset(content, tmp_path):
    jets, tracks = content[0][:800], content[1][:800]
    path = write_upp(tmp_path / "fatjets.h5", {"fatjets": jets, "tracks": tracks})
    variables = {"fatjets": JET_VARS, "tracks": TRACK_VARS}
    dataset = make_dataset(
        path,
        variables=variables,
        labels={"fatjets": ["flavour_label"]},
        global_object="fatjets",
        label_classes={"fatjets": {"flavour_label": 4}},
    )
    batch = dataset[0]
    assert set(batch["inputs"]) == {"fatjets", "tracks"} and set(batch["valid"]) == {"tracks"}
    expected = expected_batch(jets, tracks, 0, 700, {"jets": JET_VARS, "tracks": TRACK_VARS})
    np.testing.assert_array_equal(batch["inputs"]["fatjets"], expected["inputs"]["jets"])
    np.testing.assert_array_equal(batch["inputs"]["tracks"], expected["inputs"]["tracks"])
    # the same file through an input_map of the usual name
    mapped = make_dataset(path, input_map={"jets": "fatjets"})
    np.testing.assert_array_equal(mapped[0]["inputs"]["jets"], expected["inputs"]["jets"])


# ------------------------------------------------------------------------------------ limits
def test_num_jets_limits(demo, content):
    dataset = make_dataset(demo["train"], num_jets=1500, batch_size=1000)
    assert dataset.num_jets == 1500 and len(dataset) == 2
    assert dataset[1]["inputs"]["jets"].shape == (500, 2)
    assert_batch_equal(dataset[1], expected_batch(*content, 1000, 1500))
    with pytest.raises(IndexError):
        dataset[2]

    module = make_module(demo, num_train=1200, num_val=300, check_jets=0)
    module.setup("fit")
    assert module.datasets["train"].num_jets == 1200 and module.datasets["val"].num_jets == 300
    assert len(module.train_dataloader()) == 3 and len(module.val_dataloader()) == 1


def test_num_jets_larger_than_file_warns_and_uses_all(demo):
    dataset = make_dataset(demo["train"], num_jets=10**6)
    assert dataset.num_jets == 6000
    assert any("using all 6000" in w for w in dataset.warnings)
    module = make_module(demo, num_val=10**6, check_jets=0)
    with pytest.warns(UserWarning, match=r"data.num_val = 1000000 .* holds 600 jets: using all"):
        module.setup("fit")
    assert module.datasets["val"].num_jets == 600


# ------------------------------------------------------------------------------------ shuffling
def test_weak_shuffling_order():
    sampler = BatchOrderSampler(50, shuffle=True, seed=7)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch0) == sorted(epoch1) == list(range(50)), "every batch exactly once"
    assert epoch0 != epoch1, "the order changes with the epoch"
    again = BatchOrderSampler(50, shuffle=True, seed=7)
    again.set_epoch(1)
    assert list(again) == epoch1, "and repeats for the same seed and epoch"
    other = BatchOrderSampler(50, shuffle=True, seed=8)
    assert list(other) != epoch0
    assert list(BatchOrderSampler(50, shuffle=False, seed=7)) == list(range(50))


def test_loader_follows_the_sampler_order(demo):
    module = make_module(demo, check_jets=0)
    module.setup("fit")
    loader = module.train_dataloader()
    dataset = module.datasets["train"]
    loader.sampler.set_epoch(3)
    order = loader.sampler.order()
    batches = list(loader)
    assert len(batches) == len(dataset) == 12
    for index, batch in zip(order, batches):
        assert_batches_equal([batch], [dataset[int(index)]])
    # validation keeps file order
    val = module.val_dataloader()
    assert list(val.sampler) == list(range(len(module.datasets["val"])))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_skips_what_was_seen(demo, workers):
    module = make_module(demo, check_jets=0, num_workers=workers)
    module.setup("fit")
    loader = module.train_dataloader()
    order = loader.sampler.order(epoch=2)
    loader.load_state_dict({"epoch": 2, "batches_done": 5})
    # Lightning counts the 5 batches done itself: the loader's length stays the whole epoch
    assert len(loader) == len(order)
    rest = list(loader)
    assert_batches_equal(rest, [module.datasets["train"][int(i)] for i in order[5:]])
    assert len(list(loader)) == len(order), "the skip applies to one epoch only"


def test_ddp_ranks_get_disjoint_batches_and_equal_steps():
    for num_batches in (12, 13):
        shares = [list(BatchOrderSampler(num_batches, True, 3, rank, 2)) for rank in (0, 1)]
        assert len(shares[0]) == len(shares[1]) == num_batches // 2
        assert not set(shares[0]) & set(shares[1])
    with pytest.raises(SaltError, match="cannot be shared among 4 processes"):
        BatchOrderSampler(3, True, 0, 0, 4)


class _Rank:
    """What the datamodule asks of a Lightning trainer under DDP."""

    def __init__(self, rank: int, world: int):
        self.global_rank, self.world_size = rank, world
        self.accelerator = object()
        self.strategy = None


def test_ddp_through_the_datamodule(demo):
    shares = []
    for rank in (0, 1):
        module = make_module(demo, check_jets=0)
        module.trainer = _Rank(rank, 2)
        module.setup("fit")
        loader = module.train_dataloader()
        order = [int(i) for i in loader.sampler]
        batches = list(loader)
        assert len(batches) == len(order) == 6  # 12 batches of 500 jets, two ranks
        assert_batches_equal(batches, [module.datasets["train"][i] for i in order])
        shares.append(set(order))
    assert not shares[0] & shares[1]


# ------------------------------------------------------------------------------------ workers
def test_worker_settings_give_identical_batches(demo):
    settings = [
        {"num_workers": 0, "read_ahead": 0},
        {"num_workers": 0, "read_ahead": 3},
        {"num_workers": 1, "persistent_workers": False},
        {"num_workers": 2, "prefetch_factor": 3, "pin_memory": True},
    ]
    reference = None
    for setting in settings:
        module = make_module(demo, check_jets=0, **setting)
        module.setup("fit")
        loader = module.train_dataloader()
        assert isinstance(loader, SaltDataLoader)
        assert loader.num_workers == setting["num_workers"]
        loader.sampler.set_epoch(1)
        batches = list(loader)
        batches += list(loader)  # a second pass: persistent workers are reused
        if setting.get("prefetch_factor"):
            assert loader.prefetch_factor == 3 and loader.persistent_workers
        if reference is None:
            reference = batches
        else:
            assert_batches_equal(batches, reference)
        if setting["num_workers"] > 0:
            # the workers opened the file; the training process never did
            assert not module.datasets["train"].is_open
        module.teardown("fit")


def test_abandoned_read_ahead_stops_its_threads(demo):
    import threading

    module = make_module(demo, check_jets=0, read_ahead=3)
    module.setup("fit")
    iterator = iter(module.train_dataloader())
    next(iterator)
    assert any(t.name.startswith("salt-read") for t in threading.enumerate())
    iterator.close()
    assert not any(t.name.startswith("salt-read") for t in threading.enumerate())
    # dropped without closing, as Lightning drops an epoch cut short by limit_train_batches
    iterator = iter(module.train_dataloader())
    next(iterator)
    del iterator
    assert not any(t.name.startswith("salt-read") for t in threading.enumerate())


def test_dataset_opens_lazily_and_pickles_without_a_handle(demo):
    dataset = make_dataset(demo["train"])
    assert not dataset.is_open
    first = dataset[0]
    assert dataset.is_open
    state = pickle.dumps(dataset)  # what a spawned worker receives
    assert b"h5py" not in state
    copy = pickle.loads(state)
    assert not copy.is_open
    assert_batches_equal([copy[0]], [first])


def test_fork_reopens_the_file(demo):
    # a forked child inherits the parent's open handle, and must not use it
    import multiprocessing

    dataset = make_dataset(demo["train"])
    expected = dataset.read_batch(3)
    assert dataset.is_open
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(dataset, 3, queue))
    child.start()  # with fork, the dataset object itself is inherited, not pickled
    batch, reopened = queue.get(timeout=60)
    child.join()
    assert reopened
    assert_batches_equal([batch], [expected])


def _read_in_child(dataset: JetDataset, index: int, queue) -> None:
    inherited = dataset._reader._handle
    batch = dataset.read_batch(index)
    queue.put((batch, dataset._reader._handle is not inherited and dataset.is_open))


# ------------------------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def split_files(demo, content, tmp_path_factory) -> list[Path]:
    jets, tracks = content
    folder = tmp_path_factory.mktemp("parts")
    attrs = {"jets": {"flavour_label": ["bjets", "cjets", "ujets", "taujets"]}}
    bounds = [(0, 2000), (2000, 3500), (3500, 6000)]
    return [
        write_upp(folder / f"part_{i}.h5", {"jets": jets[a:b], "tracks": tracks[a:b]}, attrs)
        for i, (a, b) in enumerate(bounds)
    ]


@pytest.mark.parametrize("as_glob", [True, False])
def test_several_files_as_one_virtual_dataset(demo, content, split_files, as_glob):
    spec = str(split_files[0].parent / "part_*.h5") if as_glob else [str(p) for p in split_files]
    module = make_module(demo, train_file=spec, batch_size=700)
    module.setup("fit")
    assert module.sources["train"] == split_files
    combined = module.paths["train"]
    assert combined not in split_files
    assert combined.stat().st_size < 100_000, "a virtual file, not a copy"
    with h5py.File(combined, "r") as f:
        assert f["tracks"].is_virtual and f["tracks"].shape == (6000, 40)
        assert list(f["jets"].attrs["flavour_label"]) == ["bjets", "cjets", "ujets", "taujets"]
    dataset = module.datasets["train"]
    assert dataset.num_jets == 6000
    for index in (2, 5):  # batch 2 spans the first two files
        start, stop = dataset.rows(index)
        assert_batch_equal(dataset[index], expected_batch(*content, start, stop))
    module.teardown("fit")
    assert not combined.exists(), "the virtual file goes with the run"


def test_files_with_different_layouts_are_not_combined(demo, content, split_files, tmp_path):
    tracks = content[1][:100, :20]
    other = write_upp(tmp_path / "short.h5", {"jets": content[0][:100], "tracks": tracks})
    module = make_module(demo, train_file=[str(split_files[0]), str(other)])
    with pytest.raises(SaltError, match=r"tracks.*short.h5.*must share their layout"):
        module.setup("fit")
