"""The run folder: where it is, and RunFolder, which fills it with config, metadata and dicts.

    logs/<name>_<YYYYMMDD-hhmmss>/     config.yaml  metadata.yaml  norm_dict.yaml  class_dict.yaml
                                       metrics.csv  ckpts/epoch=NNN-val_loss=X.XXXXX.ckpt
    logs/latest                        a link to the newest run folder (`salt test logs/latest`)

Every process of a run must agree on the folder: `salt fit` exports `SALT_RUN_DIR`, which the
DDP ranks Lightning starts inherit. Batch jobs pin it themselves: `SALT_RUN_ID` replaces the
timestamp (the Slurm script sets it from the job id, so a requeued job finds its folder again),
or `SALT_RUN_DIR` gives the whole path. A pinned folder that holds checkpoints is resumed from
the newest one that loads.
"""

from __future__ import annotations

import logging
import os
import platform
import shlex
import shutil
import socket
import sys
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path

import yaml
from lightning.pytorch.cli import SaveConfigCallback

import salt
from salt.callbacks.checkpoint import TMP_SUFFIX, loadable

log = logging.getLogger(__name__)

# a folder this process created for its run, removed again if the run ends before writing to it
_reserved: list[Path] = []
#: `<root>/latest`: a link to the newest run folder started in `<root>`
LATEST = "latest"


def choose_run_dir(root: Path, name: str) -> Path:
    """The run folder of this process: pinned by `SALT_RUN_DIR` or `SALT_RUN_ID`, else new.

    An unpinned folder is `<root>/<name>_<timestamp>`, created here so that two runs started in
    the same second cannot share it (the second gets a `-2` suffix). The choice is exported as
    `SALT_RUN_DIR` for the DDP ranks that Lightning starts from this process.
    """
    if path := os.environ.get("SALT_RUN_DIR"):
        return Path(path)
    run_id = os.environ.get("SALT_RUN_ID")
    if not run_id and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        # `srun salt fit` starts every rank separately: only the job id is common to all
        run_id = f"job{os.environ.get('SLURM_JOB_ID', '0')}"
    if run_id:
        run_dir = root / f"{name}_{run_id}"
        os.environ["SALT_RUN_DIR"] = str(run_dir)
        return run_dir
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if not root.exists():
        root.mkdir(parents=True)
        _reserved.append(root)
    run_dir, n = root / f"{name}_{stamp}", 1
    while True:
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            n += 1
            run_dir = root / f"{name}_{stamp}-{n}"
    _reserved.append(run_dir)
    os.environ["SALT_RUN_DIR"] = str(run_dir)
    return run_dir


def release_unused() -> None:
    """Remove the folders this process reserved but never wrote to (the run failed first)."""
    while _reserved:
        path = _reserved.pop()
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def newest_checkpoint(ckpt_dir: Path, report: bool = False) -> Path | None:
    """The most recently written checkpoint in `ckpt_dir` that loads (an interruption's or an
    epoch's).

    Newer files that do not load (truncated by a crash before salt wrote atomically, damaged on
    disk) are skipped; with `report`, salt says which and why. Temporary files of a write that
    was cut short (`.<name>.<pid>.tmp`) are removed.
    """
    ckpt_dir = Path(ckpt_dir)
    for tmp in ckpt_dir.glob(f".*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        if report:
            log.warning("removed %s, left by a checkpoint write that was cut short", tmp)
    ckpts = [p for p in ckpt_dir.glob("*.ckpt") if p.is_file()]
    for path in sorted(ckpts, key=lambda p: p.stat().st_mtime_ns, reverse=True):
        problem = loadable(path)
        if problem is None:
            return path
        if report:
            log.warning("skipping checkpoint %s: it %s", path, problem)
    return None


def auto_resume_checkpoint(run_dir: Path) -> str | None:
    """The checkpoint to resume a pinned run folder from, decided once for all ranks.

    The newest one that loads (see `newest_checkpoint`). The process that decides exports the
    choice as `SALT_AUTO_CKPT`, so that the DDP ranks it starts resume from the same file even
    if a checkpoint appears in between.
    """
    if "SALT_AUTO_CKPT" in os.environ:
        return os.environ["SALT_AUTO_CKPT"] or None
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    report = getattr(rank_zero_only, "rank", 0) == 0
    ckpt = newest_checkpoint(run_dir / "ckpts", report=report)
    os.environ["SALT_AUTO_CKPT"] = str(ckpt) if ckpt else ""
    return str(ckpt) if ckpt else None


def point_latest(run_dir: Path) -> None:
    """Make `<root>/latest` a link to `run_dir`, so that `salt test logs/latest` finds it.

    Replaced atomically (a new link renamed over the old), so a reader never finds it missing.
    """
    link = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        tmp.replace(link)
    except OSError as err:  # a file system without links: the run itself is unaffected
        tmp.unlink(missing_ok=True)
        log.info("could not point %s at %s: %s", link, run_dir.name, err)


def keep_previous_metrics(run_dir: Path) -> None:
    """Move an earlier metrics.csv aside: Lightning's CSV logger deletes it when it starts."""
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        return
    n = 1
    while (run_dir / f"metrics-{n}.csv").exists():
        n += 1
    metrics.rename(run_dir / f"metrics-{n}.csv")
    log.info("kept the metrics of the previous start as %s", run_dir / f"metrics-{n}.csv")


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


class RunFolder(SaveConfigCallback):
    """On rank 0 at the start of `salt fit`, fills `<run folder>/` (see DESIGN.md).

    config.yaml is the fully merged config, enough to reproduce the run (`salt fit --config
    <run>/config.yaml` trains it again) or to resume it (add `--ckpt_path`). metadata.yaml
    records the code (git), the software, the machine, the command and the data; a run folder
    started again (a requeued batch job) keeps the earlier starts under `previous_starts`.
    """

    def __init__(
        self,
        *args,
        run_dir: str | None = None,
        code_info: dict | None = None,
        resumed_from: str | None = None,
        **kwargs,
    ):
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)
        self.run_dir = run_dir
        self.code_info = code_info or {}
        self.resumed_from = str(Path(resumed_from).resolve()) if resumed_from else None

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if self.run_dir is None or stage != "fit":
            return
        run_dir = Path(self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        # --force and --tag are decisions about this launch, and the checkpoint a resume starts
        # from is recorded in metadata.yaml: `salt fit --config config.yaml` trains the recipe
        for key in ("force", "tag"):
            config.pop(key, None)
        config["ckpt_path"] = None
        # the folders of this run are set afresh at every start; the root is what to keep
        config["trainer"]["default_root_dir"] = str(run_dir.parent)
        with (run_dir / self.config_filename).open("w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        point_latest(run_dir)
        data = trainer.datamodule
        for attr in ("norm_dict", "class_dict"):
            src = getattr(data, attr, None)
            if src:
                shutil.copyfile(src, run_dir / f"{attr}.yaml")
        self._write_metadata(run_dir, trainer, config)

    def _write_metadata(self, run_dir: Path, trainer, config: dict) -> None:
        path = run_dir / "metadata.yaml"
        previous = yaml.safe_load(path.read_text()) if path.is_file() else None
        meta = {
            "run": run_dir.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join(["salt", *sys.argv[1:]]),
            "cwd": str(Path.cwd()),
            "host": socket.gethostname(),
            "resumed_from": self.resumed_from,
            "seed": config.get("seed_everything"),
            **self.code_info,
            "versions": {
                "salt": salt.__version__,
                "torch": _version("torch"),
                "lightning": _version("lightning"),
                "atlas-ftag-tools": _version("atlas-ftag-tools"),
                "python": platform.python_version(),
            },
            "devices": {
                "accelerator": type(trainer.accelerator).__name__,
                "num_devices": trainer.num_devices,
                "num_nodes": trainer.num_nodes,
                "world_size": trainer.world_size,
                "precision": str(trainer.precision),
            },
            "data": self._data_info(trainer.datamodule, trainer),
        }
        if os.environ.get("SLURM_JOB_ID"):
            meta["slurm"] = {
                "job_id": os.environ["SLURM_JOB_ID"],
                "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
                "nodes": os.environ.get("SLURM_JOB_NODELIST"),
            }
        if previous:
            earlier = previous.pop("previous_starts", [])
            keep = ("created", "command", "host", "resumed_from", "git_hash")
            meta["previous_starts"] = [*earlier, {k: previous.get(k) for k in keep}]
        with path.open("w") as f:
            yaml.safe_dump(meta, f, sort_keys=False)

    @staticmethod
    def _data_info(data, trainer=None) -> dict:
        """Per split: the files (path, bytes, jets), and the jets used.

        ``jets_in_files`` is what the files hold; ``num_jets`` what the loader reads (after
        ``data.num_<split>``); ``batches_per_epoch`` and ``jets_per_epoch`` what one epoch uses
        on all ranks together (after ``trainer.limit_<split>_batches`` and the equal shares of
        the ranks).
        """
        info = {}
        for split, paths in getattr(data, "sources", {}).items():
            dataset = data.datasets.get(split)
            files = []
            for path in paths:
                entry = {"path": str(path.resolve()), "bytes": path.stat().st_size}
                if dataset is not None:
                    entry["jets"] = _jets_in(path, dataset.dataset_name(dataset.global_object))
                files.append(entry)
            info[split] = {"files": files}
            if dataset is None:
                continue
            counts = [f["jets"] for f in files]
            batches = _batches_per_epoch(dataset.num_batches, split, trainer)
            info[split] |= {
                "jets_in_files": None if None in counts else sum(counts),
                "num_jets": dataset.num_jets,
                "batch_size": dataset.batch_size,
                "batches_per_epoch": batches,
                "jets_per_epoch": min(batches * dataset.batch_size, dataset.num_jets),
            }
        return info


def _jets_in(path: Path, dataset: str) -> int | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return int(f[dataset].shape[0])
    except (OSError, KeyError):
        return None


def _batches_per_epoch(num_batches: int, split: str, trainer) -> int:
    """Batches of `split` one epoch uses, over all ranks (`BatchOrderSampler`, then Lightning's
    `limit_<split>_batches`: an int counts batches per rank, a float is a fraction)."""
    world = int(getattr(trainer, "world_size", 1) or 1) if split != "test" else 1
    per_rank = num_batches // world
    limit = getattr(trainer, f"limit_{split}_batches", None) if trainer is not None else None
    if isinstance(limit, float) and limit != 1.0:
        per_rank = int(per_rank * limit)
    elif isinstance(limit, int) and not isinstance(limit, bool):
        per_rank = min(per_rank, limit)
    return per_rank * world
