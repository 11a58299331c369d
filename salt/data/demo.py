"""Write a UPP-format demo dataset whose jets carry a learnable flavour signature.

The files have the exact layout, field names, dtypes, padding, compression and attributes of
what the ATLAS preprocessing tool UPP writes, so the trainer reads them the way it reads real
files. The content comes from a small vectorised model of jet physics: every jet holds a primary
vertex, pileup and fake tracks, a B-hadron decay vertex with a displaced charm vertex downstream of
it (b jets), a charm vertex (c jets), a tau vertex (tau jets) and a few V0/material pairs (all
flavours). Decay lengths follow the hadron lifetime and boost, and each track's impact parameter
is computed from its vertex position and direction, so tracks of one vertex are correlated.

Shapes: ``jets`` is ``(N,)`` and ``tracks`` is ``(N, num_tracks)``, both structured.
Example: ``salt-demo-data /tmp/demo --num-jets 100000 --seed 1``
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import ftag
import h5py
import hdf5plugin
import numpy as np
import yaml

import salt
from salt.data.demo_physics import (  # noqa: F401  (the schema names are part of this API)
    FLAVOURS,
    GEN_BLOCK,
    IP_TAIL_FRACTION,
    JET_CLASS_LABELS,
    JET_DTYPE,
    JET_INPUTS,
    TRACK_CLASS_LABELS,
    TRACK_DTYPE,
    TRACK_INPUTS,
    TRAIN_FRACTIONS,
    TRUTH_LABEL,
    TTBAR_FRACTIONS,
    V0_RATE,
    Split,
    generate,
)

log = logging.getLogger(__name__)


def write_demo_dataset(
    out_dir: str | Path,
    num_jets: int = 100_000,
    seed: int = 42,
    num_tracks: int = 40,
    compression: str = "lz4",
) -> dict[str, Path]:
    """Write train/val/test files and the norm and class dicts of a demo dataset into ``out_dir``.

    Args:
        out_dir: output folder, created if missing; existing demo files in it are overwritten.
        num_jets: training jets; validation and test files get ``num_jets // 10`` each.
        seed: the same seed gives identical datasets.
        num_tracks: track slots per jet (the second dimension of ``tracks``).
        compression: ``"lz4"`` (UPP's default, HDF5 filter 32004), ``"gzip"`` or ``"none"``.

    Returns:
        Paths keyed by ``"train"``, ``"val"``, ``"test"``, ``"norm_dict"`` and ``"class_dict"``.
    """
    _check_args(num_jets, seed, num_tracks, compression)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = [
        Split("train", 0, "pp_output_train.h5", num_jets, TRAIN_FRACTIONS, natural=False),
        Split("val", 1, "pp_output_val.h5", num_jets // 10, TRAIN_FRACTIONS, natural=False),
        Split("test", 2, "pp_output_test_ttbar.h5", num_jets // 10, TTBAR_FRACTIONS, natural=True),
    ]
    paths: dict[str, Path] = {}
    for split in splits:
        start = time.perf_counter()
        paths[split.name] = out_dir / split.filename
        _write_split(paths[split.name], split, seed, num_tracks, compression)
        size = paths[split.name].stat().st_size / 1e6
        log.info(
            "wrote %s (%d jets, %.1f MB) in %.1f s",
            paths[split.name], split.num_jets, size, time.perf_counter() - start,
        )  # fmt: skip

    start = time.perf_counter()
    # Like UPP's num_jets_estimate_norm: the jets are i.i.d., so the first 100k are a fair sample.
    with h5py.File(paths["train"], "r") as f:
        jets, tracks = f["jets"][:100_000], f["tracks"][:100_000]
    paths["norm_dict"] = out_dir / "norm_dict.yaml"
    paths["class_dict"] = out_dir / "class_dict.yaml"
    with paths["norm_dict"].open("w") as f:
        yaml.dump(norm_dict(jets, tracks), f, sort_keys=False)
    with paths["class_dict"].open("w") as f:
        yaml.dump(class_dict(jets, tracks), f, sort_keys=False)
    log.info(
        "wrote %s and %s from %d jets in %.1f s",
        paths["norm_dict"], paths["class_dict"], len(jets), time.perf_counter() - start,
    )  # fmt: skip
    return paths


def norm_dict(jets: np.ndarray, tracks: np.ndarray) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and population std of every input variable, over valid tracks only.

    Args:
        jets: structured array ``(N,)`` with the fields of ``JET_INPUTS``.
        tracks: structured array ``(N, T)`` with the fields of ``TRACK_INPUTS`` and ``valid``.

    Returns:
        ``{dataset: {variable: {"mean": float, "std": float}}}`` as UPP writes it.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for dataset, variables in _columns(jets, tracks, JET_INPUTS, TRACK_INPUTS).items():
        out[dataset] = {}
        for var, x in variables.items():
            x64 = x.astype(np.float64)
            mean, std = float(np.mean(x64)), float(np.std(x64))
            if not (np.isfinite(std) and std > 0):
                # UPP refuses std == 0; only a file of a handful of jets gets here, keep it usable
                log.warning("%s.%s has std %s, writing std 1.0", dataset, var, std)
                std = 1.0
            out[dataset][var] = {"mean": mean, "std": std}
    return out


def class_dict(jets: np.ndarray, tracks: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """Inverse-frequency class weights of the integer labels, UPP's formula and layout.

    The weight of value k is ``(total / count_k) / min_j(total / count_j)`` rounded to 2
    decimals, listed in the order of the sorted unique values; tracks count valid entries only.

    Args:
        jets: structured array ``(N,)`` with the fields of ``JET_CLASS_LABELS``.
        tracks: structured array ``(N, T)`` with the fields of ``TRACK_CLASS_LABELS`` and ``valid``.

    Returns:
        ``{dataset: {label: [weight per sorted unique value]}}``.
    """
    out: dict[str, dict[str, list[float]]] = {}
    for dataset, labels in _columns(jets, tracks, JET_CLASS_LABELS, TRACK_CLASS_LABELS).items():
        out[dataset] = {}
        for label, x in labels.items():
            _, counts = np.unique(x, return_counts=True)
            inv = len(x) / counts
            out[dataset][label] = [round(float(w), 2) for w in inv / inv.min()]
    return out


def _columns(
    jets: np.ndarray, tracks: np.ndarray, jet_vars: tuple[str, ...], track_vars: tuple[str, ...]
) -> dict[str, dict[str, np.ndarray]]:
    valid = tracks["valid"]  # constituent statistics count real tracks only
    return {
        "jets": {v: jets[v] for v in jet_vars},
        "tracks": {v: tracks[v][valid] for v in track_vars},
    }


def _check_args(num_jets: int, seed: int, num_tracks: int, compression: str) -> None:
    if num_jets < 10:
        raise ValueError(
            f"num_jets must be >= 10 (val and test get num_jets // 10), got {num_jets}"
        )
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if num_tracks < 1:
        raise ValueError(f"num_tracks must be >= 1, got {num_tracks}")
    if compression not in {"lz4", "gzip", "none"}:
        raise ValueError(f"compression must be one of lz4, gzip, none, got {compression!r}")


def _write_split(path: Path, split: Split, seed: int, num_tracks: int, compression: str) -> None:
    # Same dataset creation as ftag's H5Writer (which UPP uses): fixed size, h5py's own chunk guess
    # for jets, (100, T) chunks for tracks, no shuffle filter.
    comp = {"lz4": hdf5plugin.LZ4(), "gzip": "gzip", "none": None}[compression]
    n = split.num_jets
    regions = ("lowpt_ttbar", "highpt_ttbar") if split.natural else ("lowpt_ttbar", "highpt_zprime")
    component_counts = np.zeros(2 * len(FLAVOURS), dtype=np.int64)
    with h5py.File(path, "w") as f:
        f.attrs["writer_version"] = ftag.__version__
        jets_ds = f.create_dataset("jets", shape=(n,), dtype=JET_DTYPE, compression=comp)
        tracks_ds = f.create_dataset(
            "tracks",
            shape=(n, num_tracks),
            dtype=TRACK_DTYPE,
            compression=comp,
            chunks=(min(100, n), num_tracks),
        )
        for block, start in enumerate(range(0, n, GEN_BLOCK)):
            stop = min(start + GEN_BLOCK, n)
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split.key, block)))
            jets, tracks, component = generate(rng, stop - start, split, num_tracks, start)
            jets_ds[start:stop] = jets
            tracks_ds[start:stop] = tracks
            component_counts += np.bincount(component, minlength=len(component_counts))

        jets_ds.attrs["flavour_label"] = list(FLAVOURS)
        names = [f"{region}_{flav}" for region in regions for flav in FLAVOURS]
        counts = {
            k: {"num_jets": int(c), "unique_jets": int(c)} for k, c in zip(names, component_counts)
        }
        counts["total"] = {"num_jets": n, "unique_jets": n}
        config = {
            "generator": "salt.data.demo",
            "salt_version": salt.__version__,
            "split": split.name,
            "seed": seed,
            "num_jets": n,
            "num_tracks": num_tracks,
            "compression": compression,
            "gen_block": GEN_BLOCK,
            "flavour_fractions": dict(zip(FLAVOURS, split.fractions)),
            "spectrum": "ttbar" if split.natural else "resampled ttbar + zprime",
            "ip_tail_fraction": IP_TAIL_FRACTION,
            "v0_rate": V0_RATE,
        }
        f.attrs["config"] = json.dumps(config)
        f.attrs["jets_counts"] = json.dumps(counts)
        f.attrs["unique_jets"] = np.int64(n)
        f.attrs["dsids"] = str(["ttbar"] if split.natural else ["ttbar", "zprime"])
        f.attrs["resampling_method"] = "none"
        f.attrs["upp_hash"] = f"salt-demo-data v{salt.__version__}"


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``salt-demo-data``."""
    parser = argparse.ArgumentParser(
        prog="salt-demo-data",
        description=(
            "Write a UPP-format demo dataset for salt into OUT_DIR:\n"
            "  pp_output_train.h5       N resampled-like jets (b:c:u:tau = 0.3:0.3:0.3:0.1)\n"
            "  pp_output_val.h5         N // 10 jets, same mix\n"
            "  pp_output_test_ttbar.h5  N // 10 jets, natural ttbar-like mix and pt spectrum\n"
            "  norm_dict.yaml, class_dict.yaml  in UPP's schema\n"
            "Tracks come from primary, B, C, tau and V0 vertices, so a tagger has something to\n"
            "learn. The same seed gives identical files."
        ),
        epilog="example:\n  salt-demo-data /tmp/demo --num-jets 100000 --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", type=Path, help="output folder (files in it are overwritten)"
    )
    parser.add_argument("--num-jets", type=int, default=100_000, help="training jets (%(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (%(default)s)")
    parser.add_argument(
        "--num-tracks", type=int, default=40, help="track slots per jet (%(default)s)"
    )
    parser.add_argument(
        "--compression",
        choices=["lz4", "gzip", "none"],
        default="lz4",
        help="HDF5 compression; lz4 (UPP's default) needs hdf5plugin to read (%(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        _check_args(args.num_jets, args.seed, args.num_tracks, args.compression)
    except ValueError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    write_demo_dataset(args.out_dir, args.num_jets, args.seed, args.num_tracks, args.compression)
    log.info("done in %.1f s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
