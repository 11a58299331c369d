"""Checkpoints that survive a crash: atomic writes, a full disk, a damaged file mid-epoch.

The unit tests write through `salt.callbacks.checkpoint.write_atomically` with the failure put in
the system call it would come from (os.write, the free-space query); the end-to-end tests run
`salt fit` against a real file-size limit (the kernel refuses the write with EFBIG, as a full
disk does with ENOSPC) and against a training file with a damaged HDF5 chunk.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections import namedtuple
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (LZ4)
import pytest
import torch

from salt.callbacks.checkpoint import CheckpointWriteError, loadable, write_atomically
from tests.conftest import data_args, only_run_dir, run_python, run_salt

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

OLD, NEW = b"old checkpoint " * 1000, b"new checkpoint " * 5000


def test_the_target_keeps_its_old_content_until_the_new_one_is_complete(tmp_path, monkeypatch):
    path = tmp_path / "ckpts" / "epoch=001-val_loss=0.50000.ckpt"
    write_atomically(path, OLD)
    seen = []
    fsync = os.fsync

    def watch(fd: int) -> None:
        # the moment the data is on disk, before the rename: the target is still the old file
        seen.append((path.read_bytes(), sorted(p.name for p in path.parent.iterdir())))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", watch)
    write_atomically(path, NEW)
    content, names = seen[0]
    assert content == OLD
    assert names == sorted([path.name, f".{path.name}.{os.getpid()}.tmp"])
    assert path.read_bytes() == NEW
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_write_that_runs_out_of_space_leaves_the_earlier_checkpoints(tmp_path, monkeypatch):
    earlier = tmp_path / "epoch=000-val_loss=0.60000.ckpt"
    write_atomically(earlier, OLD)
    target = tmp_path / "epoch=001-val_loss=0.50000.ckpt"
    write = os.write

    def fill_up(fd: int, data) -> int:
        if len(data) > 1000:  # half of it fits, then the disk is full
            write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    monkeypatch.setattr(os, "write", fill_up)
    with pytest.raises(CheckpointWriteError) as info:
        write_atomically(target, NEW)
    message = str(info.value)
    assert str(target) in message and "No space left on device" in message
    assert f"needs {len(NEW) / 1024**2:.1f} MiB" in message
    assert "earlier checkpoints are intact" in message
    assert earlier.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == [earlier.name]  # no partial file


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 5 * 1024**2))
    target = tmp_path / "epoch=000-val_loss=0.60000.ckpt"
    with pytest.raises(CheckpointWriteError, match=r"needs 0\.1 MiB .* has 5\.0 MiB free"):
        write_atomically(target, NEW)
    assert not list(tmp_path.iterdir())


def test_loadable_tells_why_a_checkpoint_does_not_load(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "optimizer_states": []}, good)
    assert loadable(good) is None
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[:-200])
    assert loadable(cut).startswith("does not load (")
    weights = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, weights)
    assert "not a resumable Lightning checkpoint (no loops, optimizer_states)" in loadable(weights)


# ------------------------------------------------------------------------------- end to end
SMALL = ["--data.num_train", "2000", "--data.num_val", "200", "--data.batch_size", "100",
         "--trainer.max_epochs", "1", "--trainer.enable_model_summary", "false"]  # fmt: skip


def test_salt_fit_on_a_full_disk_stops_with_the_path_and_the_size(demo, tmp_path):
    """A 300 kB file-size limit: the run's yaml and csv files fit, a DL1 checkpoint does not."""

    limited_salt = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))\n"
        "from salt.main import main\n"
        "main(sys.argv[1:])\n"
    )
    args = ["fit", "--config", "configs/DL1.yaml", *data_args(demo), "--force", *SMALL]
    result = run_python(limited_salt, args, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    ckpts = only_run_dir(tmp_path) / "ckpts"
    assert re.search(
        rf"salt: error: no room to save the checkpoint '{re.escape(str(ckpts))}/epoch=000-"
        r"val_loss=[0-9.]+\.ckpt' \(File too large\): it needs [0-9.]+ MiB",
        result.stderr,
    ), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert list(ckpts.iterdir()) == []  # neither a truncated checkpoint nor a temporary file


def damage_chunk(src: Path, dst: Path, chunk: int) -> None:
    """Copy `src` with the bytes of one `tracks` chunk (100 jets) overwritten."""
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r") as f:
        info = f["tracks"].id.get_chunk_info(chunk)
    with dst.open("r+b") as f:
        f.seek(info.byte_offset + 20)
        f.write(b"\xff" * 2000)


def test_a_damaged_chunk_mid_epoch_saves_the_work_first_and_names_the_resume(demo, tmp_path):
    damaged = tmp_path / "damaged_train.h5"
    damage_chunk(demo["train"], damaged, chunk=12)  # jets 1200..1299: batch 12 of 20
    args = data_args(demo)
    args[args.index("--data.train_file") + 1] = str(damaged)
    # DIPS reads tracks only; the start-up scan is off, so the damage is met mid-epoch
    fit = ["fit", "--config", "configs/DIPS.yaml", *args, "--force", *SMALL]
    result = run_salt([*fit, "--data.check_jets", "0"], tmp_path, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    err = result.stderr
    assert "dataset 'tracks' cannot be read at jets 1200..1299" in err
    run_dir = only_run_dir(tmp_path)
    (saved,) = (run_dir / "ckpts").glob("interrupted-epoch=000-step=*.ckpt")
    step = int(re.search(r"step=(\d+)", saved.name)[1])
    assert 1 <= step < 20
    assert loadable(saved) is None
    assert err.index("cannot be read") < err.index("Resume with:")  # the error comes first
    resume = f"salt fit --config {run_dir / 'config.yaml'} --ckpt_path {saved}"
    assert resume in err
    assert "Traceback" not in err

    # with the file replaced, the printed command finishes the epoch from where it stopped
    command = [*resume.split()[1:], "--data.train_file", str(demo["train"]), "--force"]
    done = run_salt(command, tmp_path)
    assert f"Resuming from {saved}" in done.stdout
    resumed = next(
        d for d in (tmp_path / "logs").iterdir() if d.name not in (run_dir.name, "latest")
    )
    (final,) = (resumed / "ckpts").glob("epoch=000-*.ckpt")
    assert torch.load(final, map_location="cpu", weights_only=True)["global_step"] == 20
