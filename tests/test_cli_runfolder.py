"""Where a run's folder is and what a restart finds there (salt.callbacks.runfolder), in-process."""

from __future__ import annotations

import os
import re
import time

import pytest

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


def test_auto_resume_takes_the_newest_checkpoint_once_for_all_ranks(tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    assert runfolder.auto_resume_checkpoint(tmp_path) is None
    assert os.environ["SALT_AUTO_CKPT"] == ""  # the ranks started later must not look again
    (ckpts / "epoch=000-val_loss=1.00000.ckpt").write_text("a")
    assert runfolder.auto_resume_checkpoint(tmp_path) is None
    del os.environ["SALT_AUTO_CKPT"]
    time.sleep(0.01)
    newest = ckpts / "interrupted-epoch=001-step=7.ckpt"
    newest.write_text("b")
    assert runfolder.auto_resume_checkpoint(tmp_path) == str(newest)
    assert os.environ["SALT_AUTO_CKPT"] == str(newest)


def test_an_earlier_metrics_file_is_kept(tmp_path):
    runfolder.keep_previous_metrics(tmp_path)  # nothing to keep
    (tmp_path / "metrics.csv").write_text("first")
    runfolder.keep_previous_metrics(tmp_path)
    (tmp_path / "metrics.csv").write_text("second")
    runfolder.keep_previous_metrics(tmp_path)
    assert (tmp_path / "metrics-1.csv").read_text() == "first"
    assert (tmp_path / "metrics-2.csv").read_text() == "second"
    assert not (tmp_path / "metrics.csv").exists()
