"""Configs in salt-ml's schema train, test and export through `salt` unchanged.

Each file in tests/saltml_configs/ stands for one kind of salt-ml 0.13.0 config (GN2, GN2emu,
GN3V01, DIPS, DL1, the regressions). Only the file paths and the trainer's device settings are
given on the command line, as a user on a laptop would. All commands run in one Python process
(`salt fit`, `salt test`, `to_onnx` through their entry points), on demo data with the classes
each config expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (LZ4)
import numpy as np
import pytest
import yaml
from ftag import Flavours

from salt.demo import write_demo_dataset
from salt.saltml import is_saltml
from tests.conftest import run_python

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

CONFIGS = Path(__file__).parent / "saltml_configs"

#: config -> the demo classes it reads (its jet classes, in flavour_label order)
CLASSES = {
    "GN2": "bjets,cjets,ujets,taujets",
    "GN2emu": "bjets,cjets,ujets",
    "GN3": "ghostbjets,ghostcjets,ghostsjets,ghostudjets,ghostgjets,ghosttaujets",
    "dips": "bjets,cjets,ujets",
    "DL1": "bjets,cjets,ujets",
    "regression_gaussian": "bjets,cjets,ujets",
    "regression_multi_target": "bjets,cjets,ujets,taujets",
}

#: what a laptop user changes besides the paths, and the size of this test
LAPTOP = [
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32",
    "--trainer.enable_model_summary", "false", "--force",
    "--data.num_train", "300", "--data.num_val", "100", "--data.num_test", "100",
    "--data.batch_size", "100", "--trainer.max_epochs", "1",
]  # fmt: skip

_DRIVER = """
import contextlib, glob, io, json, sys, traceback
from salt.main import main as salt_main
from salt.export.to_onnx import main as onnx_main

def call(function, args):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            function(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}

results = {}
for name, fit_args in json.loads(sys.argv[1]).items():
    before = set(glob.glob("logs/*/"))
    steps = results[name] = {"fit": call(salt_main, ["fit", *fit_args])}
    runs = sorted(set(glob.glob("logs/*/")) - before - set(glob.glob("logs/latest/")))
    if steps["fit"]["code"] or not runs:
        continue
    run = runs[-1]
    steps["run"] = run
    steps["test"] = call(salt_main, ["test", run])
    ckpts = sorted(glob.glob(f"{run}/ckpts/*.ckpt"))
    steps["onnx"] = call(onnx_main, ["--ckpt_path", ckpts[-1], "--parity_jets", "100"])
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """config name -> {fit, test, onnx: {code, stdout, stderr}, run: folder}."""
    root = tmp_path_factory.mktemp("saltml_configs")
    data = {}
    for classes in sorted(set(CLASSES.values())):
        folder = root / f"demo_{len(data)}"
        data[classes] = write_demo_dataset(folder, num_jets=1000, seed=3, classes=classes)
    commands = {}
    for name, classes in CLASSES.items():
        files = data[classes]
        commands[name] = [
            "--config", str(CONFIGS / f"{name}.yaml"),
            "--data.train_file", str(files["train"]), "--data.val_file", str(files["val"]),
            "--data.test_file", str(files["test"]), "--data.norm_dict", str(files["norm_dict"]),
            "--data.class_dict", str(files["class_dict"]), *LAPTOP,
        ]  # fmt: skip
    return drive(commands, root / "work")


def drive(commands: dict[str, list[str]], cwd: Path) -> dict[str, dict]:
    """`salt fit` with each name's arguments, then `salt test` and `to_onnx` of its run, all in
    one Python process in `cwd` (made here): name -> {fit, test, onnx: {code, stdout, stderr},
    run: folder}."""
    cwd.mkdir()
    result = run_python(_DRIVER, [json.dumps(commands)], cwd, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.splitlines()[-1])
    for steps in out.values():
        if "run" in steps:
            steps["run"] = cwd / steps["run"]
    return out


def _ok(step: dict, what: str) -> None:
    assert step["code"] == 0, (
        f"{what} exited {step['code']}\n{step['stdout'][-3000:]}\n" + step["stderr"][-5000:]
    )


@pytest.mark.parametrize("name", list(CLASSES))
def test_fit_translates_and_trains(runs, name):
    fit = runs[name]["fit"]
    _ok(fit, f"salt fit {name}")
    assert "is a salt-ml config, translated into salt's schema" in fit["stdout"] + fit["stderr"]
    source = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert is_saltml(source)
    run = runs[name]["run"]
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert not is_saltml(written), "the run folder must hold the translation, in salt's schema"
    metrics = (run / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    values = [dict(zip(header, line.split(","))) for line in metrics[1:]]
    val_loss = [float(v["val/loss"]) for v in values if v.get("val/loss")]
    assert val_loss and all(np.isfinite(val_loss))


@pytest.mark.parametrize("name", list(CLASSES))
def test_test_writes_predictions(runs, name):
    _ok(runs[name]["fit"], f"salt fit {name}")
    _ok(runs[name]["test"], f"salt test {name}")
    run = runs[name]["run"]
    (predictions,) = run.glob("ckpts/*__test_*.h5")
    with h5py.File(predictions) as f:
        jets = f["jets"]
        assert len(jets) == 100
        floats = [n for n in jets.dtype.names if jets.dtype[n].kind == "f"]
        model = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["name"]
        outputs = [n for n in floats if n.startswith(f"{model}_")]
        assert outputs, f"no model output in {jets.dtype.names}"
        for column in outputs:
            assert np.isfinite(jets[column]).all(), column
        if name.startswith("regression"):
            return
        # the jet classes' probabilities, named by ftag's short names (pb, pc, pu, ...)
        classes = CLASSES[name].split(",")
        probabilities = [f"{model}_{Flavours[c].px}" for c in classes]
        total = sum(jets[n].astype(np.float64) for n in probabilities)
        np.testing.assert_allclose(total, 1, atol=1e-4)


@pytest.mark.parametrize("name", list(CLASSES))
def test_to_onnx_passes_parity(runs, name):
    _ok(runs[name]["fit"], f"salt fit {name}")
    onnx = runs[name]["onnx"]
    _ok(onnx, f"to_onnx {name}")
    run = runs[name]["run"]
    assert list(run.glob("*.onnx")), "no ONNX file written"
