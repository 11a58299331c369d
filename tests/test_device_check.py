"""benchmarks/device_check.sh: its parts, their time limits, and the one JSON of figures.

The whole check runs here in its CPU mode (tiny sizes, the model in fp32 on the CPU); the GPU
run is the same script with the GPU sizes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.cli_support import gone_within
from tests.conftest import python_env

REPO = Path(__file__).resolve().parent.parent


def load_device_check():
    spec = importlib.util.spec_from_file_location(
        "device_check", REPO / "benchmarks" / "device_check.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_failed_and_timed_out_parts_are_recorded_and_the_rest_runs(tmp_path):
    dc = load_device_check()
    check = dc.Check("cpu", tmp_path / "out", tmp_path / "work", budget=60)
    ok, _ = check.run("install", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], [])
    assert not ok
    pid_file = tmp_path / "child.pid"
    spawn = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    started = time.monotonic()
    ok, _ = check.run("data", [sys.executable, "-c", spawn], [], limit=3)
    assert not ok and time.monotonic() - started < 30
    child = int(pid_file.read_text())
    assert gone_within(child)  # the whole process group was killed, the worker-like child too
    ok, output = check.run("environment", [sys.executable, "-c", "print('{\"a\": 1}')"], [])
    assert ok and dc._last_json(output) == {"a": 1}
    assert check.finish() == 1
    result = json.loads((tmp_path / "out" / "device_check.json").read_text())
    assert result["failed"] == ["install", "data"] and result["ok"] is False
    assert result["parts"]["install"]["rc"] == 3 and "boom" in result["parts"]["install"]["error"]
    assert result["parts"]["data"]["timed_out"] and result["parts"]["data"]["timeout_s"] == 3
    assert result["parts"]["environment"]["ok"]
    log = (tmp_path / "out" / "device_check.log").read_text()
    assert "===== install: FAILED rc=3" in log and "(timed out)" in log and "boom" in log


def test_part_limits_leave_room_for_the_parts_after():
    dc = load_device_check()
    check = dc.Check.__new__(dc.Check)
    check.mode = "gpu"
    check.deadline = time.monotonic() + 150
    # 150 s left and the two compiled runs after it need at least 40 s each: 70 s of its 120
    limit = check._limit("pytest", ["train_packed_compiled", "train_padded_compiled"])
    assert 68 <= limit <= 70
    assert check._limit("train_packed", []) == 45  # its own limit
    check.deadline = time.monotonic() + 10
    assert check._limit("pytest", ["train_packed_compiled"]) == 5  # the floor


@pytest.mark.slow
def test_cpu_mode_writes_every_figure(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    # the parts start from the test server: the script is under test, not Python's start-up
    env = {**os.environ, **python_env()}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "device_check.sh"), "--cpu", "--out", str(out),
         "--work", str(work)],
        capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "device_check.json").read_text())
    parts = ["install", "environment", "data", "train_packed", "train_padded", "loader_0",
             "loader_1", "pytest", "train_packed_compiled", "train_padded_compiled"]  # fmt: skip
    assert list(result["parts"]) == parts
    assert result["ok"] and result["failed"] == []
    assert all(
        p["ok"] and p["seconds"] > 0 and p["timeout_s"] >= 5 for p in result["parts"].values()
    )
    env = result["environment"]
    assert env["torch"] == torch.__version__.split("+")[0] or env["torch"] == torch.__version__
    assert env["lightning"] and env["cpus"] >= 1 and env["cuda_available"] is False
    assert result["data"]["jets"] == 1000 and result["data"]["train_file_mb"] > 0
    sizes = result["sizes"]
    runs = result["train_step"]
    assert set(runs) == {"packed", "padded", "packed_compiled", "padded_compiled"}
    for name, run in runs.items():
        assert run["attention"] == name.split("_")[0]
        assert run["batch_size"] == sizes["batch"] and run["precision"] == "32-true"
        assert run["steps_timed"] == sizes["steps"]
        for key in ("jets_per_s", "s_per_step", "window_jets_per_s", "first_step_s", "peak_rss_mb"):
            assert run[key] > 0, (name, key)
    for name in ("packed_compiled", "padded_compiled"):
        c = runs[name]["compile"]
        assert c["backend"] == sizes["compile_backend"]
        assert c["graphs"] == 1 and c["recompiles"] == 0 and c["graph_breaks"] == 0
        assert c["batches"]["compiled"] == sizes["steps"] + sizes["compile_warmup"]
    assert set(result["dataloader"]) == {"0", "1"}
    for workers, figures in result["dataloader"].items():
        assert figures["num_workers"] == int(workers) and figures["jets_per_s"] > 0
    tests = result["pytest"]
    assert tests["tests"] > 0 and tests["skipped"] == tests["tests"]  # no GPU here
    summary = result["summary"]
    for key in ("packed_jets_per_s", "padded_s_per_step", "packed_compiled_speedup",
                "padded_compiled_recompiles", "loader_0_workers_jets_per_s", "pytest"):  # fmt: skip
        assert key in summary, key
    log = (out / "device_check.log").read_text()
    assert all(f"===== {part}: ok" in log for part in parts)
