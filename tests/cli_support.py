"""Support for the CLI tests (tests/test_cli_*.py): a probe callback and a throw-away salt checkout.

`Probe` is loaded by the `salt` subprocesses themselves: add it to a run with `probe_args(DIR)`
and run with `probe_env()` (which puts tests/ on PYTHONPATH). Every rank appends JSON lines to
``DIR/rank<global rank>.jsonl``:

* ``{"event": "train_batch", "epoch", "batch_idx", "first_jet": [...]}`` per training batch
  (``first_jet`` is the first jet's raw inputs, which identify the batch);
* ``{"event": "val_batch", "epoch", "batch_idx", "loss", "n_jets"}`` per validation batch;
* ``{"event": "val_end", "epoch", "val_loss"}`` with the reduced loss Lightning logged.

`make_code_repo` copies the salt package into a new git repository with a bare remote, so that
`--force` and `--tag` can be tested without touching the real checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "salt"

# commits and annotated tags need an identity, which a CI machine may lack
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "salt tests",
    "GIT_AUTHOR_EMAIL": "tests@salt.invalid",
    "GIT_COMMITTER_NAME": "salt tests",
    "GIT_COMMITTER_EMAIL": "tests@salt.invalid",
}


class Probe(Callback):
    """Writes one JSON line per batch and rank; see the module docstring.

    Parameters
    ----------
    out_dir
        Folder for the ``rank<N>.jsonl`` files.
    delay
        Seconds to sleep after each training batch, so that a test can signal mid-epoch.
    """

    def __init__(self, out_dir: str, delay: float = 0.0):
        self.out_dir = Path(out_dir)
        self.delay = delay

    def _write(self, trainer, **record) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record["pid"] = os.getpid()
        with (self.out_dir / f"rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        inputs = batch["inputs"]
        first = inputs.get(pl_module.model.global_object)
        if first is None:
            first = next(iter(inputs.values()))
        self._write(
            trainer,
            event="train_batch",
            epoch=trainer.current_epoch,
            batch_idx=batch_idx,
            first_jet=[round(float(x), 6) for x in first[0].tolist()],
        )
        if self.delay:
            time.sleep(self.delay)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if trainer.sanity_checking:
            return
        valid = next(iter(batch["valid"].values()), None) if batch.get("valid") else None
        n_jets = (valid if valid is not None else next(iter(batch["inputs"].values()))).shape[0]
        self._write(
            trainer,
            event="val_batch",
            epoch=trainer.current_epoch,
            batch_idx=batch_idx,
            loss=float(outputs),
            n_jets=int(n_jets),
        )

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get("val_loss")
        self._write(
            trainer,
            event="val_end",
            epoch=trainer.current_epoch,
            val_loss=None if value is None else float(value),
        )


def probe_args(out_dir: Path, delay: float = 0.0) -> list[str]:
    """CLI arguments that add a Probe writing to `out_dir`."""
    return [
        "--trainer.callbacks+=cli_support.Probe",
        "--trainer.callbacks.out_dir", str(out_dir),
        "--trainer.callbacks.delay", str(delay),
    ]  # fmt: skip


def probe_env(*first: Path) -> dict[str, str]:
    """Environment in which `salt` finds the probe (and, first, any of `first` on PYTHONPATH)."""
    return {"PYTHONPATH": os.pathsep.join([*map(str, first), str(TESTS)])}


def read_probe(out_dir: Path) -> dict[int, list[dict]]:
    """The records of every rank, keyed by global rank."""
    records = {}
    for path in sorted(Path(out_dir).glob("rank*.jsonl")):
        rank = int(path.stem.removeprefix("rank"))
        records[rank] = [json.loads(line) for line in path.read_text().splitlines()]
    return records


def train_batches(records: list[dict], epoch: int | None = None) -> list[tuple]:
    """The first-jet identities of the training batches in `records` (of one epoch)."""
    return [
        tuple(r["first_jet"])
        for r in records
        if r["event"] == "train_batch" and (epoch is None or r["epoch"] == epoch)
    ]


def wait_for_batches(proc: subprocess.Popen, probe: Path, n: int, timeout: float = 180) -> None:
    """Wait until the probe of the running `proc` has recorded `n` training batches."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"salt ended ({proc.returncode}):\n{out[-3000:]}{err[-3000:]}")
        if len(train_batches(read_probe(probe).get(0, []))) >= n:
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no {n} training batches within {timeout} s")


def gone_within(pid: int, seconds: float = 5.0) -> bool:
    """Whether process `pid` has ended (or is a zombie that whoever adopted it has not reaped
    yet) within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return True
        if "State:\tZ" in state:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY}
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_code_repo(root: Path) -> tuple[Path, Path]:
    """A git checkout at `root/code` holding a committed copy of the salt package, and its
    bare remote `root/remote.git` (as origin). Returns (checkout, remote).

    Run salt from it with ``PYTHONPATH=<checkout>``: `salt.__file__` then lies in the copy, and
    salt's git checks look at this repository.
    """
    code, remote = root / "code", root / "remote.git"
    shutil.copytree(PACKAGE, code / "salt", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    git(code.parent, "init", "-q", str(code))
    git(code, "add", "salt")
    git(code, "commit", "-q", "-m", "salt copy for tests")
    git(code, "remote", "add", "origin", str(remote))
    git(code, "push", "-q", "origin", "HEAD")
    return code, remote
