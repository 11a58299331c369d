"""What `salt fit` shows while it trains: a bar in a terminal, lines anywhere else.

`salt` runs here in a pseudo-terminal, as in an interactive shell, once with a width and once
reporting 0x0 (as some batch systems' and containers' terminals do, where a progress bar draws
nothing at all). A pipe (the other tests' `run_salt`) gets lines as well, see test_cli_run.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import pytest

from tests.conftest import data_args, python_env

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

TINY = [
    "--data.num_train", "500", "--data.num_val", "200", "--data.batch_size", "100",
    "--trainer.max_epochs", "2", "--trainer.enable_model_summary", "false",
]  # fmt: skip


def salt_in_terminal(demo, cwd: Path, rows: int, cols: int) -> str:
    """`salt fit` of DL1 with stdout and stderr on a pseudo-terminal of `rows` x `cols`."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    # `python` from the test server: the terminal is under test, not Python's start-up
    launcher = python_env()
    env = {**os.environ, **launcher, "XDG_CACHE_HOME": str(cwd / ".cache")}
    env.pop("COLUMNS", None), env.pop("LINES", None)  # the terminal's own size, not these
    args = ["fit", "--config", "configs/DL1.yaml", *data_args(demo), "--force", *TINY]
    proc = subprocess.Popen(
        [launcher["PYTHON"], "-m", "salt.main", *args],
        cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last process has gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_without_a_width_gets_progress_lines(demo, tmp_path):
    out = salt_in_terminal(demo, tmp_path, rows=0, cols=0)
    for epoch in (1, 2):
        assert re.search(rf"epoch {epoch}/2  done .*jets/s  train/loss .* val/loss", out), out


def test_a_terminal_gets_one_bar_per_stage_without_empty_ones(demo, tmp_path):
    out = salt_in_terminal(demo, tmp_path, rows=40, cols=120)
    assert re.search(r"Epoch 1: 100%\|.*5/5.*jets/s=", out), out[-2000:]
    assert "Validation: 100%" in out
    # every bar is drawn with its name and total from the start: no "Training: 0/?" or
    # "Validation: 0/?" before it, which a log of the terminal shows as extra lines
    assert "0/?" not in out
    assert "epoch 1/2  done" not in out  # the lines are for logs, not for a terminal
