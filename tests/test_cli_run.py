"""The life of a run through the real `salt` command: help, config errors, fast_dev_run, batch
limits, the run folder, reproducibility, resuming, the evaluation subcommands, loggers and trainer
options. One small GN2 training (2 epochs, dropout 0.1) is shared by most tests; its encoder
has one layer (`ONE_LAYER`), as these tests are of the command, not of the model's depth.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (LZ4)
import pytest
import torch
import yaml

from salt import helpcache
from salt.cli import cpu_has_native_bf16
from salt.gitcheck import code_repo
from tests.cli_support import probe_args, probe_env, read_probe
from tests.conftest import data_args, only_run_dir, run_dirs, run_salt, run_salt_many

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

SMALL = ["--data.num_train", "500", "--data.num_val", "250", "--data.batch_size", "250"]
ONE_LAYER = ["--model.model.init_args.encoder.init_args.num_layers", "1"]
CKPT_NAME = re.compile(r"^epoch=(\d{3})-val_loss=(\d+\.\d{5})\.ckpt$")


def fit(demo, config: str = "GN2", *extra: str) -> list[str]:
    return ["fit", "--config", f"configs/{config}.yaml", *data_args(demo), "--force", *extra]


def ckpt(run_dir: Path, epoch: int) -> Path:
    (path,) = (run_dir / "ckpts").glob(f"epoch={epoch:03d}-*.ckpt")
    return path


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = load(a)["state_dict"], load(b)["state_dict"]
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ between {a} and {b}: {different[:5]}"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def gn2_run(demo, tmp_path_factory) -> dict:
    """A 2-epoch GN2 training (2 steps per epoch); its cwd, run folder and output."""
    cwd = tmp_path_factory.mktemp("gn2_run")
    # dropout on: a resume is only exact if the dropout RNG comes back from the checkpoint
    dropout = ["--model.model.init_args.encoder.init_args.dropout", "0.1"]
    # stdout is a pipe: progress comes as lines, here one after every batch (0.0001 min)
    lines = ["--progress_minutes", "0.0001"]
    result = run_salt(
        fit(demo, "GN2", *SMALL, *ONE_LAYER, *dropout, *lines, "--trainer.max_epochs", "2"), cwd
    )
    run_dir = only_run_dir(cwd)
    return {"cwd": cwd, "run_dir": run_dir, "result": result}


# ----------------------------------------------------------------------------- help
def test_help_lists_options_and_the_second_call_comes_from_the_cache(tmp_path):
    start = time.perf_counter()
    first = run_salt(["fit", "--help"], tmp_path)
    middle = time.perf_counter()
    (cached,) = (tmp_path / ".cache" / "salt" / "help").glob("*.txt")
    # mark the cached text: the second call must print it rather than render the help again
    cached.write_text(cached.read_text() + "MARK-FROM-CACHE\n")
    second = run_salt(["fit", "--help"], tmp_path)
    end = time.perf_counter()
    print(f"salt fit --help: first {middle - start:.2f} s, second {end - middle:.2f} s")
    for option, help_text in [
        ("--force", "uncommitted changes"),
        ("--tag", "git tag"),
        ("--data.num_workers", "Dataloader worker processes"),
        ("--data.move_files_temp", "Copy the input files"),
        ("--trainer.max_epochs", "max_epochs"),
        ("--model.lrs_config", "one-cycle"),
    ]:
        assert option in first.stdout
        assert help_text in first.stdout, help_text
    assert "MARK-FROM-CACHE" not in first.stdout
    assert second.stdout == first.stdout + "MARK-FROM-CACHE\n"


def test_help_cache_key_follows_the_config_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "mine.yaml"
    config.write_text("trainer:\n  max_epochs: 3\n")
    argv = ["fit", "--config", "mine.yaml", "--help"]
    key = helpcache._key(argv)
    assert helpcache._key(["fit", "--config=mine.yaml", "--help"]) != helpcache._key(["fit"])
    config.write_text("trainer:\n  max_epochs: 4\n")
    assert helpcache._key(argv) != key
    other = tmp_path / "sub"
    other.mkdir()
    (other / "mine.yaml").write_text("trainer:\n  max_epochs: 4\n")
    monkeypatch.chdir(other)
    assert helpcache._key(argv) != key  # the same name in another folder is another file


# ----------------------------------------------------------------------------- parsing
NESTED = "model.model.init_args.encoder.init_args.num_layer"
MISSPELT = "Did you mean"
#: command lines that stop while they are read, and what salt must say (one process for all)
PARSE_CASES = {
    "unknown-key": (["--trainer.max_epoch", "1"], "Did you mean: --trainer.max_epochs"),
    "wrong-type": (["--data.batch_size", "many"], 'Parser key "data.batch_size"'),
    "missing-variable": (["--data.variables.tracks", "[d0,not_a_variable]"], "not_a_variable"),
    "unknown-key-in-file": (
        ["--config", "bad.yaml"],
        "trainer.max_epoch (in bad.yaml) is not an option. Did you mean: trainer.max_epochs?",
    ),
    "typo-in-file": (
        ["--config", "typo.yaml"],
        "data.batch_sise (in typo.yaml) is not an option. Did you mean: data.batch_size?",
    ),
    "nested-typo": (
        [f"--{NESTED}", "3"],
        f"{NESTED} (command line): salt.models.Transformer has no option 'num_layer'. Did you "
        "mean: num_layers?",
    ),
    "nested-typo-in-file": (
        ["--config", "nested.yaml"],
        f"{NESTED} (in nested.yaml): salt.models.Transformer has no option 'num_layer'. Did "
        "you mean: num_layers?",
    ),
}


@pytest.fixture(scope="module")
def parsed(demo, tmp_path_factory) -> dict:
    """Every PARSE_CASES command line and the config-merging one, run in one salt process."""
    cwd = tmp_path_factory.mktemp("parse")
    (cwd / "bad.yaml").write_text("trainer:\n  max_epoch: 3\n")
    (cwd / "typo.yaml").write_text("data:\n  batch_sise: 3\n")
    nested = "model:\n  model:\n    init_args:\n      encoder:\n        init_args:\n"
    (cwd / "nested.yaml").write_text(nested + "          num_layer: 3\n")
    (cwd / "later.yaml").write_text("data:\n  batch_size: 9\ntrainer:\n  max_epochs: 3\n")
    commands = {case: fit(demo, "GN2", *args) for case, (args, _) in PARSE_CASES.items()}
    commands["merged"] = [
        "fit", "--config", "configs/DL1.yaml", "--data.batch_size", "7", "--config",
        "later.yaml", "--trainer.max_epochs", "5", "--print_config",
    ]  # fmt: skip
    results = run_salt_many(list(commands.values()), cwd)
    return {"cwd": cwd, **dict(zip(commands, results))}


def test_base_is_merged_first_then_configs_and_arguments_in_order(parsed):
    result = parsed["merged"]
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["seed_everything"] == 42  # from base.yaml, never named
    assert config["data"]["num_workers"] == 0  # base.yaml
    assert config["name"] == "DL1"  # the model config
    assert config["data"]["batch_size"] == 9  # a later config overrides an earlier argument
    assert config["trainer"]["max_epochs"] == 5  # a later argument overrides a config


@pytest.mark.parametrize("case", list(PARSE_CASES))
def test_config_error_stops_before_training_and_names_it(parsed, case):
    result, expected = parsed[case], PARSE_CASES[case][1]
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (parsed["cwd"] / "logs").exists()
    if MISSPELT in expected:  # a typo: usage, tip and one or two lines, no Union dump
        assert len(result.stderr.strip().splitlines()) <= 4, result.stderr
        assert "Union" not in result.stderr


def test_cpu_bf16_detection_reads_the_flags():
    assert not cpu_has_native_bf16("processor : 0\nflags\t\t: fpu sse avx2 fma\n")
    assert cpu_has_native_bf16("flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16("flags\t\t: fpu avx2 amx_bf16 amx_tile\n")


# ----------------------------------------------------------------------------- dev runs
def test_fast_dev_run_runs_two_batches_and_writes_nothing(demo, tmp_path):
    cwd, probe = tmp_path / "cwd", tmp_path / "probe"
    cwd.mkdir()
    (cwd / "untouched.txt").write_text("x")
    before = sorted(cwd.rglob("*"))
    run_salt(
        fit(demo, "GN2", "--data.num_val", "500", "--data.batch_size", "250", *ONE_LAYER,
            "--trainer.fast_dev_run", "2", *probe_args(probe)),
        cwd, env={**probe_env(), "XDG_CACHE_HOME": str(tmp_path / "cache")},  # matplotlib's
    )  # fmt: skip
    assert sorted(cwd.rglob("*")) == before
    records = read_probe(probe)[0]
    assert sum(r["event"] == "train_batch" for r in records) == 2
    assert sum(r["event"] == "val_batch" for r in records) == 2


@pytest.mark.parametrize(("limit", "expected"), [("1", 1), ("0.1", 2)])
def test_limit_val_batches_counts_batches_or_a_fraction(demo, tmp_path, limit, expected):
    """20 validation batches of 30 jets: `1` is one batch, `0.1` a tenth."""
    probe = tmp_path / "probe"
    run_salt(
        fit(demo, "DL1", "--data.num_train", "600", "--data.num_val", "600",
            "--data.batch_size", "30", "--trainer.limit_train_batches", "2",
            "--trainer.max_epochs", "1", "--trainer.limit_val_batches", limit,
            *probe_args(probe)),
        tmp_path, env=probe_env(),
    )  # fmt: skip
    records = read_probe(probe)[0]
    assert sum(r["event"] == "val_batch" for r in records) == expected
    assert sum(r["event"] == "train_batch" for r in records) == 2
    # metadata.yaml: the jets in the files, those selected (num_*) and those an epoch used
    data = yaml.safe_load((only_run_dir(tmp_path) / "metadata.yaml").read_text())["data"]
    assert data["train"]["jets_in_files"] == 6000 and data["train"]["num_jets"] == 600
    assert data["train"]["batches_per_epoch"] == 2 and data["train"]["jets_per_epoch"] == 60
    assert data["val"]["batches_per_epoch"] == expected
    assert data["val"]["jets_per_epoch"] == 30 * expected


def test_trainer_options_and_precision_warnings(demo, tmp_path):
    """Options reach Lightning, and each warning is said once; hints that do not apply to a salt
    run are not said at all (Lightning's `srun` hint, torch's worker count, FLOPs of 0)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")  # on PATH, as on a Slurm login node
    (fake_bin / "srun").chmod(0o755)
    workers = str(len(os.sched_getaffinity(0)) + 1)  # more than this process may use
    result = run_salt(
        fit(demo, "DL1", *SMALL, "--trainer.fast_dev_run", "1", "--trainer.accelerator", "cpu",
            "--trainer.devices", "1", "--trainer.precision", "bf16-mixed",
            "--trainer.gradient_clip_val", "1.0", "--trainer.detect_anomaly", "true",
            "--data.num_workers", workers),
        tmp_path, env={"PATH": f"{fake_bin}:{os.environ['PATH']}"},
    )  # fmt: skip
    slow = "emulated: training runs about 10x slower"
    assert (slow in result.stderr) == (not cpu_has_native_bf16())
    assert re.search(r"^epoch 1/1  done .* train/loss", result.stdout, re.M)  # progress line
    assert result.stderr.count(f"data.num_workers = {workers}") == 1
    assert "DataLoader will create" not in result.stderr  # torch's version of the same fact
    assert "srun" not in result.stderr
    assert "Trainable params" in result.stdout and "FLOPs" not in result.stdout
    result = run_salt(
        fit(demo, "DL1", *SMALL, "--trainer.fast_dev_run", "1", "--trainer.precision", "16-mixed",
            "--trainer.enable_progress_bar", "false"),
        tmp_path,
    )  # fmt: skip
    assert "precision 16-mixed can overflow" in result.stderr
    assert "bf16-mixed" in result.stderr
    assert "epoch 1/1" not in result.stdout  # base.yaml's progress bar dropped, not refused


def test_comet_without_credentials_stops_before_training(demo, tmp_path):
    result = run_salt(
        fit(demo, "DL1", "--config", "configs/comet.yaml", *SMALL),
        tmp_path, check=False, env={"COMET_API_KEY": "a-key", "COMET_WORKSPACE": ""},
    )  # fmt: skip
    assert result.returncode != 0
    assert "COMET_WORKSPACE" in result.stderr
    assert "COMET_API_KEY" not in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()


def test_comet_config_adds_comet_and_keeps_the_offline_logger():
    config = yaml.safe_load((Path(__file__).parent.parent / "salt/configs/comet.yaml").read_text())
    paths = [logger["class_path"] for logger in config["trainer"]["logger"]]
    assert paths == ["lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.CometLogger"]


# ----------------------------------------------------------------------------- the run folder
def test_run_folder_holds_config_metadata_dicts_and_checkpoints(demo, gn2_run):
    run_dir, result = gn2_run["run_dir"], gn2_run["result"]
    assert re.fullmatch(r"GN2_\d{8}-\d{6}", run_dir.name)
    assert f"Run folder: logs/{run_dir.name}" in result.stdout
    assert "Trainable params" in result.stdout  # the model summary
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()
    # stdout is a pipe: lines, not a bar; one after each batch (--progress_minutes) and epoch
    assert "\r" not in result.stdout and "Validation" not in result.stdout
    clock = r"\d+:\d\d:\d\d"
    for epoch in (1, 2):
        for batch in (1, 2):
            assert re.search(
                rf"^epoch {epoch}/2  batch {batch}/2 +elapsed {clock}  ETA {clock}  "
                r"[\d,]+ jets/s  train/loss [\d.]+",
                result.stdout, re.M,
            ), result.stdout  # fmt: skip
        assert re.search(
            rf"^epoch {epoch}/2  done +elapsed {clock}  ETA {clock}  [\d,]+ jets/s  "
            r"train/loss [\d.]+  val/loss [\d.]+$",
            result.stdout, re.M,
        ), result.stdout  # fmt: skip
    assert re.search(rf"^epoch 2/2  done +elapsed {clock}  ETA 0:00:00 ", result.stdout, re.M)

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["name"] == "GN2"
    assert config["ckpt_path"] is None
    assert config["trainer"]["default_root_dir"] == "logs"
    assert config["trainer"]["max_epochs"] == 2
    assert config["data"]["num_train"] == 500
    assert config["model"]["model"]["init_args"]["encoder"]["init_args"]["dropout"] == 0.1

    meta = yaml.safe_load((run_dir / "metadata.yaml").read_text())
    repo = code_repo()
    if repo is not None:
        head = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=repo, text=True)
        assert meta["git_hash"] == head.strip()
    else:
        assert "installed package" in meta["git"]
    assert meta["host"] == socket.gethostname()
    assert meta["command"].startswith("salt fit --config ")
    assert meta["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert meta["versions"]["torch"] == torch.__version__
    assert {"salt", "lightning"} <= meta["versions"].keys()
    assert meta["resumed_from"] is None
    for split, jets, in_file, batches in [("train", 500, 6000, 2), ("val", 250, 600, 1)]:
        (entry,) = meta["data"][split]["files"]
        assert entry["path"] == str(demo[split].resolve())
        assert entry["bytes"] == demo[split].stat().st_size
        assert entry["jets"] == meta["data"][split]["jets_in_files"] == in_file
        assert meta["data"][split]["num_jets"] == jets  # --data.num_<split>
        assert meta["data"][split]["jets_per_epoch"] == jets
        assert meta["data"][split]["batches_per_epoch"] == batches

    for name in ("norm_dict", "class_dict"):
        assert (run_dir / f"{name}.yaml").read_bytes() == demo[name].read_bytes()

    names = sorted(p.name for p in (run_dir / "ckpts").iterdir())
    assert len(names) == 2
    with (run_dir / "metrics.csv").open() as f:
        val_losses = [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]
    for epoch, (name, loss) in enumerate(zip(names, val_losses)):
        match = CKPT_NAME.match(name)
        assert match, name
        assert int(match.group(1)) == epoch
        assert float(match.group(2)) == pytest.approx(loss, abs=1e-5)


def test_salt_test_takes_logs_latest_and_can_be_repeated(gn2_run):
    """The README's first command ends in `salt test logs/latest`: run twice, it tests the
    newest run again, says once that it overwrites, and prints the report once each time."""
    cwd, run_dir = gn2_run["cwd"], gn2_run["run_dir"]
    outputs = []
    for _ in range(2):
        result = run_salt(["test", "logs/latest"], cwd)
        outputs.append(result.stdout + result.stderr)
        assert f"Testing checkpoint {best(run_dir)}" in result.stdout  # the run, not the link
        assert result.stdout.count("# Evaluation report") == 1
        assert "NumExpr" not in result.stderr  # numexpr's INFO line
    assert "Overwriting" not in outputs[0]
    assert outputs[1].count("Overwriting") == 1
    (predictions,) = (run_dir / "ckpts").glob("*__test_ttbar.h5")
    assert predictions.name == f"{best(run_dir).stem}__test_ttbar.h5"


def test_config_yaml_reproduces_the_run_exactly(gn2_run):
    """Seeds and the saved config: a second training from config.yaml ends with the same weights."""
    cwd, first = gn2_run["cwd"], gn2_run["run_dir"]
    run_salt(["fit", "--config", str(first / "config.yaml"), "--force"], cwd)
    second = next(d for d in run_dirs(cwd) if d not in (first,) and not _resumed(d))
    assert second.parent == first.parent  # a sibling, not a folder inside the first run
    assert_same_weights(ckpt(first, 1), ckpt(second, 1))


def _resumed(run_dir: Path) -> bool:
    meta = yaml.safe_load((run_dir / "metadata.yaml").read_text())
    return meta.get("resumed_from") is not None


def test_resume_from_the_first_epoch_ends_with_the_uninterrupted_weights(gn2_run):
    """Model, optimiser, schedule, epoch counter and every RNG (dropout) come back from the ckpt."""
    cwd, first = gn2_run["cwd"], gn2_run["run_dir"]
    start = ckpt(first, 0)
    before = set(run_dirs(cwd))
    result = run_salt(
        ["fit", "--config", str(first / "config.yaml"), "--ckpt_path", str(start), "--force"], cwd
    )
    (resumed,) = set(run_dirs(cwd)) - before
    assert f"Resuming from {start}" in result.stdout
    assert "dirpath has changed" not in result.stderr  # a resume has its own folder, by design
    # the epoch count continues: only the second epoch is trained and saved
    assert [p.name[:9] for p in (resumed / "ckpts").iterdir()] == ["epoch=001"]
    assert_same_weights(ckpt(first, 1), ckpt(resumed, 1))
    a, b = load(ckpt(first, 1)), load(ckpt(resumed, 1))
    assert a["global_step"] == b["global_step"] == 4
    assert a["lr_schedulers"] == b["lr_schedulers"]
    state_a, state_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert all(torch.equal(state_a[k]["exp_avg"], state_b[k]["exp_avg"]) for k in state_a)
    meta = yaml.safe_load((resumed / "metadata.yaml").read_text())
    assert meta["resumed_from"] == str(start.resolve())
    # training moved the weights: the comparison above is not between two untouched models
    w0, w1 = load(start)["state_dict"], a["state_dict"]
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


def test_resume_with_more_epochs_resizes_the_schedule(gn2_run):
    cwd, first = gn2_run["cwd"], gn2_run["run_dir"]
    before = set(run_dirs(cwd))
    result = run_salt(
        ["fit", "--config", str(first / "config.yaml"), "--ckpt_path", str(ckpt(first, 1)),
         "--trainer.max_epochs", "3", "--force"],
        cwd,
    )  # fmt: skip
    (resumed,) = set(run_dirs(cwd)) - before
    assert "learning-rate schedule resized from 4 to 6 steps" in result.stderr
    state = load(ckpt(resumed, 2))
    assert state["global_step"] == 6
    (schedule,) = state["lr_schedulers"]
    assert schedule["total_steps"] == 6
    assert schedule["last_epoch"] == 6


# ----------------------------------------------------------------------------- evaluation
def best(run_dir: Path) -> Path:
    return min((run_dir / "ckpts").glob("epoch=*.ckpt"), key=lambda p: CKPT_NAME.match(p.name)[2])


def test_salt_test_uses_the_best_checkpoint_on_one_device(gn2_run):
    run_dir = gn2_run["run_dir"]
    metrics_before = sha(run_dir / "metrics.csv")
    result = run_salt(
        ["test", "--config", str(run_dir / "config.yaml"), "--trainer.accelerator", "cpu",
         "--trainer.devices", "2"],
        gn2_run["cwd"],
    )  # fmt: skip
    assert "Setting --trainer.devices=1" in result.stdout
    assert f"Testing checkpoint {best(run_dir)}" in result.stdout
    (predictions,) = (run_dir / "ckpts").glob("*__test_ttbar.h5")
    assert predictions.name == f"{best(run_dir).stem}__test_ttbar.h5"
    with h5py.File(predictions) as f:
        jets = f["jets"][:]
    assert len(jets) == 600
    assert {"GN2_pb", "GN2_pc", "GN2_pu"} <= set(jets.dtype.names)
    assert sha(run_dir / "metrics.csv") == metrics_before


def test_salt_validate_and_predict_use_the_best_checkpoint(gn2_run):
    run_dir = gn2_run["run_dir"]
    metrics_before = sha(run_dir / "metrics.csv")
    config = ["--config", str(run_dir / "config.yaml")]
    result = run_salt(["validate", *config], gn2_run["cwd"])
    assert f"Validating checkpoint {best(run_dir)}" in result.stdout
    assert "val/loss" in result.stdout
    result = run_salt(["predict", *config], gn2_run["cwd"])
    assert f"Predicting checkpoint {best(run_dir)}" in result.stdout
    # evaluation leaves the run's logs alone
    assert sha(run_dir / "metrics.csv") == metrics_before


def test_a_pattern_that_matches_two_runs_is_refused_with_both_names(gn2_run):
    """`salt test --config logs/GN2_*/config.yaml` once there are two runs (the README's first
    command run twice, before `logs/latest`): say which runs matched, not `unrecognized`."""
    cwd = gn2_run["cwd"]
    a, b = run_dirs(cwd)[:2]
    for args in (["--config", str(a / "config.yaml"), str(b / "config.yaml")], [str(a), str(b)]):
        result = run_salt(["test", *args], cwd, check=False)
        assert result.returncode == 2
        assert str(a) in result.stderr and str(b) in result.stderr
        assert "salt test logs/latest" in result.stderr
        assert "unrecognized" not in result.stderr and "Traceback" not in result.stderr
    result = run_salt(["test", "logs/no_such_run"], cwd, check=False)
    assert result.returncode == 2 and "no such run folder" in result.stderr
