"""Cost of the MaskFormer's Hungarian matching against the rest of a decoder training step.

    python benchmarks/matching.py [--jets 1000 4000] [--queries 5] [--repeats 5] [--device cpu]

Builds synthetic batches shaped like UPP vertexing data (about 8 valid tracks per jet, up to 40;
0-3 true hadrons per jet, 55% of jets with at least one) and prints, per batch size, the median
milliseconds of: the cost matrices (`match_cost`), the solving (`hungarian`: one copy to numpy and
one `linear_sum_assignment` per jet with a true object), and, for reference, a forward and
backward pass of the MaskFormer.yaml decoder (embed 256, 3 layers, 8 heads, 5 queries; the
encoder is not included) with its loss.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salt.models.dense import Dense
from salt.models.layout import Packed
from salt.models.maskformer import MaskDecoder
from salt.models.matching import hungarian, match_cost
from salt.models.object_targets import ObjectTargets

WEIGHTS = {"object_class_ce": 2.0, "mask_ce": 10.0, "mask_dice": 2.0}


def synthetic_batch(n_jets: int, slots: int = 40, n_obj: int = 5, seed: int = 0):
    """Packed layout, true classes (B, K) (2 = null) and packed target masks (N, K)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.poisson(torch.full((n_jets,), 8.0), generator=gen).clamp(1, slots).long()
    valid = torch.arange(slots)[None, :] < lengths[:, None]
    layout = Packed(valid)
    n_true = torch.multinomial(torch.tensor([0.45, 0.3, 0.2, 0.05]), n_jets, True, generator=gen)
    slot = torch.arange(n_obj)[None, :]
    real = slot < n_true[:, None]
    cls = torch.where(real, torch.randint(0, 2, (n_jets, n_obj), generator=gen), 2)
    # each track belongs to one of the jet's objects or to none (index n_obj)
    owner = torch.randint(0, n_obj + 1, (layout.n_tokens,), generator=gen)
    masks = (owner[:, None] == slot) & real[layout.batch]
    return layout, ObjectTargets(cls, masks)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jets", type=int, nargs="+", default=[1000, 4000])
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-step", action="store_true", help="skip the decoder step reference")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    D = 256
    decoder = MaskDecoder(
        args.queries,
        D,
        3,
        {"n_heads": 8, "mask_attention": True, "bidirectional_ca": True},
        Dense(D, 3),
        Dense(D, D),
        {"num_classes": 2, "loss_weights": WEIGHTS},
    ).to(dev)
    holder: dict[str, torch.Tensor] = {}  # the cost matrices, from one timed call to the next

    print(
        f"{'jets':>6} {'with obj':>8} {'cost ms':>8} {'solve ms':>9} {'match ms':>9} "
        f"{'step ms':>8} {'match/step':>10}"
    )
    for n_jets in args.jets:
        layout, targets = synthetic_batch(n_jets, n_obj=args.queries)
        layout = Packed(layout.valid.to(dev))
        targets = ObjectTargets(targets.object_class.to(dev), targets.masks.to(dev))
        cls_logits = torch.randn(n_jets, args.queries, 3, device=dev)
        pred, valid = layout.pad(torch.randn(layout.n_tokens, args.queries, device=dev))
        pred = pred.transpose(1, 2)
        true = layout.pad(targets.masks)[0].transpose(1, 2)
        real = targets.object_class != 2

        def cost(cls_logits=cls_logits, pred=pred, valid=valid, true=true, targets=targets):
            holder["cost"] = match_cost(
                cls_logits, pred, valid, targets.object_class, true, WEIGHTS
            )
            sync()

        def solve(real=real):
            hungarian(holder["cost"], real)
            sync()

        t_cost = median_ms(cost, args.repeats)
        t_solve = median_ms(solve, args.repeats)
        t_step = float("nan")
        if not args.no_step:
            x = torch.randn(layout.n_tokens, D, device=dev)

            def step(x=x, layout=layout, targets=targets):
                decoder.zero_grad()
                _, losses = decoder(x, layout, targets)
                sum(losses.values()).backward()
                sync()

            t_step = median_ms(step, max(2, args.repeats // 2))
        share = (t_cost + t_solve) / t_step
        print(
            f"{n_jets:>6} {int(real.any(1).sum()):>8} {t_cost:>8.2f} {t_solve:>9.2f} "
            f"{t_cost + t_solve:>9.2f} {t_step:>8.1f} {share:>10.1%}"
        )
        print(f"       per 1000 jets: matching {(t_cost + t_solve) * 1000 / n_jets:.2f} ms")


if __name__ == "__main__":
    main()
