"""Fast-disk copies (`data.move_files_temp`) and the advice on worker counts."""

from __future__ import annotations

import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_data_loading import (
    LABELS,
    VARIABLES,
    assert_batches_equal,
    make_dataset,
    make_module,
    read_file,
    write_upp,
)

import salt.data.datamodule as datamodule
import salt.data.tempcopy as tempcopy
from salt.errors import SaltError


def test_move_files_temp_reads_copies_and_removes_them(demo, tmp_path):
    target = tmp_path / "fast"
    module = make_module(demo, move_files_temp=str(target), check_jets=-1)
    module.setup("fit")
    (folder,) = target.iterdir()
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["000_pp_output_train.h5", "001_pp_output_val.h5"]
    dataset = module.datasets["train"]
    assert dataset.filename.parent == folder, "training reads the copy"
    assert module.sources["train"] == [Path(demo["train"])], "the user's file stays on record"
    assert_batches_equal([dataset[3]], [make_dataset(demo["train"], batch_size=500)[3]])
    module.teardown("fit")
    assert not folder.exists(), "removed when training ends"
    # a later stage copies again
    module.setup("validate")
    assert module.datasets["val"].filename.parent.parent == target
    module.teardown("validate")
    assert not any(target.iterdir())


def test_move_files_temp_with_several_files(demo, tmp_path):
    # the virtual file over several inputs points at their copies
    parts = [demo["train"], demo["val"]]
    target = tmp_path / "fast"
    module = make_module(
        demo, train_file=[str(p) for p in parts], move_files_temp=str(target), check_jets=0
    )
    module.setup("fit")
    dataset = module.datasets["train"]
    assert dataset.num_jets == 6600
    with h5py.File(dataset.filename) as f:
        sources = {s.file_name for s in f["tracks"].virtual_sources()}
    assert all(Path(s).parent.parent == target for s in sources)
    module.teardown("fit")
    assert not any(target.iterdir()) and not dataset.filename.exists()


def test_move_files_temp_refuses_without_room(demo, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(tempcopy.shutil, "disk_usage", lambda _: usage(10**9, 10**9, 10 * 2**20))
    target = tmp_path / "small"
    module = make_module(demo, move_files_temp=str(target))
    with pytest.raises(SaltError) as info:
        module.setup("fit")
    message = str(info.value)
    assert f"'{target}' has 10.0 MiB free, but the input files need" in message
    assert not any(target.iterdir()), "refused before copying anything"


_SCRIPT = """
import sys
from salt.data.datamodule import SaltDataModule
from salt.errors import SaltError
module = SaltDataModule(train_file=sys.argv[1], val_file=sys.argv[2], variables={variables},
                        labels={labels}, move_files_temp=sys.argv[3], check_jets=0,
                        num_workers=1, batch_size=250)
module.setup("fit")
print("copied:", *[p.name for p in module.paths.values()], flush=True)
if sys.argv[4] == "raise":
    loader = module.train_dataloader()
    try:
        list(loader)  # the worker's error, with more batches asked for
    except SaltError as err:  # caught, and the loader dropped
        print(err, file=sys.stderr)
    del loader
    raise SystemExit(1)
else:
    next(iter(module.train_dataloader()))  # the (persistent) worker stays alive
"""


def test_move_files_temp_removed_when_the_process_ends(demo, tmp_path):
    # a normal exit, and a worker's error, side by side; a worker left running must not keep
    # either process from ending
    jets, tracks = read_file(demo["train"])
    jets, tracks = jets[:1000], tracks[:1000]
    for jet in (100, 350, 600, 900):  # whichever batch comes first fails
        tracks[jet, np.flatnonzero(tracks["valid"][jet])[0]]["d0"] = np.nan
    nan_file = write_upp(tmp_path / "nan.h5", {"jets": jets, "tracks": tracks})
    script = _SCRIPT.format(variables=VARIABLES, labels=LABELS)
    runs = {}
    for ending, train in (("exit", demo["train"]), ("raise", nan_file)):
        target = tmp_path / ending
        command = [sys.executable, "-c", script, str(train), str(demo["val"]), str(target), ending]
        pipe = subprocess.PIPE
        runs[ending] = target, subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True)
    for ending, (target, process) in runs.items():
        stdout, stderr = process.communicate(timeout=120)
        assert "copied: 000_" in stdout and "001_pp_output_val.h5" in stdout, stderr
        assert process.returncode == (1 if ending == "raise" else 0), stderr
        assert ending != "raise" or "is nan in a valid constituent of jet" in stderr
        assert not any(target.iterdir()), f"a copy was left behind ({ending})"


def test_cleanup_leaves_other_processes_files(tmp_path):
    # what a forked worker inherits is not its to remove
    path = tmp_path / "copy.h5"
    path.write_bytes(b"x")
    tempcopy._owned.append((-1, path))
    try:
        tempcopy.cleanup()
        assert path.exists()
    finally:
        tempcopy._owned.remove((-1, path))
    tempcopy.register_for_cleanup(path)
    tempcopy.cleanup()
    assert not path.exists()


def test_copy_failure_is_a_clear_error(demo, tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempcopy.shutil, "copyfile", full)
    target = tmp_path / "fast"
    with pytest.raises(SaltError, match="No space left on device"):
        tempcopy.copy_to_temp([Path(demo["train"])], target / "run")
    assert not (target / "run").exists()


# ------------------------------------------------------------------------------------ workers
def test_worker_advice():
    too_many = datamodule.worker_advice(4, 2, on_gpu=False)
    assert "data.num_workers = 4 but this process may use 2 CPUs" in too_many
    idle = datamodule.worker_advice(0, 8, on_gpu=True)
    assert "num_workers = 0 on a GPU run with 8 CPUs" in idle
    assert "--data.num_workers auto (here: 7)" in idle
    assert datamodule.worker_advice(0, 1, on_gpu=True) is None
    assert datamodule.worker_advice(0, 3, on_gpu=True) is None  # too few CPUs for workers
    assert datamodule.worker_advice(0, 8, on_gpu=False) is None
    assert datamodule.worker_advice(2, 2, on_gpu=True) is None


def test_worker_advice_at_setup(demo, monkeypatch):
    monkeypatch.setattr(datamodule, "usable_cpus", lambda: 1)
    module = make_module(demo, num_workers=2, check_jets=0)
    with pytest.warns(UserWarning, match="num_workers = 2 but this process may use 1 CPUs"):
        module.setup("fit")

    class Trainer:
        accelerator = type("CUDAAccelerator", (), {})()
        strategy = None
        global_rank, world_size = 0, 1

    monkeypatch.setattr(datamodule, "usable_cpus", lambda: 16)
    module = make_module(demo, num_workers=0, check_jets=0)
    module.trainer = Trainer()
    with pytest.warns(UserWarning, match="GPU run with 16 CPUs"):
        module.setup("fit")
