"""The parts of `benchmarks/device_check.sh`: each in its own process, with its own time limit.

    python benchmarks/device_check.py [--cpu] [--out DIR] [--work DIR] [--budget SECONDS]

Run through `benchmarks/device_check.sh` (which picks the interpreter). Imports only the
standard library, so that it runs before anything is installed: the first part installs the
carried wheels and the project, the later ones use them.

Parts, in order (GPU sizes; `--cpu`: tiny ones, the model on the CPU in fp32):

1. install: ``pip install --no-deps --no-index --target`` of the wheels in ``.whl/`` (see
   `benchmarks/device_wheels.sh`) and of the project, over the machine's torch and Lightning;
2. environment: versions, GPU, driver, CPUs;
3. data: `salt-demo-data` (1M jets);
4. train_*: `benchmarks/train_step.py`, GN2 at batch 4000 in bf16 with 15 workers, packed and
   padded attention, each eager and with ``--compile``;
5. pytest: ``pytest -m gpu``;
6. loader_N: `benchmarks/dataloader.py` with 0, 8 and 15 workers.

A part that fails or runs out of time is recorded and the next one runs. Each has a time limit,
cut further so that the parts after it keep a minimum and the whole ends within `--budget`
(470 s on a GPU: the check is meant to fit one 8-minute call). Written: DIR/device_check.json
(every figure, and each part's status) and DIR/device_check.log (each part's output). The exit
status is 0 when every part succeeded, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_GN2_JETS_PER_S = 64_500  # salt-ml's GN2 on one H100, bf16, batch 4000 (PITFALLS.md)
LOG_TAIL = 200_000  # characters of each part's output kept in the log

# sizes per mode: the GPU ones fit an 8-minute call on an H100/H200, the CPU ones a CI test
SIZES = {
    "gpu": {
        "jets": 1_000_000,
        "batch": 4000,
        "precision": "bf16-mixed",
        "steps": 30,
        "warmup": 5,
        "compile_warmup": 3,
        "train_workers": 15,
        "loader_workers": [0, 8, 15],
        "loader_batches": 100,
        "budget": 470,
        "compile_backend": "inductor",
        "model_args": [],
    },
    "cpu": {
        "jets": 1000,
        "batch": 50,
        "precision": "32",
        "steps": 2,
        "warmup": 1,
        "compile_warmup": 1,
        "train_workers": 0,
        "loader_workers": [0, 1],
        "loader_batches": 5,
        "budget": 300,
        # dynamo's capture alone (graphs, guards, recompiles), without AOT autograd and kernel
        # generation: a GN2 compile with inductor takes minutes on a 2-core machine, and even
        # aot_eager 15-30 s (tests/test_compile.py checks the compiled results)
        "compile_backend": "eager",
        # one encoder layer: a quarter of the graph to capture
        "model_args": ["--model.model.init_args.encoder.init_args.num_layers", "1"],
    },
}

# (part, its own limit in seconds on a GPU, the least it may be cut to)
LIMITS = {
    "install": (60, 20),
    "environment": (30, 10),
    "data": (60, 20),
    "train_packed": (45, 25),
    "train_padded": (45, 25),
    "loader": (30, 15),  # per worker count
    "pytest": (120, 30),
    "train_packed_compiled": (100, 40),
    "train_padded_compiled": (90, 40),
}

ENVIRONMENT = r"""
import json, os, platform, subprocess, sys
from importlib import metadata
info = {"python": platform.python_version(), "executable": sys.executable,
        "cpus": os.cpu_count(), "host": platform.node()}
try:
    info["cpus_usable"] = len(os.sched_getaffinity(0))
except AttributeError:
    pass
for name in ("torch", "lightning", "triton", "numpy", "h5py", "hdf5plugin", "jsonargparse",
             "atlas-ftag-tools", "puma-hep", "onnx", "onnxruntime", "lion-pytorch", "salt-ftag"):
    try:
        info[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        info[name] = None
import torch, salt
info["salt_from"] = os.path.dirname(salt.__file__)
info["cuda_available"] = torch.cuda.is_available()
info["torch_cuda"] = torch.version.cuda
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, gpu_count=torch.cuda.device_count(),
                gpu_memory_gb=round(p.total_memory / 1024**3, 1),
                compute_capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                bf16=torch.cuda.is_bf16_supported())
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,power.limit",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        info["nvidia_smi"] = f"not run: {e}"
print(json.dumps(info))
"""


class Check:
    """Runs the parts, keeps the log and the figures, and writes the JSON."""

    def __init__(
        self, mode: str, out: Path, work: Path, budget: float, only: set[str] | None = None
    ):
        self.mode = mode
        self.only = only
        self.sizes = SIZES[mode]
        self.out = out
        self.work = work
        self.start = time.monotonic()
        self.deadline = self.start + budget
        self.log_path = out / "device_check.log"
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.python = sys.executable
        self.result: dict = {
            "mode": mode,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "budget_s": budget,
            "sizes": {k: v for k, v in self.sizes.items() if k != "budget"},
            "parts": {},
        }
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text(f"device check, {mode} mode, {self.result['started']}\n")

    # ------------------------------------------------------------------------- running parts
    def _limit(self, name: str, later: list[str]) -> float:
        own, _ = LIMITS[name.split("_")[0] if name.startswith("loader") else name]
        if self.mode == "cpu":
            own = max(own, 60)  # a loaded 2-core machine starts Python slowly
        reserve = sum(LIMITS["loader" if n.startswith("loader") else n][1] for n in later)
        left = self.deadline - time.monotonic() - reserve
        return max(min(own, left), 5)

    def run(
        self, name: str, command: list[str], later: list[str], limit: float | None = None
    ) -> tuple[bool, str]:
        """Run one part (`limit`: its time limit, default from LIMITS and the budget left);
        returns whether it succeeded and its output."""
        limit = self._limit(name, later) if limit is None else limit
        started = time.monotonic()
        shown = " ".join(c if len(c) < 200 else f"<{len(c)} characters>" for c in command)
        status = {"command": shown, "timeout_s": round(limit)}
        print(f"[{time.monotonic() - self.start:6.1f} s] {name} (limit {limit:.0f} s)", flush=True)
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # a timeout ends its workers too
        )
        try:
            output, _ = proc.communicate(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            timed_out = True
        seconds = time.monotonic() - started
        ok = proc.returncode == 0 and not timed_out
        status.update(ok=ok, rc=proc.returncode, timed_out=timed_out, seconds=round(seconds, 1))
        if not ok:
            last = [line for line in output.strip().splitlines() if line.strip()][-3:]
            status["error"] = ("timed out; " if timed_out else "") + " | ".join(last)[-600:]
        self.result["parts"][name] = status
        with self.log_path.open("a") as log:
            log.write(f"\n===== {name}: {shown}\n")
            if len(output) > LOG_TAIL:
                log.write(f"[... {len(output) - LOG_TAIL} characters cut ...]\n")
            log.write(output[-LOG_TAIL:])
            log.write(
                f"\n===== {name}: {'ok' if ok else 'FAILED'} rc={proc.returncode}"
                f"{' (timed out)' if timed_out else ''} in {seconds:.1f} s\n"
            )
        print(f"         {'ok' if ok else 'FAILED'} in {seconds:.1f} s", flush=True)
        return ok, output

    def fail(self, name: str, error: str) -> None:
        """Record a part that could not run or whose output could not be read."""
        status = self.result["parts"].setdefault(name, {"seconds": 0.0})
        status.update(ok=False, error=error)

    # ------------------------------------------------------------------------- the parts
    def install(self, later: list[str]) -> None:
        site = self.work / "site"
        wheels = sorted((ROOT / ".whl").glob("*.whl"))
        command = [self.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                   "--no-compile", "--no-cache-dir", "--no-build-isolation", "--upgrade",
                   "--target", str(site)]  # fmt: skip
        if self.mode == "gpu":
            if not wheels:
                print("no wheels in .whl/: make them with benchmarks/device_wheels.sh .whl")
            command += [str(w) for w in wheels]
        # on a CPU the environment has the dependencies already (and the wheels are for 3.12)
        self.result["wheels"] = [w.name for w in wheels] if self.mode == "gpu" else []
        ok, _ = self.run("install", [*command, str(ROOT)], later)
        if ok or self.mode == "gpu":
            path = [str(site), str(ROOT)] if ok else [str(ROOT)]
            self.env["PYTHONPATH"] = os.pathsep.join(
                [*path, *filter(None, [os.environ.get("PYTHONPATH")])]
            )

    def environment(self, later: list[str]) -> None:
        ok, output = self.run("environment", [self.python, "-c", ENVIRONMENT], later)
        info = _last_json(output)
        if ok and info is not None:
            self.result["environment"] = info
        else:
            self.result["environment"] = {"python": platform.python_version()}
            self.fail("environment", self.result["parts"]["environment"].get("error", "no JSON"))

    def data(self, later: list[str]) -> Path | None:
        folder = self.work / "data"
        jets = self.sizes["jets"]
        train, done = folder / "pp_output_train.h5", folder / "written.json"
        command = [self.python, "-m", "salt.demo", str(folder), "--num-jets", str(jets),
                   "--seed", "1"]  # fmt: skip
        reused = done.is_file() and train.is_file() and json.loads(done.read_text()) == command
        if reused:  # a rerun on the same machine: the same files are there
            self.result["parts"]["data"] = {"command": " ".join(command), "ok": True,
                                            "reused": True, "seconds": 0.0}  # fmt: skip
            print("data: reusing the files of an earlier run")
        else:
            done.unlink(missing_ok=True)
            ok, _ = self.run("data", command, later)
            if not ok or not train.is_file():
                return None
            done.write_text(json.dumps(command))
        seconds = self.result["parts"]["data"]["seconds"]
        self.result["data"] = {
            "jets": jets,
            "seconds": seconds,
            "train_file_mb": round(train.stat().st_size / 1024**2, 1),
            "compression": "lz4",
        }
        return train

    def train(self, name: str, train: Path, attention: str, compiled: bool, later) -> None:
        s = self.sizes
        out = self.work / f"{name}.json"
        out.unlink(missing_ok=True)
        command = [self.python, "benchmarks/train_step.py", "--config", "configs/GN2.yaml",
                   "--train-file", str(train), "--batch-size", str(s["batch"]),
                   "--precision", s["precision"], "--attention", attention,
                   "--steps", str(s["steps"]),
                   "--warmup", str(s["compile_warmup"] if compiled else s["warmup"]),
                   "--num-workers", str(s["train_workers"]),
                   "--accelerator", "gpu" if self.mode == "gpu" else "cpu",
                   "--json", str(out)]  # fmt: skip
        if compiled:
            command += ["--compile", "--compile-backend", s["compile_backend"]]
        if s["model_args"]:
            command += ["--", *s["model_args"]]
        ok, _ = self.run(name, command, later)
        if ok:
            try:
                self.result.setdefault("train_step", {})[name[len("train_") :]] = json.loads(
                    out.read_text()
                )
            except (OSError, ValueError) as e:
                self.fail(name, f"no result in {out}: {e}")

    def pytest(self, later: list[str]) -> None:
        junit = self.work / "pytest.xml"
        junit.unlink(missing_ok=True)
        # on a CPU every GPU test skips: collecting the one file keeps the check quick
        where = ["tests"] if self.mode == "gpu" else ["tests/test_gpu.py"]
        # -n 0: one process (the suite's default spreads over every CPU, here onto one GPU)
        command = [self.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                   "-n", "0", "-rfEs", f"--junitxml={junit}", *where]  # fmt: skip
        self.run("pytest", command, later)
        if junit.is_file():
            self.result["pytest"] = _junit_summary(junit)
        elif self.result["parts"]["pytest"]["ok"]:
            self.fail("pytest", "pytest wrote no report")

    def loader(self, name: str, train: Path, workers: int, later: list[str]) -> None:
        s = self.sizes
        command = [self.python, "benchmarks/dataloader.py", "--file", str(train),
                   "--batch-size", str(s["batch"]), "--num-workers", str(workers),
                   "--batches", str(s["loader_batches"])]  # fmt: skip
        ok, output = self.run(name, command, later)
        figures = _last_json(output)
        if ok and figures is not None:
            self.result.setdefault("dataloader", {})[str(workers)] = figures
        elif ok:
            self.fail(name, "dataloader.py printed no JSON")

    # ------------------------------------------------------------------------- all of it
    def all(self) -> int:
        s = self.sizes
        loaders = [f"loader_{w}" for w in s["loader_workers"]]
        order = ["install", "environment", "data", "train_packed", "train_padded",
                 *loaders, "pytest", "train_packed_compiled", "train_padded_compiled"]  # fmt: skip
        if self.only is not None:
            keep = {"install", "environment"} | self.only
            if self.only - {"pytest"}:
                keep.add("data")
            order = [n for n in order if n in keep]

        def later(name: str) -> list[str]:
            return order[order.index(name) + 1 :]

        self.install(later("install"))
        self.environment(later("environment"))
        train = self.data(later("data")) if "data" in order else None
        runs = {
            "train_packed": ("packed", False),
            "train_padded": ("padded", False),
            "train_packed_compiled": ("packed", True),
            "train_padded_compiled": ("padded", True),
        }
        for name in order[order.index("environment") + 1 :]:
            if name == "data":
                continue
            if name == "pytest":
                self.pytest(later(name))
            elif train is None:
                self.fail(name, "no data: the data part failed")
            elif name in runs:
                self.train(name, train, *runs[name], later(name))
            else:
                self.loader(name, train, int(name.split("_")[1]), later(name))
        return self.finish()

    def finish(self) -> int:
        self.result["seconds"] = round(time.monotonic() - self.start, 1)
        failed = [name for name, status in self.result["parts"].items() if not status.get("ok")]
        self.result["failed"] = failed
        self.result["ok"] = not failed
        self.result["summary"] = summary(self.result)
        path = self.out / "device_check.json"
        path.write_text(json.dumps(self.result, indent=1) + "\n")
        print_summary(self.result)
        print(f"\nwritten: {path} and {self.log_path}")
        return 0 if not failed else 1


# ----------------------------------------------------------------------------- reading results
def _last_json(output: str) -> dict | None:
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _junit_summary(path: Path) -> dict:
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    failed, skipped = [], {}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        elif (skip := case.find("skipped")) is not None:
            reason = skip.get("message", "")
            skipped[reason] = skipped.get(reason, 0) + 1
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "passed": passed, "failed_tests": failed, "skip_reasons": skipped}


def summary(result: dict) -> dict:
    """The headline figures, flat, for a quick look and for comparing runs."""
    out: dict = {}
    env = result.get("environment", {})
    out["device"] = env.get("gpu") or "cpu"
    for key in ("torch", "lightning", "python"):
        out[key] = env.get(key)
    for name, run in result.get("train_step", {}).items():
        out[f"{name}_jets_per_s"] = run["jets_per_s"]
        out[f"{name}_window_jets_per_s"] = run["window_jets_per_s"]
        out[f"{name}_s_per_step"] = run["s_per_step"]
        if "peak_gpu_mb" in run:
            out[f"{name}_peak_gpu_mb"] = run["peak_gpu_mb"]
        if "compile" in run:
            c = run["compile"]
            out[f"{name}_first_step_s"] = run["first_step_s"]
            out[f"{name}_compile_graphs"] = c["graphs"]
            out[f"{name}_recompiles"] = c["recompiles"]
            eager = result["train_step"].get(name.replace("_compiled", ""))
            if eager:
                out[f"{name}_speedup"] = round(eager["s_per_step"] / run["s_per_step"], 3)
    packed = result.get("train_step", {}).get("packed")
    if packed and result["mode"] == "gpu":
        out["packed_vs_upstream_64.5k"] = round(packed["jets_per_s"] / UPSTREAM_GN2_JETS_PER_S, 2)
    for workers, figures in result.get("dataloader", {}).items():
        out[f"loader_{workers}_workers_jets_per_s"] = figures["jets_per_s"]
    if "pytest" in result:
        p = result["pytest"]
        out["pytest"] = f"{p['passed']} passed, {p['failures'] + p['errors']} failed, " + (
            f"{p['skipped']} skipped"
        )
    return out


def print_summary(result: dict) -> None:
    print(f"\n{'part':<24} {'status':<8} {'seconds':>8}")
    for name, status in result["parts"].items():
        state = "ok" if status.get("ok") else ("TIMEOUT" if status.get("timed_out") else "FAILED")
        print(f"{name:<24} {state:<8} {status.get('seconds', 0):>8}")
        if not status.get("ok"):
            print(f"    {status.get('error', '')[:300]}")
    print()
    for key, value in result["summary"].items():
        print(f"{key:<40} {value}")
    print(f"\n{'all parts succeeded' if result['ok'] else 'FAILED: ' + ', '.join(result['failed'])}"
          f" in {result['seconds']} s")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (what CI runs)")
    ap.add_argument(
        "--out", type=Path, help="results folder (default: $OUT, else /tmp/salt_device_check)"
    )
    ap.add_argument("--work", type=Path, default=None, help="data and installs (default: /tmp)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole check")
    ap.add_argument(
        "--only",
        help="comma-separated parts to run, for a rerun (install, environment and, where a part "
        "needs it, data always run), e.g. train_packed,train_packed_compiled",
    )
    ap.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="PART=SECONDS",
        help="another time limit for a part (repeatable), e.g. train_packed_compiled=200",
    )
    args = ap.parse_args(argv)
    mode = "cpu" if args.cpu else "gpu"
    for item in args.limit:
        name, _, seconds = item.partition("=")
        if name not in LIMITS or not seconds.replace(".", "", 1).isdigit():
            ap.error(f"--limit {item}: give PART=SECONDS with PART one of {', '.join(LIMITS)}")
        LIMITS[name] = (float(seconds), min(LIMITS[name][1], float(seconds)))
    only = None
    if args.only:
        only = set(args.only.split(","))
        known = set(LIMITS) | {f"loader_{w}" for w in SIZES[mode]["loader_workers"]}
        if only - known:
            ap.error(f"--only: unknown parts {sorted(only - known)}; known: {sorted(known)}")
    out = args.out or Path(
        os.environ.get("OUT") or Path(tempfile.gettempdir()) / "salt_device_check"
    )
    work = args.work or Path("/tmp") / f"salt_device_check_{mode}"
    return Check(mode, out, work, args.budget or SIZES[mode]["budget"], only).all()


if __name__ == "__main__":
    sys.exit(main())
