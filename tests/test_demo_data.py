"""Tests of the UPP-format demo dataset generator (salt.demo): layout, labels, options."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import ftag
import h5py
import hdf5plugin  # noqa: F401  (registers the LZ4 filter for h5py reads)
import numpy as np
import pytest
import yaml
from ftag.hdf5 import H5Reader

import salt.demo as demo
from salt.demo import writer

NUM_JETS = 5000
REAL_UPP_DIR = Path("/tmp/upp20k/output")  # made by shared/upp/make_upp_dataset.sh, if present

EXPECTED_JETS = [
    ("pt", "<f4"), ("eta", "<f4"), ("mass", "<f4"), ("pt_btagJes", "<f4"), ("eta_btagJes", "<f4"),
    ("n_tracks", "<i4"), ("HadronConeExclTruthLabelID", "<i4"),
    ("HadronConeExclTruthLabelPt", "<f4"), ("n_truth_promptLepton", "<i4"),
    ("MockTagger_pu", "<f4"), ("MockTagger_pc", "<f4"), ("MockTagger_pb", "<f4"),
    ("MockTagger_ptau", "<f4"), ("absEta_btagJes", "<f4"), ("eventNumber", "<i8"),
    ("jetFoldHash", "<i4"), ("HadronConeExclExtendedTruthLabelID", "<i4"),
    ("HadronConeExclTruthLabelLxy", "<f4"), ("HadronGhostTruthLabelID", "<i4"),
    ("PartonTruthLabelID", "<i4"), ("HadronConeExclTruthLabelPdgId", "<i4"),
    ("HadronGhostInitialTruthLabelPdgId", "<i4"), ("ptFromTruthDressedWZJet", "<f4"),
    ("mcEventWeight", "<f4"), ("softMuon_pt", "<f4"), ("softMuon_dR", "<f4"),
    ("softMuon_eta", "<f4"), ("softMuon_phi", "<f4"), ("softMuon_qOverPratio", "<f4"),
    ("softMuon_momentumBalanceSignificance", "<f4"),
    ("softMuon_scatteringNeighbourSignificance", "<f4"), ("softMuon_pTrel", "<f4"),
    ("softMuon_ip3dD0", "<f4"), ("softMuon_ip3dZ0", "<f4"),
    ("softMuon_ip3dD0Significance", "<f4"), ("softMuon_ip3dZ0Significance", "<f4"),
    ("softMuon_ip3dD0Uncertainty", "<f4"), ("softMuon_ip3dZ0Uncertainty", "<f4"),
    ("flavour_label", "<i4"),
]  # fmt: skip
EXPECTED_TRACKS = [
    ("d0", "<f4"), ("z0SinTheta", "<f4"), ("dphi", "<f4"), ("deta", "<f4"), ("qOverP", "<f4"),
    ("IP3D_signed_d0_significance", "<f4"), ("IP3D_signed_z0_significance", "<f4"),
    ("phiUncertainty", "<f4"), ("thetaUncertainty", "<f4"), ("qOverPUncertainty", "<f4"),
    ("numberOfPixelHits", "|u1"), ("numberOfSCTHits", "|u1"),
    ("numberOfInnermostPixelLayerHits", "|u1"), ("numberOfNextToInnermostPixelLayerHits", "|u1"),
    ("numberOfInnermostPixelLayerSharedHits", "|u1"),
    ("numberOfInnermostPixelLayerSplitHits", "|u1"), ("numberOfPixelSharedHits", "|u1"),
    ("numberOfPixelSplitHits", "|u1"), ("numberOfSCTSharedHits", "|u1"), ("leptonID", "|i1"),
    ("valid", "|b1"), ("ftagTruthOriginLabel", "<i4"), ("ftagTruthTypeLabel", "<i4"),
    ("ftagTruthVertexIndex", "<i4"), ("numberOfPixelHoles", "|u1"), ("numberOfSCTHoles", "|u1"),
    ("lifetimeSignedD0Significance", "<f4"), ("lifetimeSignedZ0SinThetaSignificance", "<f4"),
    ("pt", "<f4"), ("eta", "<f4"), ("phi", "<f4"), ("subjetIndex", "<i4"),
    ("muon_quality", "|i1"), ("muon_qOverPratio", "<f4"),
    ("muon_momentumBalanceSignificance", "<f4"),
    ("muon_scatteringNeighbourSignificance", "<f4"), ("ftagTruthParentBarcode", "<i4"),
]  # fmt: skip
DATASETS = ["electrons", "flows", "jets", "tracks", "tracks_ghost", "truth_hadrons"]
CONSTITUENT_SLOTS = {
    "tracks": 40,
    "tracks_ghost": 40,
    "flows": 40,
    "electrons": 10,
    "truth_hadrons": 5,
}
ROOT_ATTRS = {
    "config", "jets_counts", "unique_jets", "dsids", "resampling_method", "upp_hash",
    "writer_version",
}  # fmt: skip
PILEUP, FAKE, PRIMARY, FROM_B, FROM_BC, FROM_C, FROM_TAU, OTHER_SECONDARY = range(8)


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["jets"][:], f["tracks"][:]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    return demo.write_demo_dataset(tmp_path_factory.mktemp("demo"), num_jets=NUM_JETS, seed=7)


@pytest.fixture(scope="module")
def train(paths) -> tuple[np.ndarray, np.ndarray]:
    return _read(paths["train"])


@pytest.fixture(scope="module")
def test_split(paths) -> tuple[np.ndarray, np.ndarray]:
    return _read(paths["test"])


def test_files_and_sizes(paths):
    assert set(paths) == {"train", "val", "test", "norm_dict", "class_dict"}
    names = {k: p.name for k, p in paths.items()}
    assert names == {
        "train": "pp_output_train.h5",
        "val": "pp_output_val.h5",
        "test": "pp_output_test_ttbar.h5",
        "norm_dict": "norm_dict.yaml",
        "class_dict": "class_dict.yaml",
    }
    assert len({p.parent for p in paths.values()}) == 1
    for split, n in (("train", NUM_JETS), ("val", NUM_JETS // 10), ("test", NUM_JETS // 10)):
        with h5py.File(paths[split], "r") as f:
            assert sorted(f) == DATASETS  # datasets at the root, no groups
            assert all(isinstance(f[k], h5py.Dataset) for k in f)
            assert f["jets"].shape == (n,)
            for name, slots in CONSTITUENT_SLOTS.items():
                assert f[name].shape == (n, slots)


def test_one_split_alone_equals_the_same_split_of_a_full_write(paths, tmp_path):
    alone = demo.write_demo_dataset(tmp_path, num_jets=NUM_JETS, seed=7, splits=["val"])
    assert set(alone) == {"val"} and [p.name for p in tmp_path.iterdir()] == ["pp_output_val.h5"]
    for got, expected in zip(_read(alone["val"]), _read(paths["val"])):
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()  # NaN too
    with pytest.raises(demo.DemoDataError, match="splits \\['tests'\\]"):
        demo.write_demo_dataset(tmp_path, num_jets=NUM_JETS, seed=7, splits=["tests"])


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_schema(paths, split):
    with h5py.File(paths[split], "r") as f:
        assert f["jets"].dtype.descr == EXPECTED_JETS
        assert f["tracks"].dtype.descr == EXPECTED_TRACKS
        assert f["tracks_ghost"].dtype == f["tracks"].dtype


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_lz4_and_chunks(paths, split):
    with h5py.File(paths[split], "r") as f:
        for name in DATASETS:
            assert "32004" in f[name]._filters, f[name]._filters
            assert f[name].maxshape == f[name].shape
        for name, slots in CONSTITUENT_SLOTS.items():
            assert f[name].chunks == (100, slots)
        assert f["jets"].chunks is not None
        assert f["jets"].maxshape == f["jets"].shape  # fixed size, as ftag's H5Writer writes


@pytest.mark.parametrize(("compression", "filter_id"), [("gzip", "gzip"), ("none", None)])
def test_other_compressions(tmp_path, compression, filter_id):
    paths = demo.write_demo_dataset(tmp_path, num_jets=200, seed=1, compression=compression)
    with h5py.File(paths["train"], "r") as f:
        assert f["tracks"].compression == filter_id
        assert "32004" not in f["tracks"]._filters


def test_attributes(paths):
    for split, dsids in (("train", ["ttbar", "zprime"]), ("test", ["ttbar"])):
        with h5py.File(paths[split], "r") as f:
            labels = f["jets"].attrs["flavour_label"]
            assert labels.dtype == object
            assert list(labels) == ["bjets", "cjets", "ujets", "taujets"]
            # variable-length utf-8 strings, as UPP stores them
            info = h5py.check_string_dtype(f["jets"].attrs.get_id("flavour_label").dtype)
            assert info is not None
            assert info.length is None
            assert set(f.attrs) == ROOT_ATTRS
            n = len(f["jets"])
            assert f.attrs["unique_jets"] == n
            assert f.attrs["unique_jets"].dtype == np.int64
            assert f.attrs["resampling_method"] == "none"
            assert f.attrs["upp_hash"].startswith("salt-demo-data v")
            assert f.attrs["writer_version"] == ftag.__version__
            assert f.attrs["dsids"] == str(dsids)
            config = json.loads(f.attrs["config"])
            assert config["seed"] == 7
            assert config["num_jets"] == n
            counts = json.loads(f.attrs["jets_counts"])
            assert counts["total"] == {"num_jets": n, "unique_jets": n}
            assert sum(v["num_jets"] for k, v in counts.items() if k != "total") == n


def test_compare_with_real_upp_file(paths):
    real = REAL_UPP_DIR / "pp_output_train.h5"
    if not real.exists():
        pytest.skip(f"no real UPP output at {real}")
    with h5py.File(real, "r") as r, h5py.File(paths["train"], "r") as f:
        for name in ("jets", "tracks"):
            # our files hold more variables; the ones UPP writes have its dtypes
            for field in r[name].dtype.names:
                assert f[name].dtype[field] == r[name].dtype[field], field
            assert f[name]._filters == r[name]._filters
        assert f["tracks"].chunks == r["tracks"].chunks
        assert set(f.attrs) == set(r.attrs)
        assert list(f["jets"].attrs["flavour_label"]) == list(r["jets"].attrs["flavour_label"])
    for name in ("norm_dict", "class_dict"):
        real_dict = yaml.safe_load((REAL_UPP_DIR / f"{name}.yaml").read_text())
        ours = yaml.safe_load(paths[name].read_text())
        assert set(real_dict["tracks"]) <= set(ours["tracks"])
        assert set(real_dict["jets"]) <= set(ours["jets"])


def test_flavour_labels(train, test_split):
    for jets in (train[0], test_split[0]):
        flav, truth = jets["flavour_label"], jets["HadronConeExclTruthLabelID"]
        np.testing.assert_array_equal(truth, np.array([5, 4, 0, 15])[flav])
        ext = jets["HadronConeExclExtendedTruthLabelID"]
        assert set(np.unique(ext[truth == 5])) <= {5, 54, 55}
        assert set(np.unique(ext[truth == 4])) <= {4, 44}
        assert set(np.unique(ext[truth == 0])) == {0}
        assert set(np.unique(ext[truth == 15])) == {15}
        light = truth == 0
        assert np.all(jets["HadronConeExclTruthLabelPt"][light] == 0)
        assert np.all(jets["HadronConeExclTruthLabelLxy"][light] == 0)
        heavy = jets["HadronConeExclTruthLabelPt"][~light] / jets["pt_btagJes"][~light]
        assert np.all((heavy >= 0.5) & (heavy <= 0.9 + 1e-6))
        assert np.all(jets["HadronConeExclTruthLabelLxy"] >= 0)
        probs = [jets[f"MockTagger_{p}"] for p in ("pu", "pc", "pb", "ptau")]
        np.testing.assert_allclose(np.sum(probs, axis=0), 1.0, atol=1e-5)
        # the mock tagger is informative: b jets have a higher pb than light jets on average
        assert jets["MockTagger_pb"][truth == 5].mean() > jets["MockTagger_pb"][light].mean() + 0.2
    fractions = np.bincount(train[0]["flavour_label"], minlength=4) / NUM_JETS
    np.testing.assert_allclose(fractions, [0.3, 0.3, 0.3, 0.1], atol=0.03)
    fractions = np.bincount(test_split[0]["flavour_label"], minlength=4) / len(test_split[0])
    np.testing.assert_allclose(fractions, [0.28, 0.14, 0.50, 0.08], atol=0.07)


def test_kinematics(train, test_split):
    for jets, max_pt in ((train[0], 5.01e6), (test_split[0], 1.01e6)):
        assert jets["pt_btagJes"].min() >= 20e3  # MeV
        assert jets["pt_btagJes"].max() <= max_pt
        assert np.all(np.abs(jets["eta_btagJes"]) < 2.5)
        np.testing.assert_array_equal(jets["absEta_btagJes"], np.abs(jets["eta_btagJes"]))
        np.testing.assert_array_equal(jets["eta"], jets["eta_btagJes"])
    assert np.median(test_split[0]["pt_btagJes"]) < 100e3  # falling ttbar spectrum
    assert (train[0]["pt_btagJes"] > 1e6).mean() > 0.1  # Z'-like part reaching TeV


def test_event_numbers(paths):
    for split, residues in (("train", set(range(8))), ("val", {8}), ("test", {9})):
        with h5py.File(paths[split], "r") as f:
            event = f["jets"]["eventNumber"]
        assert set(np.unique(event % 10)) <= residues
        assert len(np.unique(event)) == len(event)


@pytest.mark.parametrize("split", ["train", "test"])
def test_padding(train, test_split, split):
    jets, tracks = train if split == "train" else test_split
    valid = tracks["valid"]
    np.testing.assert_array_equal(jets["n_tracks"], valid.sum(axis=1))
    np.testing.assert_array_equal(valid, np.arange(40) < jets["n_tracks"][:, None])  # a prefix
    for name in tracks.dtype.names:
        if name == "valid":
            continue
        pad, real = tracks[name][~valid], tracks[name][valid]
        kind = tracks.dtype[name].kind
        if kind == "f":
            assert np.all(np.isnan(pad)), name
            assert np.all(np.isfinite(real)), name
        elif kind == "i":
            assert np.all(pad == -1), name
        else:
            assert np.all(pad == 0), name


def test_padding_in_every_block(tmp_path, monkeypatch):
    # blocks reuse their buffers; each must come out padded as if new
    monkeypatch.setattr(writer, "GEN_BLOCK", 200)
    paths = demo.write_demo_dataset(tmp_path, num_jets=1100, seed=4)
    data = _all(paths["train"])
    np.testing.assert_array_equal(data["jets"]["n_tracks"], data["tracks"]["valid"].sum(axis=1))
    for name, slots in CONSTITUENT_SLOTS.items():
        arr = data[name]
        valid = arr["valid"]
        assert arr.shape == (1100, slots)
        counts = valid.sum(axis=1)
        np.testing.assert_array_equal(valid, np.arange(slots) < counts[:, None])  # a prefix
        for field in arr.dtype.names:
            kind, pad = arr.dtype[field].kind, arr[field][~valid]
            if kind == "f":
                assert np.all(np.isnan(pad)), (name, field)
            elif kind != "b":
                assert np.all(pad == (-1 if kind == "i" else 0)), (name, field)


def test_multiplicity(train):
    jets, _ = train
    n = jets["n_tracks"]
    assert n.min() >= 1
    assert n.max() <= 40
    assert 10 <= n.mean() <= 16
    assert np.percentile(n, 10) >= 4
    assert np.percentile(n, 95) <= 25
    truth = jets["HadronConeExclTruthLabelID"]
    assert n[truth == 5].mean() > n[truth == 0].mean() > n[truth == 15].mean()
    # multiplicity rises with pt
    high = jets["pt_btagJes"] > 500e3
    assert n[high & (truth == 0)].mean() > n[~high & (truth == 0)].mean() + 2


def test_origins_and_vertices(train):
    jets, tracks = train
    valid = tracks["valid"]
    origin, vertex = tracks["ftagTruthOriginLabel"], tracks["ftagTruthVertexIndex"]
    truth = np.broadcast_to(jets["HadronConeExclTruthLabelID"][:, None], origin.shape)
    assert set(np.unique(origin[valid])) == set(range(8))
    assert np.all(vertex[valid & ((origin == PILEUP) | (origin == FAKE))] == -1)
    assert np.all(vertex[valid & (origin == PRIMARY)] == 0)
    assert np.all(vertex[valid & (origin >= FROM_B)] > 0)

    hf = (origin == FROM_B) | (origin == FROM_BC) | (origin == FROM_C)
    assert not np.any(valid & (truth == 0) & (hf | (origin == FROM_TAU)))
    assert not np.any(valid & (truth == 4) & ((origin == FROM_B) | (origin == FROM_BC)))
    assert not np.any(valid & (truth == 5) & ((origin == FROM_C) | (origin == FROM_TAU)))
    assert not np.any(valid & (truth == 15) & hf)

    def shared_index(label: int, jet_truth: int) -> np.ndarray:
        """Per jet: the index shared by all tracks of this origin (0 when there are none)."""
        sel = valid & (origin == label) & (truth == jet_truth)
        hi = np.where(sel, vertex, -100).max(axis=1)
        lo = np.where(sel, vertex, 100).min(axis=1)
        has = sel.any(axis=1)
        np.testing.assert_array_equal(hi[has], lo[has])  # one vertex per origin and jet
        return np.where(has, hi, 0)

    b_index, bc_index = shared_index(FROM_B, 5), shared_index(FROM_BC, 5)
    both = (b_index > 0) & (bc_index > 0)
    assert both.sum() > 100
    assert np.all(b_index[both] != bc_index[both])  # the charm vertex is a separate vertex
    assert (shared_index(FROM_C, 4) > 0).sum() > 100
    assert (shared_index(FROM_TAU, 15) > 0).sum() > 50

    # each V0/material vertex holds at most a pair and never shares an index with a decay
    for j in np.flatnonzero((valid & (origin == OTHER_SECONDARY)).any(axis=1)):
        v0 = vertex[j][valid[j] & (origin[j] == OTHER_SECONDARY)]
        assert np.bincount(v0).max() <= 2
        decay = vertex[j][valid[j] & (origin[j] >= FROM_B) & (origin[j] <= FROM_TAU)]
        assert not set(v0) & set(decay)

    types = tracks["ftagTruthTypeLabel"][valid]
    assert set(np.unique(types)) == set(range(6))
    assert np.all(types[origin[valid] == FAKE] == 0)


def test_displacement(train, test_split):
    for jets, tracks in (train, test_split):
        valid = tracks["valid"]
        sig = tracks["IP3D_signed_d0_significance"]
        truth = jets["HadronConeExclTruthLabelID"]
        mean = {lab: sig[truth == lab][valid[truth == lab]].mean() for lab in (5, 4, 0)}
        assert mean[5] > mean[4] > mean[0]
        origin = tracks["ftagTruthOriginLabel"]
        assert (sig[valid & (origin == FROM_B)] > 0).mean() > 0.7
        assert abs((sig[valid & (origin == PRIMARY)] > 0).mean() - 0.5) < 0.02


def test_best_track_cut_is_informative_not_trivial(test_split, train):
    # the single best track's d0 significance rejects light jets, but far from perfectly
    for jets, tracks in (train, test_split):
        best = np.where(tracks["valid"], tracks["IP3D_signed_d0_significance"], -np.inf).max(1)
        truth = jets["HadronConeExclTruthLabelID"]
        cut = np.percentile(best[truth == 5], 30)
        rejection = 1 / max((best[truth == 0] > cut).mean(), 1e-9)
        assert 5 < rejection < 100, rejection


def test_hits_and_leptons(train):
    jets, tracks = train
    valid = tracks["valid"]
    origin = tracks["ftagTruthOriginLabel"]
    lxy = np.broadcast_to(jets["HadronConeExclTruthLabelLxy"][:, None], tracks.shape)
    beyond_ibl = valid & (origin == FROM_B) & (lxy > 34.0)
    assert beyond_ibl.sum() > 20
    assert np.all(tracks["numberOfInnermostPixelLayerHits"][beyond_ibl] == 0)
    assert tracks["numberOfInnermostPixelLayerHits"][valid & (origin == PRIMARY)].mean() > 0.9
    for name in ("numberOfInnermostPixelLayerSharedHits", "numberOfPixelSharedHits"):
        values = tracks[name][valid]
        assert 0.8 < (values == 0).mean() < 1.0, name
    lepton = tracks["leptonID"][valid]
    assert set(np.unique(lepton)) <= {-13, -11, 0, 11, 13}
    assert (lepton == 0).mean() > 0.95
    hf = (origin[valid] >= FROM_B) & (origin[valid] <= FROM_C)
    assert (lepton[hf] != 0).mean() > 3 * (lepton[origin[valid] == PRIMARY] != 0).mean()


def _all(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}


def _entries(data: dict[str, np.ndarray], dataset: str, var: str) -> np.ndarray:
    """A variable's values over the jets, or over the valid entries of a constituent dataset."""
    arr = data[dataset]
    return arr[var] if dataset == "jets" else arr[var][arr["valid"]]


NORM_DATASETS = ["jets", "tracks", "tracks_ghost", "flows", "electrons"]
# every track field but the labels, the barcode and subjetIndex (-1 in small-R jets)
TRACK_INPUTS = [n for n, t in EXPECTED_TRACKS if n != "valid" and t != "<i4"]


def test_norm_dict(paths):
    data = _all(paths["train"])
    text = paths["norm_dict"].read_text()
    assert text.startswith("jets:\n  pt_btagJes:\n    mean: ")  # yaml.dump block layout
    norm = yaml.safe_load(text)  # plain floats only: safe_load refuses numpy tags
    assert list(norm) == NORM_DATASETS
    assert list(norm["jets"])[:6] == [
        "pt_btagJes", "eta_btagJes", "MockTagger_pb", "MockTagger_pc", "MockTagger_pu",
        "MockTagger_ptau",
    ]  # fmt: skip
    assert {"pt", "eta", "mass", "softMuon_pt", "softMuon_ip3dZ0Uncertainty"} <= set(norm["jets"])
    assert list(norm["tracks"])[:20] == [n for n, _ in EXPECTED_TRACKS[:19]] + ["leptonID"]
    assert set(norm["tracks"]) == set(TRACK_INPUTS)
    assert norm["tracks_ghost"].keys() == norm["tracks"].keys()
    assert list(norm["flows"]) == ["pt", "energy", "deta", "dphi", "isCharged"]
    assert len(norm["electrons"]) == 29
    for dataset, var, stats in [(d, v, s) for d in norm for v, s in norm[d].items()]:
        x = _entries(data, dataset, var).astype(np.float64)
        x = x[np.isfinite(x)]  # NaN-safe: a jet without a soft muon has NaN softMuon_*
        assert list(stats) == ["mean", "std"]
        assert np.isfinite(stats["std"])
        assert stats["std"] > 0
        np.testing.assert_allclose(stats["mean"], x.mean(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(stats["std"], x.std(ddof=0), rtol=1e-9)


def test_class_dict(paths):
    data = _all(paths["train"])
    weights = yaml.safe_load(paths["class_dict"].read_text())
    assert list(weights) == ["jets", "tracks", "tracks_ghost", "electrons", "truth_hadrons"]
    assert list(weights["jets"]) == [
        "flavour_label", "HadronConeExclTruthLabelID", "HadronConeExclExtendedTruthLabelID",
        "n_tracks", "n_truth_promptLepton", "HadronGhostTruthLabelID", "PartonTruthLabelID",
        "HadronConeExclTruthLabelPdgId", "HadronGhostInitialTruthLabelPdgId",
    ]  # fmt: skip
    assert list(weights["tracks"]) == ["ftagTruthOriginLabel", "ftagTruthTypeLabel"]
    assert list(weights["electrons"]) == ["ftagTruthOriginLabel"]
    assert list(weights["truth_hadrons"]) == ["flavour"]
    for dataset, label, got in [(d, k, w) for d in weights for k, w in weights[d].items()]:
        _, counts = np.unique(_entries(data, dataset, label), return_counts=True)
        inv = counts.sum() / counts
        assert got == [round(float(w), 2) for w in inv / inv.min()], label
    assert len(weights["tracks"]["ftagTruthOriginLabel"]) == 8
    assert len(weights["tracks_ghost"]["ftagTruthTypeLabel"]) == 10  # 0, 1, +-2, +-3, +-5, +-6
    np.testing.assert_allclose(weights["jets"]["flavour_label"], [1, 1, 1, 3], rtol=0.2)


def test_determinism(tmp_path, paths):
    again = demo.write_demo_dataset(tmp_path / "again", num_jets=NUM_JETS, seed=7)
    for key in ("train", "val", "test", "norm_dict", "class_dict"):
        assert again[key].read_bytes() == paths[key].read_bytes(), key
    other = demo.write_demo_dataset(tmp_path / "other", num_jets=NUM_JETS, seed=8)
    jets, tracks = _read(other["train"])
    ref_jets, ref_tracks = _read(paths["train"])
    assert not np.array_equal(jets["pt"], ref_jets["pt"])
    assert not np.array_equal(tracks["valid"], ref_tracks["valid"])


def test_output_independent_of_length(tmp_path, monkeypatch):
    # blocks are seeded by their index, so a longer file starts with the shorter one
    monkeypatch.setattr(writer, "GEN_BLOCK", 500)
    short = demo.write_demo_dataset(tmp_path / "short", num_jets=1000, seed=3)
    long = demo.write_demo_dataset(tmp_path / "long", num_jets=1500, seed=3)
    short_jets, short_tracks = _read(short["train"])
    long_jets, long_tracks = _read(long["train"])
    assert short_jets.tobytes() == long_jets[:1000].tobytes()  # NaN (no soft muon) included
    np.testing.assert_array_equal(short_tracks["d0"], long_tracks["d0"][:1000])


def test_num_tracks_option(tmp_path):
    paths = demo.write_demo_dataset(tmp_path, num_jets=300, seed=2, num_tracks=8)
    jets, tracks = _read(paths["train"])
    assert tracks.shape == (300, 8)
    assert jets["n_tracks"].max() == 8
    np.testing.assert_array_equal(jets["n_tracks"], tracks["valid"].sum(axis=1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_jets": 5}, "num_jets"),
        ({"compression": "zip"}, "compression"),
        ({"seed": -1}, "seed"),
        ({"num_tracks": 0}, "num_tracks"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        demo.write_demo_dataset(tmp_path, **{"num_jets": 100, **kwargs})


def test_ftag_reader(paths, train):
    jets, tracks = train
    reader = H5Reader(paths["train"], batch_size=1000, global_objects_name="jets", shuffle=False)
    variables = {
        "jets": ["pt_btagJes", "flavour_label", "HadronConeExclTruthLabelID"],
        "tracks": ["d0", "valid", "ftagTruthOriginLabel"],
    }
    data = reader.load(variables, num_global_objects=NUM_JETS)
    assert data["jets"].shape == (NUM_JETS,)
    assert data["tracks"].shape == (NUM_JETS, 40)
    np.testing.assert_array_equal(data["jets"]["flavour_label"], jets["flavour_label"])
    np.testing.assert_array_equal(data["tracks"]["valid"], tracks["valid"])
    np.testing.assert_array_equal(data["tracks"]["d0"], tracks["d0"])  # NaN padding compares equal


def _cli() -> str:
    script = Path(sys.executable).parent / "salt-demo-data"
    found = str(script) if script.exists() else shutil.which("salt-demo-data")
    if found is None:
        pytest.skip("salt-demo-data is not installed (pip install -e .)")
    return found


def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [_cli(), str(out), "--num-jets", "300", "--seed", "3"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    for name in ("pp_output_train.h5", "pp_output_val.h5", "pp_output_test_ttbar.h5"):
        assert (out / name).exists()
        assert name in log
    assert "300 jets" in log
    assert "30 jets" in log
    assert (out / "norm_dict.yaml").exists()
    assert (out / "class_dict.yaml").exists()
    api = demo.write_demo_dataset(tmp_path / "api", num_jets=300, seed=3)
    assert (out / "pp_output_train.h5").read_bytes() == api["train"].read_bytes()


def test_cli_help_and_errors(tmp_path):
    result = subprocess.run([_cli(), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "example" in result.stdout
    assert "--num-jets" in result.stdout
    bad = [_cli(), str(tmp_path), "--num-jets", "3"]
    result = subprocess.run(bad, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "num_jets must be >= 10" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written on bad arguments
