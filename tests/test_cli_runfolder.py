"""Where a run's folder is and what a restart finds there (salt.callbacks.runfolder), in-process."""

from __future__ import annotations

import os
import re
import time

import pytest
import torch

from salt.callbacks import runfolder


@pytest.fixture(autouse=True)
def clean_env():
    """runfolder exports what it chose: none of it may reach the later tests' salt processes."""
    saved = dict(os.environ)
    for key in ("SALT_RUN_DIR", "SALT_RUN_ID", "SALT_AUTO_CKPT", "SLURM_NTASKS", "SLURM_JOB_ID"):
        os.environ.pop(key, None)
    yield
    os.environ.clear()
    os.environ.update(saved)
    runfolder._reserved.clear()


def test_a_new_run_folder_is_reserved_and_exported(tmp_path):
    first = runfolder.choose_run_dir(tmp_path / "logs", "GN2")
    assert re.fullmatch(r"GN2_\d{8}-\d{6}", first.name)
    assert first.is_dir()
    assert os.environ["SALT_RUN_DIR"] == str(first)
    # a second run in the same second gets its own folder
    del os.environ["SALT_RUN_DIR"]
    second = runfolder.choose_run_dir(tmp_path / "logs", "GN2")
    assert second != first
    if second.name[:19] == first.name:
        assert second.name == f"{first.name}-2"


def test_an_unused_reserved_folder_is_removed_with_the_root_it_made(tmp_path):
    run_dir = runfolder.choose_run_dir(tmp_path / "logs", "GN2")
    runfolder.release_unused()
    assert not run_dir.exists()
    assert not (tmp_path / "logs").exists()
    del os.environ["SALT_RUN_DIR"]
    kept = runfolder.choose_run_dir(tmp_path / "logs", "GN2")
    (kept / "config.yaml").write_text("x")
    runfolder.release_unused()
    assert kept.is_dir()


def test_pinned_folders_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SALT_RUN_ID", "job42")
    assert runfolder.choose_run_dir(tmp_path, "DIPS") == tmp_path / "DIPS_job42"
    assert not (tmp_path / "DIPS_job42").exists()  # made by rank 0 when it starts writing
    monkeypatch.setenv("SALT_RUN_DIR", str(tmp_path / "given"))
    assert runfolder.choose_run_dir(tmp_path, "DIPS") == tmp_path / "given"


def test_srun_with_several_tasks_names_the_folder_by_the_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    assert runfolder.choose_run_dir(tmp_path, "GN2") == tmp_path / "GN2_job777"


def save_checkpoint(path, value: float) -> None:
    """A small checkpoint with the parts a resume needs."""
    state = {"w": torch.full((4,), value)}
    torch.save({"state_dict": state, "loops": {}, "optimizer_states": []}, path)


def test_auto_resume_takes_the_newest_checkpoint_once_for_all_ranks(tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    assert runfolder.auto_resume_checkpoint(tmp_path) is None
    assert os.environ["SALT_AUTO_CKPT"] == ""  # the ranks started later must not look again
    save_checkpoint(ckpts / "epoch=000-val_loss=1.00000.ckpt", 0.0)
    assert runfolder.auto_resume_checkpoint(tmp_path) is None
    del os.environ["SALT_AUTO_CKPT"]
    time.sleep(0.01)
    newest = ckpts / "interrupted-epoch=001-step=7.ckpt"
    save_checkpoint(newest, 1.0)
    assert runfolder.auto_resume_checkpoint(tmp_path) == str(newest)
    assert os.environ["SALT_AUTO_CKPT"] == str(newest)


def test_auto_resume_skips_checkpoints_that_do_not_load_and_says_why(tmp_path, caplog):
    """A requeued job after a crash mid-write: the newest file is cut short, the one before is
    whole. (salt writes atomically; files of older versions or other tools may still be cut.)"""
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    good = ckpts / "epoch=000-val_loss=1.00000.ckpt"
    save_checkpoint(good, 0.0)
    time.sleep(0.01)
    truncated = ckpts / "epoch=001-val_loss=0.90000.ckpt"
    save_checkpoint(truncated, 1.0)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    time.sleep(0.01)
    (ckpts / "not_lightning.ckpt").write_bytes(b"")  # empty: a write that never got going
    leftover = ckpts / ".epoch=002-val_loss=0.80000.ckpt.4242.tmp"  # a write cut short
    leftover.write_bytes(data[:100])
    with caplog.at_level("WARNING"):
        assert runfolder.auto_resume_checkpoint(tmp_path) == str(good)
    skipped = [r.getMessage() for r in caplog.records if "skipping checkpoint" in r.getMessage()]
    assert len(skipped) == 2
    assert any(str(truncated) in m and "does not load" in m for m in skipped)
    assert not leftover.exists()
    assert any(str(leftover) in r.getMessage() for r in caplog.records)


def test_an_earlier_metrics_file_is_kept(tmp_path):
    runfolder.keep_previous_metrics(tmp_path)  # nothing to keep
    (tmp_path / "metrics.csv").write_text("first")
    runfolder.keep_previous_metrics(tmp_path)
    (tmp_path / "metrics.csv").write_text("second")
    runfolder.keep_previous_metrics(tmp_path)
    assert (tmp_path / "metrics-1.csv").read_text() == "first"
    assert (tmp_path / "metrics-2.csv").read_text() == "second"
    assert not (tmp_path / "metrics.csv").exists()
