"""The MaskFormer config in salt-ml's schema: `salt fit`, `salt test` and `to_onnx`, unchanged.

tests/saltml_configs/MaskFormer.yaml has the features and tasks of salt-ml's MaskFormer.yaml
(hadrons as objects with a regression of their properties, the jet flavour, the track origin)
at small size; only the file paths and the device settings come from the command line. The
checks: the decoder's losses and the vertex-finding metrics are logged, the prediction file
holds the objects (read back with ftag's H5Reader) consistently with the tracks' object index,
the report has the vertex-finding table, and the ONNX export passes the parity check.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (LZ4)
import numpy as np
import pytest
import yaml

from salt.demo import write_demo_dataset
from salt.saltml import is_saltml
from tests.conftest import only_run_dir, run_salt

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

CONFIG = Path(__file__).parent / "saltml_configs" / "MaskFormer.yaml"
NAME = "MaskFormertest"
OBJECT_CLASSES = ["b", "c", "null"]
LAPTOP = [
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32",
    "--trainer.enable_model_summary", "false", "--force",
    "--data.num_train", "1000", "--data.num_val", "300", "--data.num_test", "200",
    "--data.batch_size", "100", "--trainer.max_epochs", "3",
]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("maskformer_cli")
    files = write_demo_dataset(root / "demo", num_jets=2000, seed=3, classes="bjets,cjets,ujets")
    cwd = root / "work"
    cwd.mkdir()
    data = [
        "--data.train_file", str(files["train"]), "--data.val_file", str(files["val"]),
        "--data.test_file", str(files["test"]), "--data.norm_dict", str(files["norm_dict"]),
        "--data.class_dict", str(files["class_dict"]),
    ]  # fmt: skip
    # one thread: on a shared machine several threads per process can wait on each other
    env = {"OMP_NUM_THREADS": "1"}
    fit = run_salt(["fit", "--config", str(CONFIG), *data, *LAPTOP], cwd, timeout=900, env=env)
    folder = only_run_dir(cwd)
    test = run_salt(["test", str(folder)], cwd, timeout=600, env=env)
    (ckpt,) = sorted(folder.glob("ckpts/*.ckpt"))[-1:]
    onnx = run_salt(
        ["--ckpt_path", str(ckpt), "--parity_jets", "300"],
        cwd, timeout=600, command="salt.export.to_onnx", env=env,
    )  # fmt: skip
    return {"fit": fit, "test": test, "onnx": onnx, "run": folder}


def test_fit_translates_and_logs_decoder_losses_and_vertex_finding(run):
    assert "is a salt-ml config, translated into salt's schema" in run["fit"].stdout
    assert is_saltml(yaml.safe_load(CONFIG.read_text()))
    written = yaml.safe_load((run["run"] / "config.yaml").read_text())
    assert written["model"]["model"]["init_args"]["mask_decoder"]["class_path"] == (
        "salt.models.MaskDecoder"
    )
    lines = (run["run"] / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    for key in ("train/mask_ce_loss", "train/mask_dice_loss", "train/object_class_ce_loss",
                "train/regression_loss", "train/mask_ce_layer0_loss", "val/regression_loss",
                "val/vertex_b_eff", "val/vertex_c_fake_rate", "val/vertex_all_eff"):  # fmt: skip
        assert key in header, key
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val) == 3 and np.isfinite(val).all()
    assert val[-1] < val[0], val
    effs = [float(r["val/vertex_all_eff"]) for r in rows if r.get("val/vertex_all_eff")]
    assert len(effs) == 3 and all(0 <= e <= 1 for e in effs)


def test_prediction_file_holds_consistent_objects(run):
    from ftag.hdf5 import H5Reader

    (path,) = run["run"].glob("ckpts/*__test_*.h5")
    with h5py.File(path) as f:
        jets, objects, tracks = f["jets"][:], f["objects"][:], f["tracks"][:]
    assert objects.shape == (200, 5)
    probs = np.stack([objects[f"{NAME}_p{c}"] for c in OBJECT_CLASSES], -1).astype(np.float64)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5)
    assert np.array_equal(objects["object_class"], probs.argmax(-1))
    assert np.array_equal(objects["object_index"], np.broadcast_to(np.arange(5), (200, 5)))
    for target in ("pt", "Lxy", "deta", "dphi", "mass"):
        assert np.isfinite(objects[f"{NAME}_{target}"]).all(), target
    assert (objects[f"{NAME}_pt"] > 0).all()  # a log-scaled target comes back positive
    index = tracks[f"{NAME}_aux_ObjectIndex"]
    valid = tracks["valid"].astype(bool)
    assert (index[~valid] == -1).all()
    assert ((index >= -1) & (index < 5)).all()
    jet, slot = np.nonzero(index >= 0)
    assert len(jet) > 0, "the trained model should assign some tracks to objects"
    # a track's object is a predicted object, never the null class
    assert (objects["object_class"][jet, index[jet, slot]] != 2).all()
    assert len(jets) == 200
    # ftag's reader reads the objects as it reads any per-jet dataset
    reader = H5Reader(path, batch_size=100, shuffle=False)
    read = reader.load({"objects": [f"{NAME}_pb", "object_class"], "jets": [f"{NAME}_pb"]})
    assert read["objects"].shape == (200, 5)
    assert np.array_equal(read["objects"]["object_class"], objects["object_class"])


def test_report_has_the_vertex_finding_table(run):
    (report,) = run["run"].glob("ckpts/*__report.json")
    found = json.loads(report.read_text())["vertex_finding"]
    assert found["classes"] == ["b", "c"]
    counts = found["counts"]
    assert counts["b_true"] > 0 and counts["c_true"] > 0
    for name in ("b", "c"):
        assert counts[f"{name}_found"] <= counts[f"{name}_true"]
        assert counts[f"{name}_fake"] <= counts[f"{name}_pred"]
        if counts[f"{name}_true"]:
            eff = counts[f"{name}_found"] / counts[f"{name}_true"]
            assert found["rates"][f"{name}_eff"] == pytest.approx(eff)
    markdown = report.with_name(report.name.replace(".json", ".md")).read_text()
    assert "## Vertex finding (MaskFormer objects)" in markdown
    assert f"| b | {found['rates']['b_eff']:.3f} |" in markdown
    assert "vertex finding: b_eff" in run["test"].stdout


def test_onnx_export_passes_parity_with_object_outputs(run):
    out = run["onnx"].stdout
    assert "PASSED" in out, out[-3000:]
    assert "0 to 40 tracks per jet" in out
    for name in (f"{NAME}_object_pb", f"{NAME}_object_pnull", f"{NAME}_ObjectIndex",
                 f"{NAME}_pt"):  # fmt: skip
        assert name in out, name
    import onnxruntime as ort

    (model,) = run["run"].glob("*.onnx")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outputs = {o.name: o for o in session.get_outputs()}
    assert outputs[f"{NAME}_ObjectIndex"].type == "tensor(int8)"
    rng = np.random.default_rng(0)
    feed = {"jet_features": rng.normal(size=(1, 2)).astype(np.float32)}
    for n_tracks in (0, 7):
        feed["track_features"] = rng.normal(size=(n_tracks, 19)).astype(np.float32)
        got = dict(zip(outputs, session.run(list(outputs), feed)))
        assert got[f"{NAME}_ObjectIndex"].shape == (n_tracks,)
        total = sum(got[f"{NAME}_object_p{c}"] for c in OBJECT_CLASSES)
        np.testing.assert_allclose(total, np.ones(5), atol=1e-5)


def test_mask_decoder_without_mf_config_stops_before_training(tmp_path):
    files = write_demo_dataset(tmp_path / "demo", num_jets=300, seed=4, classes="bjets,cjets,ujets")
    cwd = tmp_path / "work"
    cwd.mkdir()
    result = run_salt(
        ["fit", "--config", str(CONFIG), "--data.mf_config", "null",
         "--data.train_file", str(files["train"]), "--data.val_file", str(files["val"]),
         "--data.norm_dict", str(files["norm_dict"]), "--trainer.accelerator", "cpu"],
        cwd, check=False, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "mask_decoder needs data.mf_config" in result.stderr
    assert not (cwd / "logs").exists() or not any((cwd / "logs").iterdir())


def test_sizes_that_follow_from_the_config_are_derived(tmp_path):
    """loss_config.num_classes follows from mf_config's object classes and the object task's
    input size from the decoder's embed_dim: a config in salt's schema may leave them out."""
    files = write_demo_dataset(tmp_path / "demo", num_jets=300, seed=4, classes="bjets,cjets,ujets")
    cwd = tmp_path / "work"
    cwd.mkdir()
    run_salt(["migrate-config", str(CONFIG), "-o", str(cwd / "salt.yaml")], cwd)
    config = yaml.safe_load((cwd / "salt.yaml").read_text())
    model = config["model"]["model"]["init_args"]
    model["mask_decoder"]["init_args"]["loss_config"].pop("num_classes")
    (task,) = [t for t in model["tasks"] if t["init_args"]["input_name"] == "objects"]
    task["init_args"]["dense_config"].pop("input_size")
    (cwd / "salt.yaml").write_text(yaml.safe_dump(config))
    run_salt(
        ["fit", "--config", "salt.yaml", "--data.train_file", str(files["train"]),
         "--data.val_file", str(files["val"]), "--data.norm_dict", str(files["norm_dict"]),
         "--data.class_dict", str(files["class_dict"]),
         "--trainer.accelerator", "cpu", "--trainer.precision", "32", "--trainer.max_epochs", "1",
         "--force"],
        cwd, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    written = yaml.safe_load((only_run_dir(cwd) / "config.yaml").read_text())
    model = written["model"]["model"]["init_args"]
    assert model["mask_decoder"]["init_args"]["loss_config"]["num_classes"] == 2
    (task,) = [t for t in model["tasks"] if t["init_args"]["input_name"] == "objects"]
    assert task["init_args"]["dense_config"]["input_size"] == 32
