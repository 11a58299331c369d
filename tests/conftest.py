"""Shared fixtures: generated UPP-format demo data, runs trained once, and running `salt`.

* `demo`: the demo files (6000 training jets, 600 validation and 600 test jets).
* `trained_run(config)`: the run folder of a `salt fit` of a shipped config on the demo files,
  trained once per test session (`TRAINING`: 3000 jets, batches of 100, 2 epochs) and handed
  to each caller as a fresh copy, so that a test may test, export or resume it freely. Used by
  the shipped-config, prediction, export and report tests; use it for any test that needs a
  trained model and does not care how it was trained.
* `run_salt(args, cwd)`: `salt ARGS` in a subprocess, as a user runs it.
* `run_dirs(cwd)`, `only_run_dir(cwd)`: the run folders under `cwd/logs` (not `logs/latest`,
  the link to the newest).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from salt.demo import write_demo_dataset

# Under pytest-xdist (`-n auto`, see pyproject.toml) every worker runs its own torch, and its
# `salt` subprocesses theirs: the cores are shared out between the workers, or their thread
# pools fight over them (2 workers x 2 threads on 2 cores: 619 s and 1.7x the CPU time of the
# serial run; 2 x 1 thread: 385 s against 676 s serially). Set before anything imports torch
# (neither pytest nor salt.demo does); the subprocesses inherit it.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))

REPO = Path(__file__).resolve().parent.parent
MPL_CACHE = Path(tempfile.gettempdir()) / f"salt-tests-matplotlib-{os.getuid()}"
CONFIGS = REPO / "salt" / "configs"
SHIPPED_CONFIGS = ["GN2", "GN1", "DIPS", "DL1", "regression"]

#: `data.mf_config` of the demo files' `truth_hadrons`: b and c hadrons matched to tracks
#: through their parent barcode
DEMO_MF_CONFIG = {
    "object": {
        "name": "truth_hadrons",
        "id_label": "barcode",
        "class_label": "flavour",
        "object_classes": {
            "b": {"raw": 5, "mapped": 0},
            "c": {"raw": 4, "mapped": 1},
            "null": {"raw": -1, "mapped": 2},
        },
    },
    "constituent": {"name": "tracks", "id_label": "ftagTruthParentBarcode"},
}


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> dict[str, Path]:
    """Demo files: 6000 training jets, 600 validation and 600 test jets (seed 1)."""
    return write_demo_dataset(tmp_path_factory.mktemp("demo"), num_jets=6000, seed=1)


def data_args(demo: dict[str, Path]) -> list[str]:
    """Command-line arguments pointing `salt` at the demo files."""
    return [
        "--data.train_file",
        str(demo["train"]),
        "--data.val_file",
        str(demo["val"]),
        "--data.test_file",
        str(demo["test"]),
        "--data.norm_dict",
        str(demo["norm_dict"]),
        "--data.class_dict",
        str(demo["class_dict"]),
    ]


def salt_env(cwd: Path, env: dict | None = None) -> dict[str, str]:
    """The environment of a `salt` process in the tests."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    # keep the user's help cache out of the tests
    full_env.setdefault("XDG_CACHE_HOME", str(Path(cwd) / ".cache"))
    # but share matplotlib's font cache (torchmetrics imports matplotlib): building it anew
    # costs every salt process about 0.7 s
    full_env.setdefault("MPLCONFIGDIR", str(MPL_CACHE))
    return full_env


def run_salt(
    args: list[str],
    cwd: Path,
    check: bool = True,
    timeout: float = 600,
    env: dict | None = None,
    command: str = "salt.main",
    **popen_kwargs,
) -> subprocess.CompletedProcess:
    """Run `python -m salt.main ARGS` in `cwd`, as the `salt` console script does.

    `popen_kwargs` go to subprocess.run (e.g. `preexec_fn` to set a resource limit).
    """
    result = subprocess.run(
        [sys.executable, "-m", command, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=salt_env(cwd, env),
        **popen_kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"salt {' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def run_dirs(cwd: Path) -> list[Path]:
    """The run folders under `cwd/logs`, oldest name first (`logs/latest` is a link, left out)."""
    logs = Path(cwd) / "logs"
    if not logs.exists():
        return []
    return sorted(p for p in logs.iterdir() if p.is_dir() and not p.is_symlink())


def only_run_dir(cwd: Path) -> Path:
    """The one run folder under `cwd/logs` (fails if there are none or several)."""
    (run_dir,) = run_dirs(cwd)
    return run_dir


#: How `trained_run` trains: 30 steps per epoch, enough for each shipped config's validation
#: loss to fall from the first epoch to the second and for GN2 to beat a single-track cut.
TRAINING = [
    "--data.num_train", "3000", "--data.num_val", "500", "--data.batch_size", "100",
    "--trainer.max_epochs", "2", "--trainer.enable_model_summary", "false",
]  # fmt: skip


@pytest.fixture(scope="session")
def trained_run(demo, tmp_path_factory):
    """`trained_run("GN2")` -> a copy of `logs/<run>/` of a shipped config (see the docstring).

    The copy lies at `<tmp>/logs/<run name>/`: run `salt` with `cwd=run.parent.parent`.
    `trained_run("GN2", copy=False)` returns the original, which must not be changed.
    """
    originals: dict[str, Path] = {}

    def get(config: str, copy: bool = True) -> Path:
        if config not in originals:
            cwd = tmp_path_factory.mktemp(f"trained_{config}")
            run_salt(
                ["fit", "--config", f"configs/{config}.yaml", *data_args(demo), "--force",
                 *TRAINING],
                cwd,
            )  # fmt: skip
            originals[config] = only_run_dir(cwd)
        if not copy:
            return originals[config]
        target = tmp_path_factory.mktemp(f"copy_{config}") / "logs" / originals[config].name
        shutil.copytree(originals[config], target)
        return target

    return get


_MANY = """
import contextlib, io, json, sys, traceback
from salt.main import main

results = []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print(json.dumps(results))
"""


def run_salt_many(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Several `salt` command lines in one Python process, each through the entry point
    (`salt.main.main`) with its own stdout, stderr and exit status.

    For commands that stop while the command line is read: there the start of a process (3-4 s
    of imports) costs more than the command itself. A command that trains belongs in
    `run_salt`, in a process of its own.
    """
    import json

    result = subprocess.run(
        [sys.executable, "-c", _MANY, json.dumps(commands)],
        cwd=cwd, capture_output=True, text=True, timeout=600, env=salt_env(cwd),
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(
            f"the salt driver failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return [
        subprocess.CompletedProcess(args, r["returncode"], r["stdout"], r["stderr"])
        for args, r in zip(commands, json.loads(result.stdout.splitlines()[-1]))
    ]
