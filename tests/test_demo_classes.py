"""Demo data for any set of ftag flavour classes (``--classes``): labels agree with ftag's cuts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (LZ4)
import numpy as np
import pytest
import yaml
from ftag import Flavours

import salt.demo as demo
from salt.demo import DemoDataError
from salt.errors import SaltError

GN3_CLASSES = "ghostbjets,ghostcjets,ghostsjets,ghostudjets,ghostgjets,ghosttaujets"
# GN3V01.yaml's jets_charge label_map on the ids the demo writes: 0 b quark, 1 anti-b, 2 other.
# Positive B-meson ids hold an anti-b, a positive Lambda_b holds a b.
JETS_CHARGE_MAP = {
    511: 1, -511: 0, 521: 1, -521: 0, 531: 1, -531: 0, 5122: 0, -5122: 1,
    411: 2, -411: 2, 421: 2, -421: 2, 431: 2, -431: 2, 4122: 2, -4122: 2, 0: 2, 15: 2, -15: 2,
}  # fmt: skip


def _jets(path: Path) -> tuple[np.ndarray, list[str]]:
    with h5py.File(path, "r") as f:
        return f["jets"][:], list(f["jets"].attrs["flavour_label"])


def _selected(name: str, jets: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(jets), dtype=bool)
    mask[Flavours[name].cuts(jets).idx] = True
    return mask


@pytest.mark.parametrize(
    "classes",
    [
        "bjets,cjets,ujets",
        "ujets,cjets,bjets,taujets",
        GN3_CLASSES,
        "lquarkjets,gluonjets,bjets,cjets",
        "B0meson,Bplusmeson,Bs0meson,D0meson,nonD0meson",
    ],
)
def test_cuts_select_exactly_each_class(tmp_path, classes):
    names = classes.split(",")
    paths = demo.write_demo_dataset(tmp_path, num_jets=3000, seed=5, classes=classes)
    class_dict = yaml.safe_load(paths["class_dict"].read_text())
    assert len(class_dict["jets"]["flavour_label"]) == len(names)
    for split in ("train", "test"):
        jets, attr = _jets(paths[split])
        assert attr == names
        label = jets["flavour_label"]
        assert set(np.unique(label)) == set(range(len(names)))
        for i, name in enumerate(names):
            np.testing.assert_array_equal(_selected(name, jets), label == i, err_msg=name)
        np.testing.assert_array_equal(
            jets["HadronGhostTruthLabelID"], jets["HadronConeExclTruthLabelID"]
        )


def test_gn3_labels(tmp_path):
    paths = demo.write_demo_dataset(tmp_path, num_jets=3000, seed=6, classes=GN3_CLASSES)
    jets, _ = _jets(paths["train"])
    label, parton = jets["flavour_label"], jets["PartonTruthLabelID"]
    pdg = jets["HadronGhostInitialTruthLabelPdgId"]
    np.testing.assert_array_equal(pdg, jets["HadronConeExclTruthLabelPdgId"])
    assert set(np.unique(parton[label == 0])) == {5}
    assert set(np.unique(parton[label == 1])) == {4}
    assert set(np.unique(parton[label == 2])) == {3}
    assert set(np.unique(parton[label == 3])) == {1, 2}
    assert set(np.unique(parton[label == 4])) == {21}
    assert set(np.unique(parton[label == 5])) == {15}
    assert set(np.unique(pdg[label == 0])) == {-5122, -531, -521, -511, 511, 521, 531, 5122}
    assert set(np.unique(pdg[label == 1])) == {-4122, -431, -421, -411, 411, 421, 431, 4122}
    assert set(np.unique(pdg[(label >= 2) & (label <= 4)])) == {0}
    assert set(np.unique(pdg[label == 5])) == {-15, 15}
    assert set(np.unique(pdg).tolist()) <= set(JETS_CHARGE_MAP)
    # train: classes in equal parts, tau a third (as UPP's 0.3:0.3:0.3:0.1)
    fractions = np.bincount(label, minlength=6) / len(label)
    np.testing.assert_allclose(fractions, [3 / 16] * 5 + [1 / 16], atol=0.025)


def test_default_is_todays_four_classes(tmp_path):
    paths = demo.write_demo_dataset(tmp_path, num_jets=500, seed=1)
    _, attr = _jets(paths["train"])
    assert attr == ["bjets", "cjets", "ujets", "taujets"]
    again = demo.write_demo_dataset(
        tmp_path / "named", num_jets=500, seed=1, classes=["bjets", "cjets", "ujets", "taujets"]
    )
    assert again["train"].read_bytes() == paths["train"].read_bytes()


def test_light_jets_mix_partons(tmp_path):
    paths = demo.write_demo_dataset(tmp_path, num_jets=3000, seed=2, classes="bjets,cjets,ujets")
    jets, _ = _jets(paths["train"])
    light = jets["flavour_label"] == 2
    partons, counts = np.unique(jets["PartonTruthLabelID"][light], return_counts=True)
    assert partons.tolist() == [1, 2, 3, 21]
    assert counts.min() > 0.1 * light.sum()
    assert not np.any(jets["HadronConeExclTruthLabelID"] == 15)


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ("bjets,ghostbjets", "also select"),
        ("ujets,ghostsjets", "also select"),
        ("bjets,bjet", "Did you mean: bjets"),
        ("bjets,hbb", "cannot be written by --kind btag"),
        ("bjets,bjets", "twice"),
        (" , ", "empty"),
    ],
)
def test_bad_classes(tmp_path, classes, message):
    with pytest.raises(DemoDataError, match=message) as info:
        demo.write_demo_dataset(tmp_path, num_jets=100, classes=classes)
    assert isinstance(info.value, SaltError)
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_cli_classes(tmp_path):
    script = Path(sys.executable).parent / "salt-demo-data"
    out = tmp_path / "out"
    cmd = [str(script), str(out), "--num-jets", "200", "--classes", "bjets,cjets,ujets"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert _jets(out / "pp_output_train.h5")[1] == ["bjets", "cjets", "ujets"]
    bad = [str(script), str(tmp_path / "bad"), "--classes", "bjets,ghostbjets"]
    result = subprocess.run(bad, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "ghostbjets" in result.stderr
    assert not (tmp_path / "bad").exists()
