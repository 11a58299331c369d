"""Bad Xbb input stops `salt fit` before training, with a message that says what to fix.

Each case is our GN2X or GN2XE test config (salt-ml schema) on Xbb demo data with one mistake:
an edge feature whose constituent variables are not read, a parameter value the file does not
hold, a labeller class the file's truth labels cannot define. `salt fit` exits 2 with a
`salt: error:` line, no traceback, and leaves no run folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from salt.demo import write_demo_dataset
from tests.conftest import run_dirs, run_salt_many
from tests.test_saltml_configs import CONFIGS, LAPTOP


def _without_angles(config: dict) -> None:
    tracks = config["data"]["variables"]["tracks"]
    tracks[:] = [v for v in tracks if v not in ("eta", "phi")]


def _mass_parameter(config: dict) -> None:
    # the demo's jet mass is in MeV: 125 (GeV) is a value no jet has
    config["data"]["variables"]["parameters"] = ["mass"]
    config["data"]["parameters"] = {"mass": {"train": [125.0], "test": 125.0}}


def _ghost_class(config: dict) -> None:
    config["data"]["labeller_config"] = {
        "use_labeller": True,
        "class_names": ["hbb", "hcc", "top", "ghostbjets"],
        "require_labels": True,
    }


CASES = {
    "edge_variables": (
        "GN2XE",
        _without_angles,
        ["edge feature 'dR' needs tracks variables 'eta', 'phi'", "data.variables.tracks"],
    ),
    "parameter_value": (
        "GN2X",
        _mass_parameter,
        ["data.parameters.mass.train lists [125.0]", "pp_output_train.h5", "in its units"],
    ),
    "labeller_class": (
        "GN2X",
        _ghost_class,
        ["class 'ghostbjets'", "HadronGhostTruthLabelID", "pp_output_train.h5"],
    ),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("xbb_bad")
    files = write_demo_dataset(root / "demo", 600, seed=8, classes="hbb,hcc,top,qcd", kind="xbb")
    commands, folders = [], {}
    for case, (name, edit, _) in CASES.items():
        config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
        edit(config)
        path = root / f"{case}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        folders[case] = root / case
        folders[case].mkdir()
        commands.append([
            "fit", "--config", str(path),
            "--data.train_file", str(files["train"]), "--data.val_file", str(files["val"]),
            "--data.norm_dict", str(files["norm_dict"]),
            "--data.class_dict", str(files["class_dict"]), *LAPTOP,
            "--trainer.default_root_dir", str(folders[case] / "logs"),
            "--trainer.logger.init_args.save_dir", str(folders[case] / "logs"),
        ])  # fmt: skip
    out = run_salt_many(commands, cwd=root)
    return {case: (result, folders[case]) for case, result in zip(CASES, out)}


@pytest.mark.parametrize("case", list(CASES))
def test_stops_before_training_naming_the_fix(results, case):
    result, folder = results[case]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "salt: error:" in result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    for text in CASES[case][2]:
        assert text in message, result.stderr
    assert run_dirs(folder) == [] and run_dirs(folder.parent) == [], "no run folder is left"
    assert not list(Path(folder).rglob("*.ckpt"))
