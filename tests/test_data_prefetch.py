"""The loader's GPU path, checked on the CPU: host sizes made where the batch is made, copies one
batch ahead (`salt.data.prefetch`, here with plain copies to the CPU "device"), worker transport,
and `data.num_workers: auto`. tests/test_data_gpu.py runs the same on a CUDA device."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch
from test_data_loading import LABELS, VARIABLES, make_module, read_file, write_upp

from salt.data import datamodule as dm
from salt.data.loader import WorkerCollate
from salt.data.prefetch import map_tensors, to_device_ahead
from salt.data.workers import auto_workers
from salt.errors import SaltError
from salt.models.layout import host_sizes

TYPES = {**VARIABLES, "hits": ["d0", "z0SinTheta", "dphi"]}
TYPE_LABELS = {**LABELS, "hits": ["ftagTruthOriginLabel"]}


def host_batches(n: int = 5) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    return [
        {
            "inputs": {"tracks": torch.randn(7 + i, 3, generator=gen)},
            "labels": {"tracks": {"x": torch.arange(7 + i)}},
            "sizes": {"tracks": {"max_len": i}},
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def two_types(demo, tmp_path_factory):
    """Demo jets with tracks and a second constituent type, `hits`, of other multiplicities."""
    jets, tracks = read_file(demo["train"])
    jets, tracks = jets[:2000], tracks[:2000]
    hits = tracks.copy()
    hits["valid"] &= np.arange(40) % 4 != 1  # fewer, with holes
    folder = tmp_path_factory.mktemp("types")
    attrs = {"jets": {"flavour_label": ["bjets", "cjets", "ujets", "taujets"]}}
    return write_upp(folder / "types.h5", {"jets": jets, "tracks": tracks, "hits": hits}, attrs)


def types_module(demo, path, **kwargs):
    args = {"train_file": str(path), "val_file": str(path), "variables": TYPES}
    return make_module(demo, labels=TYPE_LABELS, check_jets=0, **{**args, **kwargs})


# ------------------------------------------------------------------------------------ prefetch
@pytest.mark.parametrize("depth", [1, 2])
def test_copies_run_ahead_and_keep_order_and_content(depth):
    batches = host_batches()
    events: list[str] = []

    def source():
        for i, batch in enumerate(batches):
            events.append(f"made {i}")
            yield batch

    delivered = []
    for i, batch in enumerate(to_device_ahead(source(), "cpu", depth=depth)):
        events.append(f"got {i}")
        delivered.append(batch)
    # batch k is handed over only once batch k + depth is on its way
    for i in range(len(batches)):
        ahead = min(i + depth, len(batches) - 1)
        assert events.index(f"made {ahead}") < events.index(f"got {i}")
    assert events.index("got 0") == depth + 1
    torch.testing.assert_close(delivered, batches, rtol=0, atol=0)
    for sent, got in zip(batches, delivered):
        # copies, not the host tensors; the host ints as they were
        assert got["inputs"]["tracks"].data_ptr() != sent["inputs"]["tracks"].data_ptr()
        assert got["sizes"] == sent["sizes"]


def test_closing_the_prefetcher_closes_its_source():
    closed = []

    def source():
        try:
            yield from host_batches()
        finally:
            closed.append(True)

    iterator = to_device_ahead(source(), "cpu")
    next(iterator)
    iterator.close()
    assert closed == [True]


def test_map_tensors_leaves_other_values():
    batch = {"a": torch.ones(2), "b": {"c": torch.zeros(1), "n": 3}}
    out = map_tensors(batch, lambda t: t + 1)
    assert out["b"]["n"] == 3 and out["a"].tolist() == [2.0, 2.0] and out["b"]["c"].item() == 1


# ------------------------------------------------------------------------------------ loader
@pytest.mark.parametrize(
    "setting",
    [
        {"num_workers": 0, "read_ahead": 3},
        {"num_workers": 0, "read_ahead": 0},
        {"num_workers": 2},
    ],
)
def test_loader_adds_host_sizes_and_delivers_to_the_device(demo, two_types, setting):
    """Several constituent types and their labels: same batches, plus their sizes as host ints."""
    module = types_module(demo, two_types, batch_size=300, **setting)
    module.setup("fit")
    plain = list(module.train_dataloader())
    module.target_device = "cpu"  # a device without streams: the prefetcher's plain copies
    loader = module.train_dataloader()
    assert loader.device == torch.device("cpu") and loader.constituents == ["tracks", "hits"]
    delivered = list(loader)
    assert len(delivered) == len(plain) == 7
    for got, expected in zip(delivered, plain):
        sizes = got.pop("sizes")
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert sizes == host_sizes(expected["valid"], ["tracks", "hits"])
        assert type(sizes["merged"]["max_len"]) is int
        assert sizes["merged"]["max_len"] > sizes["tracks"]["max_len"]
    module.teardown("fit")


def test_worker_batches_cross_as_numpy_with_their_sizes(demo, two_types):
    module = types_module(demo, two_types, batch_size=300)
    module.setup("fit")
    batch = module.datasets["train"][0]
    collated = WorkerCollate(["tracks", "hits"])(batch)
    leaves = []

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        else:
            leaves.append(x)

    walk(collated)
    arrays = [x for x in leaves if isinstance(x, np.ndarray)]
    assert not any(isinstance(x, torch.Tensor) for x in leaves)
    assert all(type(x) is int for x in leaves if not isinstance(x, np.ndarray))
    assert collated["sizes"] == host_sizes(batch["valid"], ["tracks", "hits"])
    # one pickle of the arrays' bytes and little else: no shared-memory file per tensor
    size = len(pickle.dumps(collated, protocol=pickle.HIGHEST_PROTOCOL))
    data = sum(a.nbytes for a in arrays)
    assert data < size < data + 4096
    # without sizes asked for, nothing is added
    assert "sizes" not in WorkerCollate(None)(module.datasets["train"][0])


class _Model:
    constituents = ["tracks"]


class _Trainer:
    """What the datamodule asks of a Lightning trainer (CPU, one process)."""

    global_rank, world_size, num_devices = 0, 1, 1
    accelerator = object()
    strategy = None

    def __init__(self):
        self.lightning_module = type("Module", (), {"model": _Model()})()


def test_the_trainers_model_names_the_constituents(demo, two_types):
    module = types_module(demo, two_types, batch_size=300)
    module.trainer = _Trainer()
    module.setup("fit")
    loader = module.train_dataloader()
    assert loader.device is None, "a CPU run keeps its batches on the host"
    assert loader.constituents == ["tracks"]
    batch = next(iter(loader))
    assert set(batch["sizes"]) == {"tracks", "hits"}  # no merged sizes: one type is encoded
    assert batch["inputs"]["tracks"].device.type == "cpu"


def small_gn2(norm_dict) -> torch.nn.Module:
    """A small GN2 on the demo variables: jet flavour, track origin and vertexing."""
    from salt.models import (
        ClassificationTask,
        GlobalAttentionPooling,
        SaltModel,
        Transformer,
        VertexingTask,
    )

    torch.manual_seed(0)
    tasks = [
        ClassificationTask(
            "jets_classification", "jets", "flavour_label", {"input_size": 16},
            class_names=["bjets", "cjets", "ujets", "taujets"],
        ),
        ClassificationTask("track_origin", "tracks", "ftagTruthOriginLabel", {"input_size": 16}),
        VertexingTask("track_vertexing", "tracks", {"input_size": 16, "hidden_layers": [16]}),
    ]  # fmt: skip
    return SaltModel(
        init_nets=[{"input_name": "tracks", "output_size": 32, "hidden_layers": [32]}],
        tasks=tasks,
        encoder=Transformer(32, 2, 4, out_dim=16),
        pool_net=GlobalAttentionPooling(16),
        variables=VARIABLES,
        norm_dict=str(norm_dict),
    )


def test_a_step_on_delivered_batches_asks_the_device_nothing(demo):
    """The loader's sizes are all a packed step needs (CPU twin of the GPU sync check)."""
    from tests.test_sync_free import SyncWatch

    model = small_gn2(demo["norm_dict"]).train()
    module = make_module(demo, check_jets=0, batch_size=300)
    module.target_device = "cpu"
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    with SyncWatch() as watch:
        _, losses = model(batch["inputs"], batch["valid"], batch["labels"], batch["sizes"])
        sum(losses.values()).backward()
    assert watch.found == []


def test_lightning_trains_on_prefetched_batches(demo):
    """Lightning's transfer leaves delivered batches as they are; the model uses their sizes."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from salt.modelwrapper import ModelWrapper

    seen = []

    class Record(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(batch["sizes"])

    lrs = {"initial": 1e-4, "max": 1e-3, "end": 1e-5, "pct_start": 0.1, "weight_decay": 1e-5}
    module = make_module(demo, check_jets=0, batch_size=200)
    module.target_device = "cpu"
    trainer = L.Trainer(
        fast_dev_run=2, callbacks=[Record()], logger=False, enable_progress_bar=False
    )
    trainer.fit(ModelWrapper(small_gn2(demo["norm_dict"]), lrs), module)
    assert len(seen) == 2 and all(sizes["tracks"]["max_len"] > 0 for sizes in seen)
    loader = module.train_dataloader()
    assert loader.constituents == ["tracks"] and loader.device == torch.device("cpu")


# ------------------------------------------------------------------------------------ workers
def test_auto_workers_rule():
    assert auto_workers(2, on_gpu=True) == 0  # read-ahead wins on 2 cores
    assert auto_workers(3, on_gpu=True) == 0
    assert auto_workers(4, on_gpu=True) == 3
    assert auto_workers(16, on_gpu=True) == 15
    assert auto_workers(128, on_gpu=True) == 15
    assert auto_workers(64, on_gpu=False) == 0  # a CPU run's compute wants the cores


def test_auto_workers_at_setup(demo, monkeypatch, caplog):
    monkeypatch.setattr(dm, "usable_cpus", lambda: 32)

    class GpuTrainer(_Trainer):
        accelerator = type("CUDAAccelerator", (), {})()
        num_devices = 4  # four training processes share the node's CPUs

    module = make_module(demo, num_workers="auto", check_jets=0)
    module.trainer = GpuTrainer()
    with caplog.at_level(logging.INFO, logger="salt.data.datamodule"):
        module.setup("fit")
        module.setup("test")  # a second setup does not choose again
    assert module.workers == 7
    chosen = [r.message for r in caplog.records if "num_workers auto" in r.message]
    assert chosen == [
        "data.num_workers auto: training on a GPU with 8 usable CPUs per process; reading in 7 "
        "worker processes."
    ]
    cpu = make_module(demo, num_workers="auto", check_jets=0)
    cpu.setup("fit")  # no trainer, no CUDA here: a CPU run
    assert cpu.workers == 0 and "read ahead" in cpu.workers_chosen
    assert cpu.train_dataloader().num_workers == 0 and cpu.train_dataloader().read_ahead == 3


@pytest.mark.parametrize("value", [-1, "many", 1.5])
def test_bad_num_workers(demo, value):
    with pytest.raises(SaltError, match="num_workers must be 0 or more, or auto"):
        make_module(demo, num_workers=value)
