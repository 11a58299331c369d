"""The batch scripts in submit/, without a batch system.

Slurm's commands are replaced by small fakes on PATH: `sbatch` records what it was asked, `srun`
runs its command here, `scontrol` records the requeue. The job part of submit_slurm.sh then runs a
real `salt fit`, which gets Slurm's time-limit signal (SIGUSR1), saves a checkpoint and requeues
the job; the job started again finds its run folder by the job id and resumes.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cli_support import TESTS, probe_args, read_probe, train_batches, wait_for_batches
from tests.conftest import data_args, python_env, run_dirs

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

REPO = TESTS.parent
SLURM = REPO / "submit" / "submit_slurm.sh"
CONDOR_SUB = REPO / "submit" / "submit_htcondor.sub"
CONDOR_RUN = REPO / "submit" / "run_htcondor.sh"
VENV = Path(sys.prefix)


@pytest.fixture
def fakes(tmp_path) -> dict:
    """A bin folder with fake sbatch, srun and scontrol; what sbatch and scontrol were given."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    scripts = {
        # what sbatch was asked, and with which environment for the job
        "sbatch": f'printf "%s\\n" "$@" > {calls}.sbatch; echo "$SALT_CONDA" > {calls}.conda; '
        "echo 'Submitted batch job 4242'",
        # run the step's command here, without srun's own options
        "srun": 'while [ "${1#-}" != "$1" ]; do shift; done; exec "$@"',
        "scontrol": f'echo "$@" >> {calls}.scontrol',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return {"bin": bin_dir, "calls": calls}


def warm_venv(folder: Path) -> tuple[Path, dict[str, str]]:
    """An environment for `--venv` whose activation activates this one and puts first on PATH a
    `salt` started by the test server (tests/warm_python.py); the variables the job needs for
    it. For the requeue test, whose subject is the job, not Python's start-up: the activation of
    the real environment is the HTCondor wrapper's test."""
    launcher = python_env()
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text(f'. "{VENV}/bin/activate"\nPATH="{bin_dir}:$PATH"\n')
    salt = bin_dir / "salt"
    salt.write_text(f'#!/bin/sh\nexec "{launcher["PYTHON"]}" -m salt.main "$@"\n')
    salt.chmod(0o755)
    return folder, launcher


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SALT_"))}
    return {**env, **extra}


@pytest.mark.parametrize("script", [SLURM, CONDOR_RUN], ids=lambda p: p.name)
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert os.access(script, os.X_OK)


def test_slurm_help_lists_the_options():
    out = subprocess.run(
        [str(SLURM), "--help"], env=clean_env(), capture_output=True, text=True, check=True
    ).stdout
    for option in ("--nodes", "--gpus-per-node", "--cpus-per-task", "--mem", "--time",
                   "--partition", "--venv", "--conda", "--dry-run"):  # fmt: skip
        assert option in out


def test_slurm_dry_run_prints_the_sbatch_command(tmp_path):
    result = subprocess.run(
        [str(SLURM), "--nodes", "2", "--gpus-per-node", "4", "--cpus-per-task", "8",
         "--mem", "200G", "--time", "12:00:00", "--partition", "gpu", "--venv", str(VENV),
         "--sbatch", "--qos=long", "--dry-run", "--", "fit", "--config", "configs/GN2.yaml"],
        env=clean_env(), cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    words = shlex.split(result.stdout)
    assert words[0] == f"SALT_VENV={VENV.resolve()}"
    assert words[1] == "sbatch"
    for option in ("--nodes=2", "--ntasks-per-node=4", "--gres=gpu:4", "--cpus-per-task=8",
                   "--mem=200G", "--time=12:00:00", "--partition=gpu", "--signal=USR1@120",
                   "--requeue", "--qos=long"):  # fmt: skip
        assert option in words
    script = words.index(str(SLURM))
    assert words[script + 1 :] == ["fit", "--config", "configs/GN2.yaml"]
    assert not (tmp_path / "logs").exists()  # a dry run makes nothing


def test_slurm_submits_through_sbatch(tmp_path, fakes):
    env = clean_env(PATH=f"{fakes['bin']}:{os.environ['PATH']}")
    result = subprocess.run(
        [str(SLURM), "--gpus-per-node", "0", "--conda", "salt-env", "--", "fit", "--config",
         "configs/DIPS.yaml"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "Submitted batch job 4242" in result.stdout
    args = (fakes["calls"].with_suffix(".sbatch")).read_text().splitlines()
    assert "--gres=none" in args and "--ntasks-per-node=1" in args
    assert args[args.index(str(SLURM)) + 1 :] == ["fit", "--config", "configs/DIPS.yaml"]
    assert fakes["calls"].with_suffix(".conda").read_text().strip() == "salt-env"
    assert (tmp_path / "logs" / "slurm").is_dir()  # where --output points


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "two", "--", "fit"], "--nodes must be a whole number"),
        (["--venv", "/no/such/venv", "--", "fit"], "no bin/activate"),
        (["--gpus", "4", "--", "fit"], "unknown option '--gpus'"),
        (["--nodes", "1"], "no salt arguments"),
    ],
)
def test_slurm_refuses_bad_options(tmp_path, args, message):
    result = subprocess.run(
        [str(SLURM), *args], env=clean_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_slurm_job_requeues_on_the_time_limit_signal_and_resumes(demo, tmp_path, fakes):
    cwd, probe = tmp_path / "cwd", tmp_path / "probe"
    cwd.mkdir()
    venv, launcher = warm_venv(tmp_path / "venv")
    env = clean_env(
        **launcher,
        PATH=f"{fakes['bin']}:{os.environ['PATH']}",
        PYTHONPATH=str(TESTS),
        PYTHONUNBUFFERED="1",
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        SLURM_JOB_ID="4242",
        SLURM_JOB_NUM_NODES="1",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_NTASKS="1",
        SLURM_SUBMIT_DIR=str(cwd),
        SALT_VENV=str(venv),
    )
    salt_args = [
        "fit", "--config", "configs/DL1.yaml", *data_args(demo), "--force",
        "--data.batch_size", "100", "--data.num_val", "300", "--trainer.max_epochs", "1",
        "--trainer.enable_model_summary", "false", *probe_args(probe, delay=0.05),
    ]  # fmt: skip
    # the batch script, as slurmd starts it (from elsewhere: it must cd to the submit folder)
    job = subprocess.Popen(
        ["bash", str(SLURM), *salt_args], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_batches(job, probe, 5)
        # `exec srun` and the fake srun's `exec`: the job's process is salt itself now (here
        # its launcher, which passes the signal on)
        job.send_signal(signal.SIGUSR1)  # what --signal=USR1@120 sends to the job step
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 128 + signal.SIGUSR1, err[-3000:]
    assert "stopped by SIGUSR1 (Slurm time limit)" in err
    assert "requeued Slurm job 4242" in err
    assert fakes["calls"].with_suffix(".scontrol").read_text().split() == ["requeue", "4242"]
    run_dir = cwd / "logs" / "DL1_job4242"
    (interrupted,) = (run_dir / "ckpts").glob("interrupted-epoch=000-step=*.ckpt")
    step = int(re.search(r"step=(\d+)", interrupted.name).group(1))

    # Slurm starts the requeued job: same id, same script and arguments, one restart more
    restart = subprocess.run(
        ["bash", str(SLURM), *salt_args], env={**env, "SLURM_RESTART_COUNT": "1"},
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert restart.returncode == 0, restart.stderr[-3000:]
    assert f"Resuming from {interrupted.relative_to(cwd)} (the newest checkpoint" in restart.stdout
    assert [p.name for p in run_dirs(cwd)] == ["DL1_job4242"]
    assert list((run_dir / "ckpts").glob("epoch=000-*.ckpt"))
    meta = yaml.safe_load((run_dir / "metadata.yaml").read_text())
    assert meta["resumed_from"] == str(interrupted.resolve())
    assert meta["slurm"] == {"job_id": "4242", "restart_count": 1, "nodes": None}
    assert len(meta["previous_starts"]) == 1
    assert meta["previous_starts"][0]["resumed_from"] is None
    assert len(train_batches(read_probe(probe)[0])) > step


def test_htcondor_submit_file_runs_the_wrapper_with_a_stable_run_id():
    settings = {}
    for line in CONDOR_SUB.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            settings[key.strip().lower()] = value.strip()
    assert (REPO / settings["executable"]) == CONDOR_RUN
    assert "SALT_RUN_ID=condor$(Cluster).$(Process)" in settings["environment"]
    assert settings["kill_sig"] == "SIGTERM"
    assert settings["retry_until"] == f"ExitCode != {128 + signal.SIGTERM}"


def test_htcondor_wrapper_activates_the_environment_and_runs_salt(tmp_path):
    result = subprocess.run(
        [str(CONDOR_RUN), "fit", "--help"],
        env=clean_env(SALT_VENV=str(VENV), SALT_RUN_ID="condor7.0", SALT_WORKDIR=str(tmp_path),
                      XDG_CACHE_HOME=str(tmp_path / "cache"), PATH="/usr/bin:/bin"),
        cwd="/", capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"run id condor7.0, in {tmp_path}" in result.stdout
    assert "--trainer.max_epochs" in result.stdout
