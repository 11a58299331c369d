"""Interrupting `salt fit` mid-epoch: a resumable checkpoint, no process or temporary copy left.

`salt fit` runs with 2 dataloader workers and `move_files_temp`, and a probe callback that slows
each training batch a little, so that the signal lands mid-epoch (60 batches of 100 jets). The
test waits for a few batches, records the child processes, sends the signal and checks what is
left. The SIGTERM run is then resumed to the end of the epoch, which must give exactly the weights
of an uninterrupted run. Ctrl-C goes to the whole process group of a 2-rank DDP run, as a
terminal sends it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.cli_support import probe_args, probe_env, read_probe, train_batches, wait_for_batches
from tests.conftest import data_args, only_run_dir, python_env, run_dirs, run_salt

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

BATCHES = 60  # 6000 training jets in batches of 100


def start_fit(
    demo, cwd: Path, probe: Path, fast: Path, *extra: str, launcher: dict | None = None
) -> subprocess.Popen:
    """`salt fit` of DL1 with 2 workers, temporary copies and the probe, in a process group of
    its own; through the test server's `python` if `launcher` (tests/conftest.python_env)."""
    args = [
        "fit", "--config", "configs/DL1.yaml", *data_args(demo), "--force",
        "--data.batch_size", "100", "--data.num_val", "300", "--data.num_workers", "2",
        "--data.move_files_temp", str(fast), "--trainer.max_epochs", "1",
        "--trainer.enable_model_summary", "false", *probe_args(probe, delay=0.05), *extra,
    ]  # fmt: skip
    env = {**os.environ, **(launcher or {}), "PYTHONUNBUFFERED": "1"}
    env.update(probe_env(), XDG_CACHE_HOME=str(cwd / ".cache"))
    python = launcher["PYTHON"] if launcher else sys.executable
    return subprocess.Popen(
        [python, "-m", "salt.main", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a job or a terminal gives it
    )  # fmt: skip


def interrupt(demo, tmp_path: Path, signum: int, *extra: str) -> dict:
    """Start a run, signal its whole process group after 5 batches; what it left behind.

    The group is what a terminal's Ctrl-C, `kill -TERM -PGID` or a batch system reach: the
    dataloader workers get the signal too and must leave the shutdown to the main process.
    """
    cwd, probe, fast = tmp_path / "cwd", tmp_path / "probe", tmp_path / "fast"
    cwd.mkdir()
    fast.mkdir()
    proc = start_fit(demo, cwd, probe, fast, *extra)
    try:
        wait_for_batches(proc, probe, 5)
        children = psutil.Process(proc.pid).children(recursive=True)
        names = [c.name() for c in children]
        copies = list(fast.rglob("*.h5"))
        os.killpg(proc.pid, signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.2)  # let the kernel reap what the main process's death took with it
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    run_dir = only_run_dir(cwd)
    return {
        "cwd": cwd, "probe": probe, "fast": fast, "run_dir": run_dir, "rc": proc.returncode,
        "stdout": out, "stderr": err, "names": names, "alive": alive, "copies": copies,
    }  # fmt: skip


def assert_clean_stop(stopped: dict, signum: int) -> Path:
    """Exit code, checkpoint, no process left, no copy left; returns the checkpoint."""
    assert stopped["rc"] == 128 + signum, stopped["stderr"][-3000:]
    assert len(stopped["copies"]) == 2  # the test did see the temporary copies
    assert list(stopped["fast"].rglob("*")) == []
    # the test did see the dataloader workers (train and validation, persistent)
    assert stopped["names"].count("pt_data_worker") >= 2, stopped["names"]
    assert stopped["alive"] == []
    (ckpt,) = (stopped["run_dir"] / "ckpts").glob("interrupted-*.ckpt")
    step = int(re.fullmatch(r"interrupted-epoch=000-step=(\d+)\.ckpt", ckpt.name).group(1))
    assert 5 <= step < BATCHES  # mid-epoch
    assert "Resume with:" in stopped["stderr"]
    assert f"--ckpt_path {ckpt}" in stopped["stderr"]
    return ckpt


def test_sigterm_mid_epoch_saves_stops_workers_removes_copies_and_resumes(demo, tmp_path):
    stopped = interrupt(demo, tmp_path, signal.SIGTERM)
    assert "stopped by SIGTERM" in stopped["stderr"]
    ckpt = assert_clean_stop(stopped, signal.SIGTERM)
    cwd, probe, run_dir = stopped["cwd"], stopped["probe"], stopped["run_dir"]
    seen = len(train_batches(read_probe(probe)[0]))

    # resume from the printed command, to the end of the epoch
    config = str(run_dir / "config.yaml")
    run_salt(
        ["fit", "--config", config, "--ckpt_path", str(ckpt), "--force",
         "--trainer.callbacks.delay", "0"],
        cwd, env=probe_env(),
    )  # fmt: skip
    resumed = next(d for d in run_dirs(cwd) if d != run_dir)
    (final,) = (resumed / "ckpts").glob("epoch=000-*.ckpt")
    batches = train_batches(read_probe(probe)[0])
    assert len(batches) > seen
    # (with workers torch asks the sampler for two iterators and keeps the second: the skip
    # of a resume must be applied lazily, and len() must stay the whole epoch for Lightning)
    assert len(set(batches)) == len(batches), "the resumed epoch repeated batches it had seen"
    assert len(batches) == BATCHES, "the resumed epoch skipped batches it had not seen"

    # the interruption changed nothing: an uninterrupted run ends with the same weights
    run_salt(
        ["fit", "--config", config, "--force", "--trainer.callbacks.delay", "0",
         "--trainer.callbacks.out_dir", str(tmp_path / "probe_ref")],
        cwd, env=probe_env(),
    )  # fmt: skip
    reference = next(d for d in run_dirs(cwd) if d not in (run_dir, resumed))
    (ref_final,) = (reference / "ckpts").glob("epoch=000-*.ckpt")
    a = torch.load(final, map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(ref_final, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_to_a_ddp_run_stops_every_rank_cleanly(demo, tmp_path):
    """A terminal's Ctrl-C reaches every process of a 2-rank DDP run, workers included.

    The workers must leave the shutdown to their rank, and the ranks (which also get SIGTERM from
    rank 0) must stop together at the same batch.
    """
    stopped = interrupt(
        demo, tmp_path, signal.SIGINT,
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
    )  # fmt: skip
    assert "stopped by SIGINT (Ctrl-C)" in stopped["stderr"]
    assert "Traceback" not in stopped["stderr"]
    assert_clean_stop(stopped, signal.SIGINT)
    assert stopped["names"].count("pt_data_worker") >= 4  # two ranks' workers
    records = read_probe(stopped["probe"])
    assert len(train_batches(records[0])) == len(train_batches(records[1]))


def test_sigterm_to_one_ddp_rank_stops_every_rank_at_the_same_batch(demo, tmp_path):
    """A signal that reaches one rank only (rank 1 here, as a node's own kill would): the ranks
    agree at the end of the batch, stop together, save one checkpoint and report the signal.
    (Lightning's own handler broadcasts from inside the signal handler, and the other rank,
    in another collective at that moment, waits forever.) The run starts from the test server:
    the signal's way through the ranks is under test, not Python's start-up."""
    cwd, probe, fast = tmp_path / "cwd", tmp_path / "probe", tmp_path / "fast"
    cwd.mkdir()
    fast.mkdir()
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    proc = start_fit(demo, cwd, probe, fast, *ddp, launcher=python_env())
    try:
        wait_for_batches(proc, probe, 5)
        (rank1,) = {record["pid"] for record in read_probe(probe)[1]}
        os.kill(rank1, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by SIGTERM" in err
    assert "Traceback" not in err
    run_dir = only_run_dir(cwd)
    (ckpt,) = (run_dir / "ckpts").glob("interrupted-epoch=000-step=*.ckpt")
    records = read_probe(probe)
    batches = [len(train_batches(records[rank])) for rank in (0, 1)]
    assert batches[0] == batches[1] == int(ckpt.stem.split("step=")[1])
    assert list(fast.rglob("*")) == []
