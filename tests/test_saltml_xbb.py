"""Xbb configs in salt-ml's schema (GN2X, GN2XE) train, test and export through `salt` unchanged.

Our own small GN2X and GN2XE (tests/saltml_configs/) read the Xbb demo data (large-R jets with
100 track and 100 flow slots, classes hbb, hcc, top, qcd) with only the file paths and the
trainer's device settings given on the command line. GN2XE, like upstream's, has no
`lrs_config`: the translation gives it salt-ml's default schedule.
"""

from __future__ import annotations

import json

import h5py
import hdf5plugin  # noqa: F401  (LZ4)
import numpy as np
import pytest
import yaml

from salt.demo import write_demo_dataset
from salt.saltml import SALTML_LRS_DEFAULT, is_saltml, load_yaml, translate
from tests.conftest import REPO
from tests.test_saltml_configs import CONFIGS, LAPTOP, _ok, drive

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

CLASSES = ["hbb", "hcc", "top", "qcd"]
PROBABILITIES = ["phbb", "phcc", "ptop", "pqcd"]  # ftag's short names of the Xbb classes
NAMES = {"GN2X": "GN2Xtest", "GN2XE": "GN2XEtest"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """config name -> {fit, test, onnx: {code, stdout, stderr}, run: folder}."""
    root = tmp_path_factory.mktemp("saltml_xbb")
    files = write_demo_dataset(root / "demo", num_jets=1000, seed=5, classes=CLASSES, kind="xbb")
    commands = {
        name: [
            "--config", str(CONFIGS / f"{name}.yaml"),
            "--data.train_file", str(files["train"]), "--data.val_file", str(files["val"]),
            "--data.test_file", str(files["test"]), "--data.norm_dict", str(files["norm_dict"]),
            "--data.class_dict", str(files["class_dict"]), *LAPTOP,
        ]
        for name in NAMES
    }  # fmt: skip
    return drive(commands, root / "work")


@pytest.mark.parametrize("name", list(NAMES))
def test_fit_trains(runs, name):
    fit = runs[name]["fit"]
    _ok(fit, f"salt fit {name}")
    run = runs[name]["run"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    init_args = config["model"]["model"]["init_args"]
    metrics = (run / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in metrics[1:]]
    val_loss = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert val_loss and np.isfinite(val_loss).all()
    if name == "GN2X":
        assert {n["input_name"] for n in init_args["init_nets"]} == {"tracks", "flow"}
        assert config["data"]["num_inputs"] == {"tracks": 100, "flow": 100}
    else:
        assert init_args["encoder"]["init_args"]["update_edges"] is True
        assert init_args["edge_init_nets"][0]["input_name"] == "tracks"
        # no lrs_config in the file: salt-ml's default, and the user is told so
        assert config["model"]["lrs_config"] == pytest.approx(SALTML_LRS_DEFAULT)
        assert "model.lrs_config not given" in fit["stdout"] + fit["stderr"]


@pytest.mark.parametrize("name", list(NAMES))
def test_test_writes_xbb_probabilities(runs, name):
    _ok(runs[name]["fit"], f"salt fit {name}")
    _ok(runs[name]["test"], f"salt test {name}")
    run = runs[name]["run"]
    (predictions,) = run.glob("ckpts/*__test_xbb.h5")
    with h5py.File(predictions) as f:
        jets = f["jets"][:]
        columns = [f"{NAMES[name]}_{p}" for p in PROBABILITIES]
        assert set(columns) <= set(jets.dtype.names), jets.dtype.names
        total = sum(jets[c].astype(np.float64) for c in columns)
        np.testing.assert_allclose(total, 1, atol=1e-4)
        assert len(jets) == 100
        # the truth labels travel with the outputs, for the report
        assert {"flavour_label", "R10TruthLabel_R22v1"} <= set(jets.dtype.names)
    # the report: Higgs-tagging working points and ROC, no b-tagging ones
    report = json.loads(predictions.with_name(f"{predictions.stem}__report.json").read_text())
    (model,) = report["models"]
    assert model["btag"] is None
    assert [r["hbb_eff"] for r in model["xbb"]["working_points"]] == [0.5, 0.6, 0.7]
    assert predictions.with_name(f"{predictions.stem}__roc_xbb.png").is_file()


@pytest.mark.parametrize("name", list(NAMES))
def test_to_onnx_passes_parity(runs, name):
    _ok(runs[name]["fit"], f"salt fit {name}")
    onnx = runs[name]["onnx"]
    _ok(onnx, f"to_onnx {name}")
    assert "PASSED" in onnx["stdout"] + onnx["stderr"]
    (path,) = runs[name]["run"].glob("*.onnx")
    assert path.stat().st_size > 0


def test_physics_benchmark_config_reads_what_gn2x_reads():
    """The physics benchmark's larger GN2X is salt-ml's schema with exactly GN2X's inputs."""
    bench = load_yaml(REPO / "benchmarks" / "configs" / "GN2X_physics.yaml")
    small = load_yaml(CONFIGS / "GN2X.yaml")
    assert is_saltml(bench)
    translated, _ = translate(bench, "GN2X_physics.yaml")
    for config in (bench, translated):
        assert config["data"]["variables"] == small["data"]["variables"]
    assert bench["data"]["num_inputs"] == small["data"]["num_inputs"]
    tasks = [
        t["init_args"]["name"]
        for t in bench["model"]["model"]["init_args"]["tasks"]["init_args"]["modules"]
    ]
    assert tasks == ["jets_classification", "track_origin", "track_vertexing"]
