"""Physics benchmark: GN2 trained by `salt fit` against a gradient-boosted tree on the same jets.

    python benchmarks/physics.py --train-file F --val-file V --test-file T --norm-dict N \
        --class-dict C [--num-train 80000] [--batch-size 250] [--epochs 1] \
        [--config configs/GN2.yaml]

Trains GN2 through the real CLI within the budget, tests it, and in the same run trains a
scikit-learn HistGradientBoostingClassifier on hand-made jet features of the same training jets
(the leading tracks' signed impact-parameter significances, counts of displaced tracks, the jet
kinematics). Prints light- and c-jet rejection at 70% b-jet efficiency for both, using
D_b = log(p_b / (f_c p_c + f_tau p_tau + (1 - f_c - f_tau) p_u)) with f_c = 0.2, f_tau = 0.01,
then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (LZ4)
import numpy as np

FC, FTAU = 0.2, 0.01
TOP = 4  # leading tracks used as features


def jet_features(path: str | Path, num: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, flavour_label, HadronConeExclTruthLabelID) of the first `num` jets (-1: all)."""
    with h5py.File(path) as f:
        n = f["jets"].shape[0] if num < 0 else min(num, f["jets"].shape[0])
        jets = f["jets"].fields(
            ["pt_btagJes", "eta_btagJes", "HadronConeExclTruthLabelID", "flavour_label"]
        )[:n]
        tracks = f["tracks"].fields(
            ["valid", "IP3D_signed_d0_significance", "IP3D_signed_z0_significance"]
        )[:n]
    valid = tracks["valid"]
    columns = [np.log(jets["pt_btagJes"]), np.abs(jets["eta_btagJes"]), valid.sum(1)]
    for name in ("IP3D_signed_d0_significance", "IP3D_signed_z0_significance"):
        sig = np.where(valid, np.nan_to_num(tracks[name]), -np.inf)
        leading = -np.sort(-sig, axis=1)[:, :TOP]
        columns += list(np.where(np.isfinite(leading), leading, -20.0).T)
        for threshold in (2.0, 3.0, 5.0):
            columns.append((sig > threshold).sum(1))
    features = np.stack(columns, axis=1).astype(np.float32)
    return features, jets["flavour_label"], jets["HadronConeExclTruthLabelID"]


def discriminant(pb, pc, pu, ptau) -> np.ndarray:
    return np.log(pb / (FC * pc + FTAU * ptau + (1 - FC - FTAU) * pu))


def rejections(disc: np.ndarray, truth: np.ndarray, b_eff: float = 0.7) -> dict[str, float]:
    cut = np.quantile(disc[truth == 5], 1 - b_eff)
    out = {}
    for name, label in (("light", 0), ("c", 4)):
        passed = (disc[truth == label] > cut).mean()
        out[f"{name}_rej"] = float("inf") if passed == 0 else round(float(1 / passed), 2)
    return out


def train_gn2(args, workdir: Path) -> tuple[dict, float]:
    common = [sys.executable, "-m", "salt.main"]
    fit = [
        *common,
        "fit",
        "--config",
        args.config,
        "--force",
        "--data.train_file",
        args.train_file,
        "--data.val_file",
        args.val_file,
        "--data.test_file",
        args.test_file,
        "--data.norm_dict",
        args.norm_dict,
        "--data.class_dict",
        args.class_dict,
        "--data.num_train",
        str(args.num_train),
        "--data.batch_size",
        str(args.batch_size),
        "--trainer.max_epochs",
        str(args.epochs),
        "--trainer.enable_progress_bar",
        "false",
    ]
    if args.num_val:
        fit += ["--data.num_val", str(args.num_val)]
    start = time.time()
    subprocess.run(fit, cwd=workdir, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.time() - start
    (run_dir,) = (workdir / "logs").iterdir()
    subprocess.run(
        [
            *common,
            "test",
            "--config",
            str(run_dir / "config.yaml"),
            "--trainer.enable_progress_bar",
            "false",
        ],
        cwd=workdir,
        check=True,
    )
    (predictions,) = (run_dir / "ckpts").glob("*__test_*.h5")
    with h5py.File(predictions) as f:
        jets = f["jets"][:]
    name = next(n[: -len("_pb")] for n in jets.dtype.names if n.endswith("_pb"))
    disc = discriminant(
        *(jets[f"{name}_{p}"].astype(np.float64) for p in ("pb", "pc", "pu", "ptau"))
    )
    return rejections(disc, jets["HadronConeExclTruthLabelID"]), seconds


def train_tree(args) -> tuple[dict, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y, _ = jet_features(args.train_file, args.num_train)
    start = time.time()
    tree = HistGradientBoostingClassifier(
        max_iter=300, learning_rate=0.1, early_stopping=True, random_state=0
    )
    tree.fit(x, y)
    seconds = time.time() - start
    x_test, _, truth = jet_features(args.test_file, -1)
    p = tree.predict_proba(x_test).astype(np.float64) + 1e-12
    pb, pc, pu, ptau = (p[:, i] for i in range(4))  # flavour_label order: b, c, u, tau
    return rejections(discriminant(pb, pc, pu, ptau), truth), seconds


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--train-file", required=True)
    ap.add_argument("--val-file", required=True)
    ap.add_argument("--test-file", required=True)
    ap.add_argument("--norm-dict", required=True)
    ap.add_argument("--class-dict", required=True)
    ap.add_argument("--num-train", type=int, default=80_000)
    ap.add_argument("--num-val", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--config", default="configs/GN2.yaml")
    ap.add_argument("--workdir", default=None, help="keep the run folder here")
    args = ap.parse_args(argv)
    for key in ("train_file", "val_file", "test_file", "norm_dict", "class_dict"):
        setattr(args, key, str(Path(getattr(args, key)).resolve()))

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="salt_physics_"))
    workdir.mkdir(parents=True, exist_ok=True)
    tree, tree_s = train_tree(args)
    gn2, gn2_s = train_gn2(args, workdir)
    print(
        f"\n{args.num_train} training jets, {args.epochs} epoch(s), batch {args.batch_size}; "
        f"rejection at 70% b-jet efficiency on {Path(args.test_file).name}"
    )
    print(f"{'model':<28}{'light rej.':>12}{'c rej.':>10}{'train s':>10}")
    print(f"{'GN2 (salt fit)':<28}{gn2['light_rej']:>12}{gn2['c_rej']:>10}{gn2_s:>10.0f}")
    print(f"{'gradient-boosted tree':<28}{tree['light_rej']:>12}{tree['c_rej']:>10}{tree_s:>10.0f}")
    result = {
        "gn2": gn2,
        "tree": tree,
        "gn2_train_s": round(gn2_s, 1),
        "tree_train_s": round(tree_s, 1),
        "num_train": args.num_train,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "workdir": str(workdir),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
