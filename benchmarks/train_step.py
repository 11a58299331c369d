"""Training throughput of a salt model on any UPP-format file.

    python benchmarks/train_step.py --config configs/GN2.yaml --train-file F \
        [--batch-size 1000] [--steps 20] [--attention packed|padded] [--precision bf16-mixed] \
        [--compile] [--num-workers N] [--json result.json] [-- more salt options]

Configs in salt-ml's schema are translated as `salt fit` does, e.g. GN2XE with its edge features:
`--config GN2XE.yaml --train-file xbb_demo/pp_output_train.h5 --attention padded`.

Trains through Lightning exactly as `salt fit` does (same datamodule, model, optimiser and
schedule; no validation, checkpoints or logs) and prints a table, then last one JSON line (also
written to `--json`) with:

* `jets_per_s`, `s_per_step`: mean jets per batch over the median step, over the timed steps
  after `--warmup` untimed ones. A step is forward, backward and optimiser step, timed on the host
  clock on a CPU and by CUDA events on a GPU (no synchronisation is added between steps);
* `cpu_s_per_step`: median CPU seconds of this process (all threads) per step, which a shared
  machine's other load inflates much less than the wall time;
* `window_jets_per_s`: jets of the timed steps over the wall-clock time from the start of the
  first to the end of the last (the device synchronised there), so the loader and the copies to
  the device count too;
* `first_step_s` (the first step alone: with `--compile` it compiles), `seconds_to_first_step`
  (from the start of this process to the start of the first training step;
  `seconds_to_first_step_end` to its end), `peak_rss_mb`, and on a GPU `peak_gpu_mb`
  (`torch.cuda.max_memory_allocated`) and `gpu`;
* with `--compile` (`salt.models.compile.compile_model`, as `salt fit --compile`): `compile`,
  holding `graphs` (graphs compiled over the run: 1 when no batch needed a recompile),
  `recompiles`, `graph_breaks`, `compile_s` (dynamo's time compiling forward graphs),
  `first_step_extra_s` (first step minus the median one: the whole compile cost, backward
  included) and `batches` (how many went through the compiled graph and how many ran eagerly).
* with a mask decoder (MaskFormer): `matching_s_per_step` (the time in the matching of queries
  to true objects, its cost matrices and the Hungarian solve, auxiliary layers included, per
  timed step) and `matching_share` (that over the mean timed step). On a GPU the device is
  synchronised around each matching call for this, which slows the step a little.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def process_start_time() -> float:
    """Wall-clock time at which this process started (so interpreter start-up counts too)."""
    try:
        import psutil

        return psutil.Process().create_time()
    except ImportError:
        return time.time()


class StepTimer(L.Callback):
    """Times each training step; on a GPU by CUDA events, so that no step waits for the device.

    The device is synchronised only after the first step and around the timed window
    (`warmup` steps in), where the host clock is read too.
    """

    def __init__(self, warmup: int, total: int):
        self.warmup = warmup
        self.total = total
        self.starts: list = []
        self.ends: list = []
        self.jets: list[int] = []
        self.cpu: list[float] = []
        self.cuda = False

    def _mark(self):
        if not self.cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def on_train_start(self, trainer, pl_module):
        self.cuda = pl_module.device.type == "cuda"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if len(self.starts) == self.warmup:
            self._sync()
            self.window_start = time.perf_counter()
        self.starts.append(self._mark())
        self.cpu_start = time.process_time()
        if len(self.starts) == 1:
            self.first_step_start_wall = time.time()
            self.first_step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ends.append(self._mark())
        self.cpu.append(time.process_time() - self.cpu_start)
        if len(self.ends) == 1:
            self._sync()
            self.first_step_wall = time.time()
            self.first_step_s = time.perf_counter() - self.first_step_start
        if len(self.ends) == self.total:
            self._sync()
            self.window_end = time.perf_counter()
        self.jets.append(next(iter(batch["valid"].values() or batch["inputs"].values())).shape[0])

    def on_train_end(self, trainer, pl_module):
        self._sync()  # every event has completed: elapsed_time can be read

    def step_seconds(self) -> list[float]:
        if self.cuda:
            return [s.elapsed_time(e) / 1000 for s, e in zip(self.starts, self.ends)]
        return [e - s for s, e in zip(self.starts, self.ends)]


class MatchingTimer:
    """Wraps the MaskFormer loss's matching functions and sums their time per training step."""

    def __init__(self, timer: StepTimer):
        import salt.models.maskformer_loss as loss

        self.timer, self.loss = timer, loss
        self.seconds: dict[int, float] = {}
        self.originals = {name: getattr(loss, name) for name in ("match_cost", "hungarian")}
        for name, function in self.originals.items():
            setattr(loss, name, self._timed(function))

    def _timed(self, function):
        import torch

        def wrapped(*args, **kwargs):
            cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = function(*args, **kwargs)
            if cuda:
                torch.cuda.synchronize()
            step = len(self.timer.ends)  # the step now running
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - start
            return out

        return wrapped

    def per_step(self, first: int, last: int) -> float:
        return statistics.mean(self.seconds.get(i, 0.0) for i in range(first, last))


def main(argv: list[str] | None = None) -> dict:
    start = process_start_time()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="configs/GN2.yaml")
    ap.add_argument("--train-file", required=True)
    ap.add_argument("--norm-dict", help="default: norm_dict.yaml beside the train file")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--attention", choices=["packed", "padded"], default="packed")
    ap.add_argument("--precision", default=None, help="default: salt's (32 on CPU, bf16 on GPU)")
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="salt.models.compile.compile_model")
    ap.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend (%(default)s)"
    )
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: none)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    argv = list(sys.argv[1:] if argv is None else argv)
    # after `--`: more salt options, e.g. -- --model.model.init_args.encoder.init_args.num_layers 1
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = ap.parse_args(argv[: len(argv) - len(extra) - (1 if "--" in argv else 0)])
    if args.steps < 1 or args.warmup < 1:
        ap.error("--steps and --warmup must be at least 1")

    import torch

    from salt.main import build

    if args.threads:
        torch.set_num_threads(args.threads)
    train = Path(args.train_file)
    norm = args.norm_dict or str(train.parent / "norm_dict.yaml")
    steps = args.steps + args.warmup
    cli_args = [
        "--config",
        args.config,
        "--data.train_file",
        str(train),
        "--data.val_file",
        str(train),
        "--data.norm_dict",
        norm,
        "--data.batch_size",
        str(args.batch_size),
        "--data.num_train",
        str(steps * args.batch_size),
        "--data.num_workers",
        str(args.num_workers),
        "--data.check_jets",
        str(args.batch_size),
        "--model.model.init_args.attention",
        args.attention,
        "--trainer.accelerator",
        args.accelerator,
        # one device, whatever the config trains on (salt-ml's GN2XE names two)
        "--trainer.devices",
        "1",
        "--trainer.max_steps",
        str(steps),
        "--trainer.limit_val_batches",
        "0",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.enable_checkpointing",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.callbacks",
        "[]",
    ]
    class_dict = train.parent / "class_dict.yaml"
    if class_dict.exists():  # only needed by tasks with use_class_dict
        cli_args += ["--data.class_dict", str(class_dict)]
    if args.precision:
        cli_args += ["--trainer.precision", args.precision]
    cli_args += extra
    cli = build(cli_args)
    if args.compile:
        from salt.models.compile import compile_counters, compile_model

        before = compile_counters()
        compile_model(cli.model.model, backend=args.compile_backend, mode=args.compile_mode)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer(args.warmup, steps)
    matching = None
    if getattr(cli.model.model, "mask_decoder", None) is not None:
        matching = MatchingTimer(timer)
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)

    timed = timer.step_seconds()[args.warmup :]
    jets = timer.jets[args.warmup :]
    if len(timer.ends) < steps:
        raise SystemExit(
            f"{len(timer.ends)} steps ran of the {steps} asked: {train} has too few jets for "
            f"{steps} batches of {args.batch_size}; give fewer --steps or a smaller --batch-size"
        )
    per_step = statistics.median(timed)
    dataset = cli.datamodule.datasets["train"]
    first = dataset[0]
    valid = next(iter(first["valid"].values()), None)
    result = {
        "config": args.config,
        "attention": args.attention,
        "batch_size": args.batch_size,
        "precision": str(cli.trainer.precision),
        "device": str(cli.trainer.strategy.root_device),
        "threads": torch.get_num_threads(),
        "valid_constituents_per_jet": float(valid.sum(1).float().mean())
        if valid is not None
        else 0,
        "num_workers": args.num_workers,
        "steps_timed": len(timed),
        "jets_per_s": round(statistics.mean(jets) / per_step, 1),
        "s_per_step": round(per_step, 5),
        # CPU seconds of this process (all its threads) per step: on a shared machine the wall
        # time of a step grows with the other load, its CPU time much less
        "cpu_s_per_step": round(statistics.median(timer.cpu[args.warmup :]), 5),
        "window_jets_per_s": round(sum(jets) / (timer.window_end - timer.window_start), 1),
        "first_step_s": round(timer.first_step_s, 3),
        # from the command to the first training step: its start (the first batch is read and
        # handed to the model) and its end (after the first backward pass and optimiser step)
        "seconds_to_first_step": round(timer.first_step_start_wall - start, 2),
        "seconds_to_first_step_end": round(timer.first_step_wall - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if matching is not None:
        match_s = matching.per_step(args.warmup, steps)
        result["matching_s_per_step"] = round(match_s, 5)
        result["matching_share"] = round(match_s / statistics.mean(timed), 4)
    if timer.cuda:
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 1024**2, 1)
        result["gpu"] = torch.cuda.get_device_name()
    if args.compile:
        from salt.models.compile import compile_calls

        after = compile_counters()
        graphs = after["graphs"] - before["graphs"]
        result["compile"] = {
            "backend": args.compile_backend,
            "mode": args.compile_mode,
            "graphs": graphs,
            "recompiles": max(graphs - 1, 0),
            "graph_breaks": after["graph_breaks"] - before["graph_breaks"],
            "compile_s": round(after["compile_s"] - before["compile_s"], 2),
            "first_step_extra_s": round(timer.first_step_s - per_step, 2),
            "batches": compile_calls(cli.model.model),
        }
    print(
        f"\n{args.config} attention={args.attention} batch={args.batch_size} "
        f"precision={result['precision']} device={result['device']}\n"
        f"  {result['jets_per_s']:>10,.0f} jets/s   {per_step:.4f} s/step   "
        f"{result['window_jets_per_s']:,.0f} jets/s with loading   "
        f"first step {result['first_step_s']:.2f} s (starts after "
        f"{result['seconds_to_first_step']:.1f} s)   peak RSS {result['peak_rss_mb']:,.0f} MB"
        + (f"   peak GPU {result['peak_gpu_mb']:,.0f} MB" if "peak_gpu_mb" in result else "")
    )
    if matching is not None:
        print(
            f"  matching (cost matrices + Hungarian): {result['matching_s_per_step']:.4f} s/step, "
            f"{result['matching_share']:.1%} of the step"
        )
    if args.compile:
        c = result["compile"]
        print(
            f"  compile: {c['graphs']} graph(s), {c['graph_breaks']} graph break(s), "
            f"{c['compile_s']:.1f} s in dynamo, first step {c['first_step_extra_s']:.1f} s over "
            f"the median, batches {c['batches']}"
        )
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
