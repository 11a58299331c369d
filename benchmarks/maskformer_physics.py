"""Physics benchmark: MaskFormer's hadron finding against GN2's pair-vertexing head.

    python benchmarks/maskformer_physics.py [--num-jets 20000] [--epochs 3] [--batch-size 100] \
        [--config tests/saltml_configs/MaskFormer.yaml] [--workdir DIR]

Writes demo data (b, c and light jets), then trains two models through the real CLI on the same
jets for the same epochs: the MaskFormer config, and the same config with the mask decoder (and
its object regression) replaced by a `VertexingTask` on the tracks, GN2's pair-vertexing head.
Both are tested on the same test jets. Printed, then one JSON line:

* vertex finding of true b and c hadrons with at least 2 tracks: a predicted vertex (a group of
  at least 2 tracks: MaskFormer's tracks sharing an object index, GN2's tracks sharing a vertex
  index) finds a hadron when it holds at least half of the hadron's tracks and at least half of
  its tracks are the hadron's (one to one, `salt.evaluation.vertex_finding`). Efficiency =
  found / hadrons; fake rate = groups finding nothing / groups;
* light- and c-jet rejection at 70% b-jet efficiency (the `salt test` reports).

Run on a quiet machine; figures depend on the number of jets and epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (LZ4)
import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from salt.demo import write_demo_dataset  # noqa: E402
from salt.evaluation.vertex_finding import vertex_finding_counts  # noqa: E402

CLASSES = ("b", "c", "null")


def vertexing_config(maskformer: dict) -> dict:
    """The MaskFormer config (salt-ml schema) with GN2's pair-vertexing head instead."""
    config = json.loads(json.dumps(maskformer))
    config["name"] = "GN2vertexing"
    args = config["model"]["model"]["init_args"]
    args.pop("mask_decoder")
    modules = args["tasks"]["init_args"]["modules"]
    kept = [m for m in modules if m["init_args"].get("input_name") != "objects"]
    width = args["encoder"]["init_args"]["out_dim"]
    head = dict(kept[0]["init_args"]["dense_config"])
    kept.append(
        {
            "class_path": "salt.models.VertexingTask",
            "init_args": {
                "name": "track_vertexing",
                "input_name": "tracks",
                "label": "ftagTruthVertexIndex",
                "weight": 1.5,
                "loss": {"class_path": "torch.nn.BCEWithLogitsLoss"},
                "dense_config": {**head, "input_size": 2 * width, "context_size": width,
                                 "output_size": 1},
            },
        }
    )  # fmt: skip
    args["tasks"]["init_args"]["modules"] = kept
    config["data"].pop("mf_config")
    callbacks = []
    for callback in config["trainer"].get("callbacks", []):
        if callback["class_path"].endswith("MaskformerMetrics"):
            continue
        callback.get("init_args", {}).pop("write_objects", None)
        callbacks.append(callback)
    config["trainer"]["callbacks"] = callbacks
    return config


def salt(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run(
        [sys.executable, "-m", "salt.main", *args], cwd=cwd, capture_output=True, text=True,
        env=env,
    )  # fmt: skip
    if result.returncode:
        raise SystemExit(f"salt {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


def truth(test_file: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """True hadron classes (n, K) (null for none, or fewer than 2 tracks) and masks (n, K, L)."""
    with h5py.File(test_file) as f:
        hadrons = f["truth_hadrons"].fields(["barcode", "flavour", "valid"])[:n]
        tracks = f["tracks"].fields(["ftagTruthParentBarcode", "valid"])[:n]
    parent = np.where(tracks["valid"], tracks["ftagTruthParentBarcode"], -2)
    barcode = np.where(hadrons["valid"], hadrons["barcode"], -3)
    masks = (parent[:, None, :] == barcode[:, :, None]) & (barcode[:, :, None] >= 0)
    cls = np.select([hadrons["flavour"] == 5, hadrons["flavour"] == 4], [0, 1], 2)
    cls = np.where(hadrons["valid"] & (masks.sum(-1) >= 2), cls, 2)
    return cls, masks


def groups(index: np.ndarray, valid: np.ndarray, n_groups: int) -> np.ndarray:
    """(n, G, L) masks of the tracks sharing each group index (groups under 2 tracks: empty)."""
    masks = (index[:, None, :] == np.arange(n_groups)[None, :, None]) & valid[:, None, :]
    return masks & (masks.sum(-1, keepdims=True) >= 2)


def vertex_numbers(pred_class, pred_masks, true_class, true_masks) -> dict:
    counts = vertex_finding_counts(pred_class, pred_masks, true_class, true_masks, CLASSES)
    rate = lambda a, b: round(a / b, 4) if b else None  # noqa: E731
    found = counts["b_found"] + counts["c_found"]
    pred = counts["b_pred"] + counts["c_pred"]
    fake = counts["b_fake"] + counts["c_fake"]
    return {
        "b_eff": rate(counts["b_found"], counts["b_true"]),
        "c_eff": rate(counts["c_found"], counts["c_true"]),
        "fake_rate": rate(fake, pred),
        "found": found,
        "counts": counts,
    }


def rejections(run: Path) -> dict:
    (report,) = run.glob("ckpts/*__report.json")
    model = json.loads(report.read_text())["models"][0]
    wp = next(w for w in model["working_points"] if abs(w["b_eff"] - 0.7) < 1e-6)
    return {"light_rej_70": wp.get("light_rej"), "c_rej_70": wp.get("c_rej")}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--num-jets", type=int, default=20_000, help="demo jets (all splits)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--config", default=str(REPO / "tests/saltml_configs/MaskFormer.yaml"))
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="maskformer_physics_"))
    work.mkdir(parents=True, exist_ok=True)
    files = write_demo_dataset(work / "demo", num_jets=args.num_jets, seed=7,
                               classes="bjets,cjets,ujets")  # fmt: skip
    with h5py.File(files["test"]) as f:
        n_test = f["jets"].shape[0]
    maskformer = yaml.safe_load(Path(args.config).read_text())
    configs = {"MaskFormer": maskformer, "GN2vertexing": vertexing_config(maskformer)}
    data = [
        "--data.train_file", str(files["train"]), "--data.val_file", str(files["val"]),
        "--data.test_file", str(files["test"]), "--data.norm_dict", str(files["norm_dict"]),
        "--data.class_dict", str(files["class_dict"]), "--data.batch_size", str(args.batch_size),
        "--data.num_train", "-1", "--data.num_val", "-1", "--data.num_test", "-1",
        "--trainer.max_epochs", str(args.epochs), "--trainer.accelerator", "cpu",
        "--trainer.devices", "1", "--trainer.precision", "32",
        "--trainer.enable_model_summary", "false", "--force",
    ]  # fmt: skip
    true_class, true_masks = truth(files["test"], n_test)
    result = {"num_jets": args.num_jets, "test_jets": n_test, "epochs": args.epochs, "models": {}}
    for name, config in configs.items():
        cwd = work / name
        cwd.mkdir(exist_ok=True)
        path = cwd / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        salt(["fit", "--config", str(path), *data], cwd)
        run = sorted(p for p in (cwd / "logs").iterdir() if p.is_dir() and not p.is_symlink())[-1]
        salt(["test", str(run)], cwd)
        (pred_file,) = run.glob("ckpts/*__test_*.h5")
        with h5py.File(pred_file) as f:
            tracks = f["tracks"][:]
            valid = tracks["valid"].astype(bool)
            tagger = config["name"]
            if name == "MaskFormer":
                objects = f["objects"][:]
                masks = groups(tracks[f"{tagger}_aux_ObjectIndex"], valid, objects.shape[1])
                pred_class = objects["object_class"].astype(np.int64)
            else:
                index = tracks[f"{tagger}_aux_VertexIndex"]
                masks = groups(index, valid, valid.shape[1])
                pred_class = np.zeros(masks.shape[:2], np.int64)  # no class: all count as b
        numbers = vertex_numbers(pred_class, masks, true_class, true_masks) | rejections(run)
        result["models"][name] = numbers
    print(f"\n{n_test} test jets, {args.epochs} epochs, {args.num_jets} demo jets in all")
    print(f"{'model':<14} {'b-had eff':>10} {'c-had eff':>10} {'fake rate':>10} "
          f"{'light rej@70':>13} {'c rej@70':>9}")  # fmt: skip
    for name, m in result["models"].items():
        cells = [m["b_eff"], m["c_eff"], m["fake_rate"], m["light_rej_70"], m["c_rej_70"]]
        print(f"{name:<14} " + " ".join(
            f"{'n/a' if v is None else f'{v:.3f}':>{w}}" for v, w in zip(cells, (10, 10, 10, 13, 9))
        ))  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
