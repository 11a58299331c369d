"""Xbb demo data (``--kind xbb``): large-R jets in UPP's layout with learnable substructure."""

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
from tests.test_demo_physics import auc

CLASSES = ["hbb", "hcc", "top", "qcd", "htautauhad"]
HBB, HCC, TOP, QCD, TAUTAU = range(5)
PILEUP, FAKE, PRIMARY, FROM_B, FROM_BC, FROM_C, FROM_TAU, OTHER_SECONDARY = range(8)


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("xbb")
    return demo.write_demo_dataset(out, num_jets=6000, seed=21, classes=CLASSES, kind="xbb")


@pytest.fixture(scope="module")
def data(paths) -> dict[str, np.ndarray]:
    return _read(paths["train"])


def test_layout(paths):
    assert paths["test"].name == "pp_output_test_xbb.h5"
    for split, n in (("train", 6000), ("val", 600), ("test", 600)):
        with h5py.File(paths[split], "r") as f:
            assert sorted(f) == ["flow", "jets", "tracks"]
            assert f["jets"].shape == (n,)
            for name in ("tracks", "flow"):
                assert f[name].shape == (n, 100)
                assert f[name].chunks == (100, 100)
            for name in f:
                assert "32004" in f[name]._filters
            assert list(f["jets"].attrs["flavour_label"]) == CLASSES
            assert f.attrs["dsids"] == "['xbb']"
            assert {"pt", "eta", "mass", "R10TruthLabel_R22v1"} <= set(f["jets"].dtype.names)
            assert f["jets"].dtype["GhostBHadronsFinalCount"] == np.dtype("<i4")
            assert f["flow"].dtype.names == (
                "flow_pt", "flow_energy", "flow_deta", "flow_dphi", "flow_isCharged", "valid",
            )  # fmt: skip
            for field in ("pt", "eta", "phi", "d0", "IP3D_signed_d0_significance", "leptonID"):
                assert field in f["tracks"].dtype.names
            assert f["tracks"].dtype["subjetIndex"] == np.dtype("<i4")


def test_dicts(paths, data):
    norm = yaml.safe_load(paths["norm_dict"].read_text())
    assert list(norm) == ["jets", "tracks", "flow"]
    assert list(norm["jets"]) == ["pt", "eta", "mass"]
    assert {"pt", "eta", "phi", "subjetIndex", "d0", "leptonID"} <= set(norm["tracks"])
    assert list(norm["flow"]) == [
        "flow_pt",
        "flow_energy",
        "flow_deta",
        "flow_dphi",
        "flow_isCharged",
    ]
    ok = data["tracks"]["valid"]
    x = data["tracks"]["subjetIndex"][ok].astype(np.float64)
    np.testing.assert_allclose(norm["tracks"]["subjetIndex"]["mean"], x.mean(), rtol=1e-9)
    classes = yaml.safe_load(paths["class_dict"].read_text())
    assert list(classes["jets"]) == [
        "flavour_label", "R10TruthLabel_R22v1", "GhostBHadronsFinalCount",
        "GhostCHadronsFinalCount",
    ]  # fmt: skip
    assert len(classes["jets"]["flavour_label"]) == 5
    assert len(classes["tracks"]["ftagTruthOriginLabel"]) == 8


@pytest.mark.parametrize(
    "classes",
    [
        None,
        "hbb,hcc,top,qcd,htautauhad",
        "hbb,tqqb,wqq_from_t,qcdbb,qcdbx,qcdcx,qcdll",
        "Zbb,Wqq,qcd",
    ],
)
def test_cuts_select_exactly_each_class(tmp_path, classes):
    paths = demo.write_demo_dataset(tmp_path, num_jets=1500, seed=3, classes=classes, kind="xbb")
    names = classes.split(",") if classes else ["hbb", "hcc", "top", "qcd"]
    for split in ("train", "test"):
        with h5py.File(paths[split], "r") as f:
            jets, attr = f["jets"][:], list(f["jets"].attrs["flavour_label"])
        assert attr == names
        assert set(np.unique(jets["flavour_label"])) == set(range(len(names)))
        for i, name in enumerate(names):
            selected = np.zeros(len(jets), dtype=bool)
            selected[Flavours[name].cuts(jets).idx] = True
            np.testing.assert_array_equal(selected, jets["flavour_label"] == i, err_msg=name)


@pytest.mark.parametrize(
    ("classes", "message"),
    [("top,tqqb", "also select"), ("qcd,qcdbb", "also select"), ("hbb,bjets", "--kind xbb")],
)
def test_bad_classes(tmp_path, classes, message):
    with pytest.raises(DemoDataError, match=message):
        demo.write_demo_dataset(tmp_path, num_jets=100, classes=classes, kind="xbb")
    assert not list(tmp_path.iterdir())


def test_tracks_and_subjets(data):
    jets, tracks, flow = data["jets"], data["tracks"], data["flow"]
    ok = tracks["valid"]
    n = ok.sum(axis=1)
    np.testing.assert_array_equal(n, jets["n_tracks"])
    assert 20 < n.mean() < 40  # about 30 of 100 slots
    assert n.max() <= 100
    assert set(np.unique(tracks["subjetIndex"][ok])) == {-1, 0, 1, 2}
    # decay products are collimated: nearly all land in a subjet; pileup mostly in none
    origin = tracks["ftagTruthOriginLabel"]
    decay = ok & (origin >= FROM_B) & (origin <= FROM_TAU)
    assert (tracks["subjetIndex"][decay] >= 0).mean() > 0.95
    assert (tracks["subjetIndex"][ok & (origin == PILEUP)] == -1).mean() > 0.7
    # subjets are ordered by their tracks' pt
    sums = np.stack(
        [
            np.where(ok & (tracks["subjetIndex"] == k), tracks["pt"], 0).sum(axis=1)
            for k in range(3)
        ],
        axis=1,
    )
    assert np.all(sums[:, 0] >= sums[:, 1])
    assert np.all(sums[:, 1] >= sums[:, 2])
    # tracks spread over the large-R jet, not a small-R cone
    dr = np.hypot(tracks["deta"], tracks["dphi"])[ok]
    assert dr.max() <= 1.0 + 1e-6
    assert (dr > 0.4).mean() > 0.1
    assert np.all(np.abs(tracks["phi"][ok]) <= np.pi)
    # flows: charged ones follow the non-pileup tracks, neutral ones are added
    charged = flow["valid"] & (flow["flow_isCharged"] == 1)
    full = flow["valid"].sum(axis=1) < 100
    not_pileup = ok & (tracks["ftagTruthOriginLabel"] != PILEUP)
    np.testing.assert_array_equal(charged.sum(axis=1)[full], not_pileup.sum(axis=1)[full])
    assert (flow["valid"] & (flow["flow_isCharged"] == 0)).sum(axis=1).mean() > 5


def test_learnable_substructure(data):
    jets, tracks = data["jets"], data["tracks"]
    ok, label = tracks["valid"], jets["flavour_label"]
    mass = jets["mass"] / 1e3
    assert 115 < np.median(mass[label == HBB]) < 135
    assert 115 < np.median(mass[label == HCC]) < 135
    assert auc(-np.abs(mass[label == HBB] - 125), -np.abs(mass[label == QCD] - 125)) > 0.8
    assert auc(-np.abs(mass[label == HBB] - 125), -np.abs(mass[label == TOP] - 125)) > 0.75
    # two prongs (H) against three (top): the number of subjets with tracks
    subjets = np.stack([(ok & (tracks["subjetIndex"] == k)).any(axis=1) for k in range(3)]).sum(0)
    assert (subjets[label == HBB] == 2).mean() > 0.7
    assert (subjets[label == TOP] == 3).mean() > 0.4
    assert (subjets[label == TOP] == 3).mean() > 2 * (subjets[label == HBB] == 3).mean()
    assert (subjets[label == QCD] == 1).mean() > 0.5
    # displaced vertices in b subjets, fewer in c, hardly any in QCD
    displaced = (ok & (tracks["IP3D_signed_d0_significance"] > 3)).sum(axis=1)
    assert auc(displaced[label == HBB], displaced[label == QCD]) > 0.8
    assert (
        displaced[label == HBB].mean()
        > displaced[label == HCC].mean()
        > displaced[label == QCD].mean()
    )
    # taus: few tracks
    assert jets["n_tracks"][label == TAUTAU].mean() < 0.6 * jets["n_tracks"][label == HBB].mean()
    b_count = jets["GhostBHadronsFinalCount"]
    assert set(np.unique(b_count[label == HBB])) == {2}
    assert set(np.unique(b_count[label == QCD])) == {0, 1, 2}


def test_top_mass_peak(tmp_path):
    paths = demo.write_demo_dataset(
        tmp_path, num_jets=1000, seed=8, classes="tqqb,wqq_from_t", kind="xbb"
    )
    jets = _read(paths["train"])["jets"]
    assert 160 < np.median(jets["mass"][jets["flavour_label"] == 0] / 1e3) < 185
    assert 72 < np.median(jets["mass"][jets["flavour_label"] == 1] / 1e3) < 90


def test_determinism_and_cli(tmp_path, paths):
    script = Path(sys.executable).parent / "salt-demo-data"
    cmd = [str(script), str(tmp_path), "--num-jets", "6000", "--seed", "21", "--kind", "xbb"]
    result = subprocess.run([*cmd, "--classes", ",".join(CLASSES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "pp_output_test_xbb.h5" in result.stderr + result.stdout
    for key in ("train", "test", "norm_dict", "class_dict"):
        assert (tmp_path / paths[key].name).read_bytes() == paths[key].read_bytes(), key
    result = subprocess.run([*cmd, "--classes", "hbb,ujets"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "ujets" in result.stderr
