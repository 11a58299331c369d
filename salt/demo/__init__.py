"""Write UPP-format demo datasets whose jets carry learnable flavour signatures.

The files have the exact layout, field names, dtypes, padding, compression and attributes of
what the ATLAS preprocessing tool UPP writes, so the trainer reads them the way it reads real
files, and every salt-ml config finds the datasets and variables it reads. The content comes
from small vectorised models of jet physics, one module per kind:

- `btag`: small-R jets with their vertices (primary, B -> C cascade, charm, tau, V0s);
  `decays`: the b, c, tau and V0 decays; `tracks`: tracks from vertices; `leptons`: soft
  muons and electrons; `flows`: particle flow; `hadrons`: the truth hadrons and their barcodes;
- `xbb`: large-R jets of boosted H, W/Z, top and QCD with their subjets;
- `classes`: which ftag flavour names a file can hold; `writer`: UPP's layout and dicts.

Shapes: ``jets`` is ``(N,)``, constituents ``(N, slots)``, all structured.
Example: ``salt-demo-data /tmp/demo --num-jets 100000 --seed 1 --classes bjets,cjets,ujets``
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import yaml

import salt
from salt.demo import btag, xbb
from salt.demo.classes import BTAG_CLASSES, btag_table, parse_classes
from salt.demo.errors import DemoDataError
from salt.demo.writer import GEN_BLOCK, Split, Statistics, write_split

__all__ = ["DemoDataError", "main", "write_demo_dataset"]

log = logging.getLogger(__name__)
KINDS = ("btag", "xbb")
COMPRESSIONS = ("lz4", "gzip", "none")


def write_demo_dataset(
    out_dir: str | Path,
    num_jets: int = 100_000,
    seed: int = 42,
    num_tracks: int = 40,
    compression: str = "lz4",
    classes: str | Sequence[str] | None = None,
    kind: str = "btag",
    splits: Sequence[str] = ("train", "val", "test"),
) -> dict[str, Path]:
    """Write train/val/test files and the norm and class dicts of a demo dataset into ``out_dir``.

    Args:
        out_dir: output folder, created if missing; existing demo files in it are overwritten.
        num_jets: training jets; validation and test files get ``num_jets // 10`` each.
        seed: the same seed gives identical datasets.
        num_tracks: track and flow slots per jet of kind ``btag``; ``xbb`` always has 100
            (GN2X reads 100 of each).
        compression: ``"lz4"`` (UPP's default, HDF5 filter 32004), ``"gzip"`` or ``"none"``.
        classes: ftag flavour names, in ``flavour_label`` order (a list or ``"a,b,c"``);
            None: ``bjets,cjets,ujets,taujets`` (btag) or ``hbb,hcc,top,qcd`` (xbb).
        kind: ``"btag"`` (small-R jets) or ``"xbb"`` (large-R jets, test file
            ``pp_output_test_xbb.h5``).
        splits: which of ``train``, ``val``, ``test`` to write (each split's jets do not depend
            on the others); the norm and class dicts come with ``train``.

    Returns:
        Paths keyed by ``"train"``, ``"val"``, ``"test"``, ``"norm_dict"`` and ``"class_dict"``
        (those written).

    Raises:
        DemoDataError: a bad argument (a `salt.errors.SaltError`), before anything is written.
    """
    names = parse_classes(classes) if isinstance(classes, str) else classes
    _check_args(num_jets, seed, num_tracks, compression, kind)
    if kind == "btag":
        table = btag_table(names)
        specs = btag.specs(num_tracks)
        generate = partial(btag.generate, table=table, num_tracks=num_tracks)
        sample, high_sample = "ttbar", "zprime"
    else:
        table = xbb.class_table(names)
        specs = xbb.specs()
        generate = partial(xbb.generate, table=table)
        num_tracks = xbb.NUM_SLOTS
        sample, high_sample = "xbb", "xbb"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    all_splits = [
        Split("train", 0, "pp_output_train.h5", num_jets, natural=False),
        Split("val", 1, "pp_output_val.h5", num_jets // 10, natural=False),
        Split("test", 2, f"pp_output_test_{sample}.h5", num_jets // 10, natural=True),
    ]
    stats = Statistics(specs)
    unknown = set(splits) - {s.name for s in all_splits}
    if unknown:
        raise DemoDataError(f"splits {sorted(unknown)}: choose from train, val, test.")
    paths: dict[str, Path] = {}
    for split in (s for s in all_splits if s.name in splits):
        start = time.perf_counter()
        regions = (f"lowpt_{sample}", f"highpt_{sample if split.natural else high_sample}")
        config = {
            "generator": "salt.demo",
            "salt_version": salt.__version__,
            "kind": kind,
            "seed": seed,
            "num_tracks": num_tracks,
            "compression": compression,
            "gen_block": GEN_BLOCK,
            "classes": list(table.names),
            "flavour_fractions": dict(
                zip(table.names, table.fractions(split.natural).round(4).tolist())
            ),
            "spectrum": "natural" if split.natural else "resampled (flat in class)",
        }
        paths[split.name] = out_dir / split.filename
        write_split(
            paths[split.name],
            split,
            specs,
            generate,
            seed,
            compression,
            class_names=table.names,
            component_names=[f"{r}_{c}" for r in regions for c in table.names],
            config=config,
            dsids=[sample] if split.natural or sample == high_sample else [sample, high_sample],
            stats=stats if split.name == "train" else None,
        )
        size = paths[split.name].stat().st_size / 1e6
        log.info(
            "wrote %s (%d jets, %.1f MB) in %.1f s",
            paths[split.name], split.num_jets, size, time.perf_counter() - start,
        )  # fmt: skip

    if "train" not in splits:
        return paths
    paths["norm_dict"] = out_dir / "norm_dict.yaml"
    paths["class_dict"] = out_dir / "class_dict.yaml"
    with paths["norm_dict"].open("w") as f:
        yaml.dump(stats.norm_dict(log.warning), f, sort_keys=False)
    with paths["class_dict"].open("w") as f:
        yaml.dump(stats.class_dict(), f, sort_keys=False)
    log.info("wrote %s and %s", paths["norm_dict"], paths["class_dict"])
    return paths


def _check_args(num_jets: int, seed: int, num_tracks: int, compression: str, kind: str) -> None:
    if num_jets < 10:
        raise DemoDataError(
            f"num_jets must be >= 10 (val and test get num_jets // 10), got {num_jets}"
        )
    if seed < 0:
        raise DemoDataError(f"seed must be a non-negative integer, got {seed}")
    if num_tracks < 1:
        raise DemoDataError(f"num_tracks must be >= 1, got {num_tracks}")
    if compression not in COMPRESSIONS:
        raise DemoDataError(
            f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}"
        )
    if kind not in KINDS:
        raise DemoDataError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``salt-demo-data``."""
    parser = argparse.ArgumentParser(
        prog="salt-demo-data",
        description=(
            "Write a UPP-format demo dataset for salt into OUT_DIR:\n"
            "  pp_output_train.h5       N jets, classes in equal parts (tau a third)\n"
            "  pp_output_val.h5         N // 10 jets, same mix\n"
            "  pp_output_test_ttbar.h5  N // 10 jets, natural ttbar-like mix and pt spectrum\n"
            "                           (pp_output_test_xbb.h5 with --kind xbb)\n"
            "  norm_dict.yaml, class_dict.yaml  in UPP's schema\n"
            "Datasets (btag): jets, tracks, tracks_ghost, flows, electrons, truth_hadrons;\n"
            "(xbb): jets, tracks, flow with 100 slots. Tracks come from primary, B, C, tau and\n"
            "V0 vertices (xbb: in 1-3 subjets), so a tagger has something to learn. The same\n"
            "seed gives identical files."
        ),
        epilog=(
            "examples:\n"
            "  salt-demo-data /tmp/demo --num-jets 100000 --seed 1\n"
            "  salt-demo-data /tmp/gn3 --classes "
            "ghostbjets,ghostcjets,ghostsjets,ghostudjets,ghostgjets,ghosttaujets\n"
            "  salt-demo-data /tmp/xbb --kind xbb --classes hbb,hcc,top,qcd,htautauhad\n"
            f"\nclasses of --kind btag: {', '.join(BTAG_CLASSES)}\n"
            f"classes of --kind xbb: {', '.join(xbb.XBB_CLASSES)}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", type=Path, help="output folder (files in it are overwritten)"
    )
    parser.add_argument("--num-jets", type=int, default=100_000, help="training jets (%(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (%(default)s)")
    parser.add_argument(
        "--num-tracks",
        type=int,
        default=40,
        help="track and flow slots per jet, btag (%(default)s); xbb always has 100",
    )
    parser.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="lz4",
        help="HDF5 compression; lz4 (UPP's default) needs hdf5plugin to read (%(default)s)",
    )
    parser.add_argument(
        "--classes",
        metavar="NAMES",
        help="ftag flavour names in flavour_label order, comma-separated "
        "(btag: bjets,cjets,ujets,taujets; xbb: hbb,hcc,top,qcd)",
    )
    parser.add_argument(
        "--kind", choices=KINDS, default="btag", help="small-R b-tagging or large-R Xbb jets"
    )
    parser.add_argument(
        "--splits",
        default="train,val,test",
        metavar="NAMES",
        help="splits to write, comma-separated (%(default)s); the dicts come with train",
    )
    args = parser.parse_args(argv)
    classes = parse_classes(args.classes)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    if set(splits) - {"train", "val", "test"}:
        parser.error(f"--splits {args.splits}: choose from train, val, test")
    try:
        _check_args(args.num_jets, args.seed, args.num_tracks, args.compression, args.kind)
        if args.kind == "btag":
            btag_table(classes)
        else:
            xbb.class_table(classes)
    except DemoDataError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    write_demo_dataset(
        args.out_dir,
        args.num_jets,
        args.seed,
        args.num_tracks,
        args.compression,
        classes,
        args.kind,
        splits,
    )
    log.info("done in %.1f s", time.perf_counter() - start)
