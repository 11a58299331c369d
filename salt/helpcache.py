"""A cache for `salt ... --help`.

Building the help means importing Lightning and torch (about 4 s on a small CPU); the text only
changes when salt, its configs or the installed versions change. The first `--help` for a given
command line renders and stores it; later ones print it straight away.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "salt" / "help"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _config_files(argv: list[str]) -> list[Path]:
    """The yaml files named on the command line (`--config FILE` or `--config=FILE`)."""
    values = [a.split("=", 1)[-1] for a in argv]
    return [
        Path(v).resolve() for v in values if v.endswith((".yaml", ".yml")) and Path(v).is_file()
    ]


def _key(argv: list[str]) -> str:
    """Changes whenever anything that shapes the help text changes."""
    stamps = []
    configs = _config_files(argv)
    files = sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.glob("configs/*.yaml")) + configs
    for path in files:
        st = path.stat()
        stamps.append((str(path), st.st_mtime_ns, st.st_size))
    parts = {
        "argv": argv,
        # a relative config path names another file from another folder: key on the resolved one
        "configs": [str(p) for p in configs],
        "columns": shutil.get_terminal_size().columns,
        "versions": [_version(n) for n in ("lightning", "jsonargparse", "torch")],
        "files": stamps,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def cached(argv: list[str]) -> str | None:
    """The stored help text for this command line, if any."""
    try:
        return (_cache_dir() / f"{_key(argv)}.txt").read_text()
    except OSError:
        return None


def store(argv: list[str], text: str) -> None:
    try:
        folder = _cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{os.getpid()}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / f"{_key(argv)}.txt")
    except OSError:  # a read-only home only costs speed
        pass
