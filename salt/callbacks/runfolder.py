"""RunFolder: writes the run folder's config.yaml, metadata.yaml and the norm/class dict copies."""

from __future__ import annotations

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


def _version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:
        return None


class RunFolder(SaveConfigCallback):
    """On rank 0 at the start of `salt fit`, fills `<run folder>/` (see DESIGN.md).

    config.yaml is the fully merged config, enough to reproduce or resume the run;
    metadata.yaml records the code (git), the software, the machine, the command and the data.
    """

    def __init__(self, *args, run_dir: str | None = None, code_info: dict | None = None, **kwargs):
        kwargs["save_to_log_dir"] = False
        super().__init__(*args, **kwargs)
        self.run_dir = run_dir
        self.code_info = code_info or {}

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if self.run_dir is None or stage != "fit":
            return
        run_dir = Path(self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # --force and --tag are decisions about this launch, not part of the recipe: a resume
        # from config.yaml must make them again
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for key in ("force", "tag"):
            config.pop(key, None)
        with (run_dir / self.config_filename).open("w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
        data = trainer.datamodule
        for attr in ("norm_dict", "class_dict"):
            src = getattr(data, attr, None)
            if src:
                shutil.copyfile(src, run_dir / f"{attr}.yaml")
        meta = {
            "run": run_dir.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "cwd": str(Path.cwd()),
            "host": socket.gethostname(),
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
            "data": self._data_info(data),
        }
        with (run_dir / "metadata.yaml").open("w") as f:
            yaml.safe_dump(meta, f, sort_keys=False)

    @staticmethod
    def _data_info(data) -> dict:
        info = {}
        for split, paths in getattr(data, "sources", {}).items():
            dataset = data.datasets.get(split)
            info[split] = {
                "files": [{"path": str(p.resolve()), "bytes": p.stat().st_size} for p in paths],
                "num_jets": dataset.num_jets if dataset is not None else None,
                "batch_size": dataset.batch_size if dataset is not None else None,
            }
        return info
