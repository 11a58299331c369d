"""Shared fixtures: generated UPP-format demo data, runs trained once, and running `salt`.

* `demo`: the demo files (6000 training jets, 600 validation and 600 test jets).
* `trained_run(config)`: the run folder of a `salt fit` of a shipped config on the demo files,
  trained once per test run (`TRAINING`: 3000 jets, batches of 100, 2 epochs) and handed
  to each caller as a fresh copy, so that a test may test, export or resume it freely. Used by
  the shipped-config, prediction, export and report tests; use it for any test that needs a
  trained model and does not care how it was trained.
* `run_salt(args, cwd)`: `salt ARGS` in a process of its own, as a user runs it, forked from a
  server that has imported torch and Lightning (tests/salt_server.py); `run_python(code, ...)`
  the same for a `python -c` driver.
* `made_once(tmp_path_factory, name)`: a folder filled by one pytest-xdist worker and shared by
  all (the demo files and the trained runs are made once per test run).
* `run_dirs(cwd)`, `only_run_dir(cwd)`: the run folders under `cwd/logs` (not `logs/latest`,
  the link to the newest).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.salt_server import shared_server

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


@contextlib.contextmanager
def made_once(tmp_path_factory, name: str):
    """`with made_once(f, "x") as (folder, make):` -> a folder shared by every pytest-xdist
    worker of this run; `make` is True for the one worker that must fill it (the others wait
    until it has). Session fixtures that cost seconds use it, so that they are built once per
    test run, not once per worker."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid is None:  # one process: nobody to share with
        yield tmp_path_factory.mktemp(name), True
        return
    shared = tmp_path_factory.getbasetemp().parent / f"shared-{uid}"
    shared.mkdir(exist_ok=True)
    folder, done = shared / name, shared / f"{name}.done"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if done.exists():
            yield folder, False
            return
        if folder.exists():  # a worker died filling it
            shutil.rmtree(folder)
        folder.mkdir()
        yield folder, True
        done.touch()


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> dict[str, Path]:
    """Demo files: 6000 training jets, 600 validation and 600 test jets (seed 1)."""
    with made_once(tmp_path_factory, "demo") as (folder, make):
        if make:
            from salt.demo import write_demo_dataset  # here: pytest's own start does not wait

            paths = write_demo_dataset(folder, num_jets=6000, seed=1)
            (folder / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return {k: Path(v) for k, v in json.loads((folder / "paths.json").read_text()).items()}


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


def run_python(
    code: str, args: list[str], cwd: Path, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -c CODE ARGS` in `cwd`, forked from the test server as `run_salt` is: for test
    drivers that run several salt commands or benchmarks in one process."""
    return shared_server(salt_env(REPO)).run(
        [str(a) for a in args], cwd, salt_env(cwd, env), timeout, code=code
    )


def python_env() -> dict[str, str]:
    """`PYTHON` and the socket variable that make a script's Python processes children of the
    test server (tests/warm_python.py): for tests of scripts that start many of them."""
    return shared_server(salt_env(REPO)).python_env()


def run_salt(
    args: list[str],
    cwd: Path,
    check: bool = True,
    timeout: float = 600,
    env: dict | None = None,
    command: str = "salt.main",
    fresh: bool = False,
    **popen_kwargs,
) -> subprocess.CompletedProcess:
    """Run `python -m salt.main ARGS` in `cwd`, as the `salt` console script does.

    The process is forked from the test server (tests/salt_server.py), which has imported
    torch and Lightning already; `fresh=True` starts a new interpreter instead, for tests of
    what a user sees while those are imported. `popen_kwargs` (e.g. `preexec_fn` to set a
    resource limit) go to subprocess.run, in a fresh process as well. A PYTHONPATH that puts a
    copy of salt first gets that copy (the child imports it anew).
    """
    args = [str(a) for a in args]
    if fresh or popen_kwargs:
        result = subprocess.run(
            [sys.executable, "-m", command, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=salt_env(cwd, env),
            **popen_kwargs,
        )
    else:
        server = shared_server(salt_env(REPO))
        result = server.run(args, cwd, salt_env(cwd, env), timeout, module=command)
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
            with made_once(tmp_path_factory, f"trained_{config}") as (cwd, make):
                if make:
                    run_salt(
                        ["fit", "--config", f"configs/{config}.yaml", *data_args(demo),
                         "--force", *TRAINING],
                        cwd,
                    )  # fmt: skip
            originals[config] = only_run_dir(cwd)
        if not copy:
            return originals[config]
        target = tmp_path_factory.mktemp(f"copy_{config}") / "logs" / originals[config].name
        shutil.copytree(originals[config], target)
        return target

    return get


def run_salt_many(commands: list[list[str]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """`salt` with each of several command lines, one after the other, each `run_salt` in `cwd`
    without raising on a non-zero exit: for tests of many ways a command line can be wrong."""
    return [run_salt(args, cwd, check=False) for args in commands]


# ------------------------------------------------------------------ longest test files first
# pytest-xdist hands out whole files (`--dist loadfile`) in collection order
# (`--no-loadscope-reorder`). A long file that starts last keeps one worker busy after the others
# have finished, so the files start longest first: by their time in the last run on this
# checkout (pytest's cache), without one (a fresh clone, CI) by their time in a quiet run kept in
# tests/file_seconds.json, and files in neither with `slow` tests first. Refresh that file after
# a quiet run with `cp .pytest_cache/v/salt/file_seconds tests/file_seconds.json`.
_FILE_SECONDS = "salt/file_seconds"
_SNAPSHOT = Path(__file__).with_name("file_seconds.json")


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items) -> None:
    cache = getattr(config, "cache", None)  # None with `-p no:cacheprovider`
    seconds = cache.get(_FILE_SECONDS, {}) if cache is not None else {}
    if not seconds and _SNAPSHOT.is_file():
        seconds = json.loads(_SNAPSHOT.read_text())
    slow = {_file(item.nodeid) for item in items if item.get_closest_marker("slow")}
    rank: dict[str, tuple] = {}
    for item in items:
        name = _file(item.nodeid)
        rank.setdefault(name, (-seconds.get(name, 0.0), name not in slow, len(rank)))
    items.sort(key=lambda item: rank[_file(item.nodeid)])  # stable: a file's tests stay in order


_seconds_this_run: dict[str, float] = {}


def pytest_runtest_logreport(report) -> None:
    name = _file(report.nodeid)
    _seconds_this_run[name] = _seconds_this_run.get(name, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus) -> None:
    cache = getattr(session.config, "cache", None)
    # the controller (or a run without xdist) sees every file's reports; a worker only its own
    if cache is not None and not hasattr(session.config, "workerinput") and _seconds_this_run:
        cache.set(_FILE_SECONDS, {**cache.get(_FILE_SECONDS, {}), **_seconds_this_run})
