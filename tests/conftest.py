"""Shared fixtures: generated UPP-format demo data, and running `salt` as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from salt.demo import write_demo_dataset

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "salt" / "configs"
SHIPPED_CONFIGS = ["GN2", "GN1", "DIPS", "DL1", "regression"]


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


def run_salt(
    args: list[str],
    cwd: Path,
    check: bool = True,
    timeout: float = 600,
    env: dict | None = None,
    command: str = "salt.main",
) -> subprocess.CompletedProcess:
    """Run `python -m salt.main ARGS` in `cwd`, as the `salt` console script does."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    # keep the user's help cache out of the tests
    full_env.setdefault("XDG_CACHE_HOME", str(cwd / ".cache"))
    result = subprocess.run(
        [sys.executable, "-m", command, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"salt {' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result
