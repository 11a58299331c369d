"""Edge features packed (ordered pairs within jets only) against the padded B x T x T form.

    python benchmarks/edges.py [--batch-size 1000] [--slots 100] [--valid 30] [--steps 3]
                               [--layers 6] [--threads N] [--memory-limit-gb 16]

A GN2XE-like model (salt-ml's GN2XE translated: tracks with 23 variables, dR/z/kt/subjetIndex/
isSelfLoop edge features, edge_embed_dim 32, update_edges, 6 layers of 192 features and 4 heads,
one register, jet flavour, track origin and vertexing heads) trains on synthetic jets with about
`--valid` of `--slots` track slots valid, fp32 on the CPU. Each layout runs in its own process,
so that its peak memory is its own: ``packed`` (edges for the sum over jets of (n + 1)^2 pairs)
and ``padded`` (the encoder and the edges on every stored slot: B x (T + 1)^2 pairs, as salt-ml
computes them). A training step is forward, backward and an AdamW step; the table gives jets/s
(median step after one untimed step) and the peak RSS, also above the RSS before the first step.
Each process gets an address-space limit (`--memory-limit-gb`): on a shared machine a layout that
does not fit fails alone, reported as such, rather than waking the kernel's OOM killer. On a
loaded machine `--threads 1` gives steadier figures (idle threads wait for busy cores).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRACKS = ["pt", "eta", "phi", "subjetIndex"] + [f"var{i}" for i in range(19)]
FEATURES = ["dR", "z", "kt", "subjetIndex", "isSelfLoop"]


def make_model(attention: str, layers: int):
    from salt.models import (
        ClassificationTask,
        GlobalAttentionPooling,
        SaltModel,
        Transformer,
        VertexingTask,
    )

    tasks = [
        ClassificationTask(
            "jets_classification",
            "jets",
            "flavour_label",
            {"input_size": 128, "hidden_layers": [128, 64, 32], "dropout": 0.1},
            class_names=["hbb", "hcc", "top", "qcd"],
        ),
        ClassificationTask(
            "track_origin",
            "tracks",
            "ftagTruthOriginLabel",
            {"input_size": 128, "context_size": 128, "hidden_layers": [128, 64, 32]},
            loss_weight=0.5,
        ),
        VertexingTask(
            "track_vertexing",
            "tracks",
            {"input_size": 128, "context_size": 128, "hidden_layers": [128, 64, 32]},
            loss_weight=1.5,
        ),
    ]
    encoder = Transformer(
        192, layers, 4, out_dim=128, edge_embed_dim=32, update_edges=True, num_registers=1
    )
    return SaltModel(
        init_nets=[{"input_name": "tracks", "output_size": 192, "hidden_layers": [256]}],
        tasks=tasks,
        encoder=encoder,
        pool_net=GlobalAttentionPooling(128),
        variables={"jets": ["pt", "eta", "mass"], "tracks": TRACKS},
        attention=attention,
        edge_features={"tracks": FEATURES},
        edge_init_nets=[{"input_name": "tracks", "output_size": 32, "hidden_layers": [32]}],
    )


def make_batch(n_jets: int, slots: int, valid: float, seed: int):
    """Packed inputs as the dataloader delivers them: n ~ N(valid, valid / 3), at least 1."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = (valid + valid / 3 * torch.randn(n_jets, generator=g)).round().clamp(1, slots)
    mask = torch.arange(slots)[None, :] < lengths[:, None]
    n = int(mask.sum())
    tracks = torch.randn(n, len(TRACKS), generator=g)
    tracks[:, 0] = 1e3 * torch.exp(torch.randn(n, generator=g))  # pt in MeV
    tracks[:, 1] = 0.3 * torch.randn(n, generator=g)  # eta about the jet axis
    tracks[:, 2] = (torch.rand(n, generator=g) * 2 - 1) * math.pi
    tracks[:, 3] = torch.randint(-1, 3, (n,), generator=g).float()
    inputs = {"jets": torch.randn(n_jets, 3, generator=g), "tracks": tracks}
    labels = {
        "jets": {"flavour_label": torch.randint(0, 4, (n_jets,), generator=g)},
        "tracks": {
            "ftagTruthOriginLabel": torch.randint(0, 8, (n,), generator=g),
            "ftagTruthVertexIndex": torch.randint(-1, 4, (n,), generator=g),
        },
    }
    return inputs, {"tracks": mask}, labels


def run_one(args) -> dict:
    """One layout in this process: the timed training steps."""
    import torch

    from salt.models.layout import host_sizes

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = make_model(args.mode, args.layers).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [make_batch(args.batch_size, args.slots, args.valid, s) for s in range(2)]
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for step in range(args.steps + 1):
        inputs, valid, labels = batches[step % 2]
        sizes = host_sizes(valid, model.constituents)
        start = time.perf_counter()
        _, losses = model(inputs, valid, labels, sizes)
        sum(losses.values()).backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    n = batches[0][1]["tracks"].sum(1)
    per_step = statistics.median(times[1:])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": args.mode,
        "batch_size": args.batch_size,
        "slots": args.slots,
        "valid_per_jet": round(float(n.float().mean()), 1),
        "pairs": int(((n + 1) ** 2).sum()) if args.mode == "packed" else 0,
        "pairs_padded": args.batch_size * (args.slots + 1) ** 2,
        "threads": torch.get_num_threads(),
        "s_per_step": round(per_step, 3),
        "jets_per_s": round(args.batch_size / per_step, 1),
        "peak_rss_mb": round(peak, 1),
        "peak_above_start_mb": round(peak - baseline, 1),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--slots", type=int, default=100, help="stored track slots T")
    ap.add_argument("--valid", type=float, default=30.0, help="mean valid tracks per jet")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one untimed)")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--memory-limit-gb", type=float, default=16.0, help="per process")
    ap.add_argument("--mode", choices=["packed", "padded"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mode:  # a child process
        if args.memory_limit_gb:
            limit = int(args.memory_limit_gb * 1024**3)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(run_one(args)))
        return []

    results = []
    common = [
        "--batch-size", str(args.batch_size), "--slots", str(args.slots), "--valid",
        str(args.valid), "--steps", str(args.steps), "--layers", str(args.layers),
        "--threads", str(args.threads), "--memory-limit-gb", str(args.memory_limit_gb),
    ]  # fmt: skip
    for mode in ("packed", "padded"):
        proc = subprocess.run(
            [sys.executable, __file__, "--mode", mode, *common], capture_output=True, text=True
        )
        if proc.returncode:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no message)"]
            results.append({"mode": mode, "failed": tail[0]})
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    print(
        f"\nGN2XE-like, {args.layers} layers, batch {args.batch_size}, fp32 CPU, "
        f"~{args.valid:g} of {args.slots} track slots valid (+1 register), "
        f"{results[0].get('threads', '?')} thread(s)"
    )
    print(f"{'layout':8} {'jets/s':>9} {'s/step':>8} {'peak RSS MB':>12} {'above start':>12}")
    for r in results:
        if "failed" in r:
            print(f"{r['mode']:8} failed: {r['failed']}")
            continue
        print(
            f"{r['mode']:8} {r['jets_per_s']:>9,.1f} {r['s_per_step']:>8.3f} "
            f"{r['peak_rss_mb']:>12,.0f} {r['peak_above_start_mb']:>12,.0f}"
        )
    ok = [r for r in results if "failed" not in r]
    if len(ok) == 2:
        packed, padded = ok
        print(
            f"packed / padded: {packed['jets_per_s'] / padded['jets_per_s']:.1f}x the jets/s, "
            f"{packed['peak_above_start_mb'] / padded['peak_above_start_mb']:.2f}x the memory "
            f"above start ({packed['peak_rss_mb'] / padded['peak_rss_mb']:.2f}x the peak RSS)"
        )
    for r in results:
        print(json.dumps(r))
    return results


if __name__ == "__main__":
    main()
