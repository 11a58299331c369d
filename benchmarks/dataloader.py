"""Jets per second from salt's training dataloader, against a plain loader and the bare read.

    python benchmarks/dataloader.py --file /tmp/demo1m/pp_output_train.h5
    python benchmarks/dataloader.py --file F --config configs/GN2.yaml --batch-size 1000 \\
        --num-workers 0 --num-workers 2 --batches 300
    python benchmarks/dataloader.py --file F -- --data.selections '{tracks: [d0 < 3.5]}'
    python benchmarks/dataloader.py --file F --num-workers 0 --num-workers 8 \
        --num-workers 15 --num-workers auto --device cuda --json loader.json

Arguments after `--` go to salt as they are (any `--data.*` option: selections, transforms,
non_finite_to_num, ...), so the cost of an option is the difference of two runs.

For every worker count (default 0, 1 and 2; `auto` is salt's own choice for the machine) a
fresh process builds the training dataloader as `salt fit` does (`salt.main.build`: the
config's variables, the labels its tasks need, then `SaltDataModule.setup("fit")` and
`train_dataloader()`, so the BatchOrderSampler's weakly shuffled order), iterates `--batches`
batches after a warm-up, and in the same process times on the very same batch slices:

* reference: a plain loader that reads each slice with h5py (`ds[start:stop]`) and converts it
  with `numpy.lib.recfunctions.structured_to_unstructured`, padded tracks zeroed, as a
  straightforward trainer does (it applies none of the options given after `--`);
* bare: `read_direct` of each slice of every dataset the loader reads into a preallocated
  buffer of the file's full record type: the floor, no conversion at all.

With `--device cuda` (the default where CUDA is available: what a GPU training gets) the batches
are delivered as a GPU run delivers them: with their host sizes, pinned, and copied to the GPU
one batch ahead (`salt.data.prefetch`); the timed window ends when the last copy has landed.
`--device cpu` times the host side alone.

`peak_rss_mb` is the training process's peak resident memory (`resource.getrusage`) plus the
peaks of its workers (read from /proc); a forked worker shares most of its pages with the
parent, so the sum overstates what the processes use together. The norm and class dicts are
taken from beside the file (UPP writes them to its output folder) unless given. The table comes
first, then one JSON line per worker count, last; `--json PATH` also writes them as one list.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 5


def _find_beside(file: Path, name: str) -> Path | None:
    for folder in (file.parent, file.parent.parent):
        if (folder / name).is_file():
            return folder / name
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example:\n  python benchmarks/dataloader.py --file /tmp/demo1m/pp_output_train.h5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--file", type=Path, required=True, help="UPP-format HDF5 file")
    parser.add_argument("--config", default="configs/GN2.yaml", help="salt config (%(default)s)")
    parser.add_argument("--batch-size", type=int, default=1000, help="jets per batch (%(default)s)")
    parser.add_argument(
        "--num-workers",
        type=_workers,
        action="append",
        help="dataloader workers, or auto; repeat for several settings (default: 0, 1 and 2)",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cuda", "cpu"],
        default="auto",
        help="deliver the batches to the GPU (cuda) or leave them on the host (cpu); auto: "
        "cuda where available (%(default)s)",
    )
    parser.add_argument("--json", type=Path, help="also write the results, a JSON list, here")
    parser.add_argument(
        "--batches", type=int, default=300, help="batches timed per loader (%(default)s)"
    )
    parser.add_argument(
        "--read-ahead",
        type=int,
        help="data.read_ahead for the 0-worker setting (default: the config's)",
    )
    parser.add_argument("--norm-dict", type=Path, help="default: norm_dict.yaml beside the file")
    parser.add_argument("--class-dict", type=Path, help="default: class_dict.yaml beside the file")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.salt_args = argv[split + 1 :]
    args.num_workers = args.num_workers or [0, 1, 2]
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    for attr, name in (("norm_dict", "norm_dict.yaml"), ("class_dict", "class_dict.yaml")):
        if getattr(args, attr) is None:
            found = _find_beside(args.file, name)
            if found is None:
                parser.error(f"no {name} beside {args.file}: pass --{attr.replace('_', '-')}")
            setattr(args, attr, found)
    return args


def _workers(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of workers or auto, not {value!r}") from None


# --------------------------------------------------------------------------------- one setting
def build_loader(args: argparse.Namespace, workers: int | str):
    """salt's training dataloader for `args.file`, built as `salt fit` builds it."""
    from salt.main import build

    cli = build(
        [
            "--config", args.config,
            "--data.train_file", str(args.file),
            "--data.val_file", str(args.file),
            "--data.norm_dict", str(args.norm_dict),
            "--data.class_dict", str(args.class_dict),
            "--data.batch_size", str(args.batch_size),
            "--data.num_workers", str(workers),
            "--data.check_jets", "0",  # the start-up scan is not what is timed here
            *(["--data.read_ahead", str(args.read_ahead)] if args.read_ahead is not None else []),
            *args.salt_args,
        ]
    )  # fmt: skip
    datamodule = cli.datamodule
    datamodule.target_device = args.device if args.device == "cuda" else None
    datamodule.setup("fit")
    return datamodule, datamodule.train_dataloader()


def time_loader(loader, n_batches: int) -> tuple[float, list[int]]:
    """Jets/s over `n_batches` after `WARMUP` batches, and the batch indices timed."""
    import torch

    order = loader.sampler.order()[WARMUP : WARMUP + n_batches].tolist()
    jets = sum(stop - start for start, stop in map(loader.dataset.rows, order))
    on_gpu = loader.device is not None and loader.device.type == "cuda"
    iterator = iter(loader)
    for _ in range(WARMUP):
        next(iterator)
    if on_gpu:
        torch.cuda.synchronize(loader.device)
    start = time.perf_counter()
    for _ in range(n_batches):
        batch = next(iterator)
    if on_gpu:
        torch.cuda.synchronize(loader.device)  # the last copies have landed
    elapsed = time.perf_counter() - start
    del iterator, batch
    return jets / elapsed, order


def time_reference(dataset, order: list[int]) -> float:
    """A plain loader: h5py slice reads, structured_to_unstructured, padded tracks zeroed."""
    import h5py
    import numpy as np
    import torch
    from numpy.lib.recfunctions import structured_to_unstructured as s2u

    jets = 0
    with h5py.File(dataset.filename, "r") as f:
        start_time = time.perf_counter()
        for index in order:
            start, stop = dataset.rows(index)
            batch = {"inputs": {}, "valid": {}, "labels": {}}
            for name in dataset.object_names:
                ds = f[dataset.dataset_name(name)]
                slots = dataset.num_slots.get(name)
                data = ds[start:stop, :slots] if slots else ds[start:stop]
                if name in dataset.variables:
                    x = np.ascontiguousarray(s2u(data[dataset.variables[name]], dtype=np.float32))
                    if slots:
                        valid = data["valid"]
                        x[~valid] = 0
                        batch["valid"][name] = torch.from_numpy(valid)
                    batch["inputs"][name] = torch.from_numpy(x)
                batch["labels"][name] = {
                    label: torch.from_numpy(data[label].astype(np.int64))
                    for label in dataset.labels.get(name, [])
                }
            jets += stop - start
        return jets / (time.perf_counter() - start_time)


def time_bare(dataset, order: list[int]) -> float:
    """`read_direct` of the same slices into preallocated full-record buffers: the floor."""
    import h5py
    import numpy as np

    jets = 0
    with h5py.File(dataset.filename, "r") as f:
        datasets, buffers = [], []
        for name in dataset.object_names:
            ds = f[dataset.dataset_name(name)]
            slots = dataset.num_slots.get(name, 0)
            datasets.append((ds, slots))
            buffers.append(np.empty((dataset.batch_size, *([slots] if slots else [])), ds.dtype))
        start_time = time.perf_counter()
        for index in order:
            start, stop = dataset.rows(index)
            for (ds, slots), buf in zip(datasets, buffers):
                n = stop - start
                if slots:
                    ds.read_direct(buf, np.s_[start:stop, :slots], np.s_[:n])
                else:
                    ds.read_direct(buf, np.s_[start:stop], np.s_[:n])
            jets += stop - start
        return jets / (time.perf_counter() - start_time)


def valid_per_jet(dataset, order: list[int]) -> dict[str, float]:
    """Mean valid constituents per jet and type (after any selection) over a few batches."""
    counts: dict[str, list[int]] = {}
    jets = 0
    for index in order:
        batch = dataset.read_batch(index)
        for name, valid in batch["valid"].items():
            counts.setdefault(name, []).append(int(valid.sum()))
        jets += len(next(iter(batch["valid"].values()))) if batch["valid"] else 0
    return {name: round(sum(c) / max(jets, 1), 2) for name, c in counts.items()}


def peak_rss_mb() -> tuple[float, float]:
    """Peak RSS of this process, and the sum of its live children's peaks (the workers), in MB.

    The children are read from /proc while they run: `getrusage(RUSAGE_CHILDREN)` would also
    count any short-lived helper forked from this large process.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = 0.0
    for tasks in Path("/proc/self/task").glob("*/children"):
        for pid in tasks.read_text().split():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    children += int(line.split()[1]) / 1024
    return own, children


def run_one(args: argparse.Namespace) -> dict:
    import gc

    from salt.data.workers import usable_cpus

    requested = args.num_workers[0]
    datamodule, loader = build_loader(args, requested)
    workers = datamodule.workers
    dataset = datamodule.datasets["train"]
    n_batches = min(args.batches, len(loader) - WARMUP)
    if n_batches < 1:
        raise SystemExit(f"{args.file} has too few batches of {args.batch_size} jets to time")
    rate, order = time_loader(loader, n_batches)
    own, workers_rss = peak_rss_mb()  # while the (persistent) workers still run
    delivery = {
        "device": str(loader.device or "host"),
        "pinned": loader.pin_batches,
        "host_sizes": loader.constituents is not None,
    }
    del loader
    gc.collect()
    reference = time_reference(dataset, order)
    bare = time_bare(dataset, order)
    return {
        "file": str(args.file),
        "num_jets": dataset.num_jets,
        "batch_size": args.batch_size,
        "batches": n_batches,
        "num_workers": workers,
        "num_workers_requested": requested,
        "read_ahead": datamodule.read_ahead if workers == 0 else 0,
        **delivery,
        "usable_cpus": usable_cpus(),
        "variables": {k: len(v) for k, v in dataset.variables.items()},
        "labels": dataset.labels,
        "salt_args": args.salt_args,
        "valid_per_jet": valid_per_jet(dataset, order[:20]),
        "jets_per_s": round(rate),
        "reference_jets_per_s": round(reference),
        "bare_read_jets_per_s": round(bare),
        "fraction_of_bare": round(rate / bare, 3),
        "speedup_vs_reference": round(rate / reference, 2),
        "peak_rss_mb": round(own + workers_rss),
        "main_rss_mb": round(own),
        "workers_rss_mb": round(workers_rss),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


# --------------------------------------------------------------------------------- driver
def warm_page_cache(path: Path) -> None:
    """Read the file once so that the first setting does not pay for the disk alone."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return
    if path.stat().st_size > available // 4:
        print(f"# {path} is large against free memory: not pre-reading it", file=sys.stderr)
        return
    with path.open("rb") as f:
        while f.read(64 * 1024**2):
            pass


def print_table(results: list[dict]) -> None:
    first = results[0]
    print(
        f"file {first['file']} ({first['num_jets']} jets), batch {first['batch_size']}, "
        f"{first['batches']} batches timed, inputs {first['variables']}, labels {first['labels']}"
    )
    print(f"valid constituents per jet {first['valid_per_jet']}, salt args {first['salt_args']}")
    print(f"delivered to {first['device']}, {first['usable_cpus']} usable CPUs")
    header = (
        f"{'workers':>7} {'salt jets/s':>12} {'reference':>10} {'bare read':>10} "
        f"{'of bare':>8} {'x ref':>6} {'peak RSS MB':>12} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        workers = r["num_workers"]
        if r["num_workers_requested"] == "auto":
            workers = f"auto={workers}"
        print(
            f"{workers:>7} {r['jets_per_s']:>12,} {r['reference_jets_per_s']:>10,} "
            f"{r['bare_read_jets_per_s']:>10,} {r['fraction_of_bare']:>8.0%} "
            f"{r['speedup_vs_reference']:>6.2f} {r['peak_rss_mb']:>12,} {r['load_avg_1min']:>5}"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args)))
        return
    warm_page_cache(args.file)
    results = []
    for workers in args.num_workers:
        command = [
            sys.executable, __file__, "--one", "--file", str(args.file), "--config", args.config,
            "--batch-size", str(args.batch_size), "--num-workers", str(workers),
            "--batches", str(args.batches), "--norm-dict", str(args.norm_dict),
            "--class-dict", str(args.class_dict), "--device", args.device,
            *(["--read-ahead", str(args.read_ahead)] if args.read_ahead is not None else []),
            "--", *args.salt_args,
        ]  # fmt: skip
        # a fresh process per setting: its peak memory is its own, and nothing is left warm
        done = subprocess.run(command, capture_output=True, text=True, cwd=Path.cwd())
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"the setting with {workers} workers failed")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print_table(results)
    for result in results:
        print(json.dumps(result))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
