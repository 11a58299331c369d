"""Training throughput of a salt model on any UPP-format file.

    python benchmarks/train_step.py --config configs/GN2.yaml --train-file F \
        [--batch-size 1000] [--steps 20] [--attention packed|padded] [--precision 32] [--compile]

Trains through Lightning exactly as `salt fit` does (same datamodule, model, optimiser and
schedule; no validation, checkpoints or logs) and prints a table, then last one JSON line with
`jets_per_s`, `s_per_step` (median over the timed steps, after `--warmup` untimed ones),
`seconds_to_first_step` (from the start of this process to the start of the first training
step; `seconds_to_first_step_end` to its end) and `peak_rss_mb`.
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
    def __init__(self):
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.jets: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())
        if len(self.starts) == 1:
            self.first_step_start_wall = time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ends.append(time.perf_counter())
        if len(self.ends) == 1:
            self.first_step_wall = time.time()
        self.jets.append(next(iter(batch["valid"].values() or batch["inputs"].values())).shape[0])


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
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    args = ap.parse_args(argv)

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
    if args.compile:
        cli_args += ["--compile"]
    cli = build(cli_args)
    timer = StepTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, cli.datamodule)

    timed = [e - s for s, e in zip(timer.starts, timer.ends)][args.warmup :]
    jets = timer.jets[args.warmup :]
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
        "steps_timed": len(timed),
        "jets_per_s": round(statistics.mean(jets) / per_step, 1),
        "s_per_step": round(per_step, 4),
        # from the command to the first training step: its start (the first batch is read and
        # handed to the model) and its end (after the first backward pass and optimiser step)
        "seconds_to_first_step": round(timer.first_step_start_wall - start, 2),
        "seconds_to_first_step_end": round(timer.first_step_wall - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 1024**2, 1)
    print(
        f"\n{args.config} attention={args.attention} batch={args.batch_size} "
        f"precision={result['precision']} device={result['device']}\n"
        f"  {result['jets_per_s']:>10,.0f} jets/s   {per_step:.3f} s/step   "
        f"first step starts after {result['seconds_to_first_step']:.1f} s, ends after "
        f"{result['seconds_to_first_step_end']:.1f} s   "
        f"peak RSS {result['peak_rss_mb']:,.0f} MB"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
