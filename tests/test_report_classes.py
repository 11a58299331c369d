"""The report follows the tagger's classes: Xbb (D_Hbb), b-tagging (D_b), or neither.

Prediction files carry the truth labels of Xbb demo jets (`salt-demo-data --kind xbb`) or of
b-tagging ones, with class probabilities from shifted logits; every reported rejection is
checked against a direct numpy computation on the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from salt.demo import write_demo_dataset
from salt.errors import SaltError
from salt.evaluation import discriminants
from salt.evaluation.plot_cli import main
from salt.evaluation.report import make_report
from tests.test_report import numpy_rejections, write_prediction_file

#: Xbb classes of the tagger, QCD split as a labeller would (by ghost B hadrons)
XBB_PX = ["phbb", "phcc", "ptop", "pqcdbb", "pqcdnonbb"]


def _class_index(jets: np.ndarray) -> np.ndarray:
    r10, n_b = jets["R10TruthLabel_R22v1"], jets["GhostBHadronsFinalCount"]
    index = np.full(len(jets), -1)
    index[r10 == 11] = 0
    index[r10 == 12] = 1
    index[np.isin(r10, (1, 6, 7))] = 2
    index[(r10 == 10) & (n_b >= 2)] = 3
    index[(r10 == 10) & (n_b < 2)] = 4
    return index


@pytest.fixture(scope="module")
def xbb_file(tmp_path_factory) -> Path:
    """Predictions of a tagger `GN2X` on the Xbb demo test file."""
    root = tmp_path_factory.mktemp("xbb_report")
    files = write_demo_dataset(
        root / "demo", num_jets=20000, seed=4, classes="hbb,hcc,top,qcd", kind="xbb",
        splits=["test"],
    )  # fmt: skip
    with h5py.File(files["test"]) as f:
        truth = f["jets"].fields(["pt", "R10TruthLabel_R22v1", "GhostBHadronsFinalCount"])[:]
    rng = np.random.default_rng(7)
    cls = _class_index(truth)
    logits = rng.normal(size=(len(truth), len(XBB_PX)))
    logits[np.flatnonzero(cls >= 0), cls[cls >= 0]] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    dtype = [*truth.dtype.descr, *[(f"GN2X_{p}", "f4") for p in XBB_PX]]
    jets = np.zeros(len(truth), dtype=dtype)
    for name in truth.dtype.names:
        jets[name] = truth[name]
    for i, p in enumerate(XBB_PX):
        jets[f"GN2X_{p}"] = probs[:, i]
    ckpts = root / "GN2X_20260101-120000" / "ckpts"
    ckpts.mkdir(parents=True)
    path = ckpts / "epoch=002-val_loss=0.50000__test_xbb.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("jets", data=jets, **hdf5plugin.LZ4())
    return path


def numpy_xbb(path: Path, ftop: float, fhcc: float, wps) -> dict:
    """D_Hbb by hand (QCD = the sum of the split classes), cut at the hbb quantile."""
    with h5py.File(path) as f:
        jets = f["jets"][:]
    p = {k: jets[f"GN2X_{k}"].astype("f8") for k in XBB_PX}
    qcd = p["pqcdbb"] + p["pqcdnonbb"]
    disc = np.log(p["phbb"] / (ftop * p["ptop"] + fhcc * p["phcc"] + (1 - ftop - fhcc) * qcd))
    r10 = jets["R10TruthLabel_R22v1"]
    cuts = np.quantile(disc[r10 == 11], 1 - np.asarray(wps))
    out = {"cut": cuts}
    for name, mask in (("top", np.isin(r10, (1, 6, 7))), ("qcd", r10 == 10)):
        out[name] = 1 / (disc[mask][None, :] >= cuts[:, None]).mean(axis=1)
        out[f"n_{name}"] = int(mask.sum())
    return out


def test_xbb_report_matches_numpy(xbb_file):
    files = make_report(xbb_file, verbose=False)
    report = json.loads(files.json.read_text())
    assert report["xbb_working_points"] == [0.5, 0.6, 0.7]
    model = report["models"][0]
    assert model["tagger"] == "GN2X"
    assert model["btag"] is None, "no b-tagging outputs: no b-tagging section"
    assert files.roc is None and not (xbb_file.parent / f"{xbb_file.stem}__roc.png").exists()
    assert files.roc_xbb == xbb_file.parent / f"{xbb_file.stem}__roc_xbb.png"
    assert files.roc_xbb.stat().st_size > 10_000
    xbb = model["xbb"]
    assert xbb["fractions"] == pytest.approx({"ftop": 0.25, "fhcc": 0.02, "fqcd": 0.73})
    ref = numpy_xbb(xbb_file, 0.25, 0.02, report["xbb_working_points"])
    assert xbb["n_jets"]["top"] == ref["n_top"] and xbb["n_jets"]["qcd"] == ref["n_qcd"]
    rows = xbb["working_points"]
    assert [r["hbb_eff"] for r in rows] == [0.5, 0.6, 0.7]
    np.testing.assert_allclose([r["cut"] for r in rows], ref["cut"], rtol=1e-6, atol=1e-9)
    for name in ("top", "qcd"):
        got = [r[f"{name}_rej"] for r in rows]
        np.testing.assert_allclose(got, ref[name], rtol=1e-9)
        assert min(got) > 1 and got == sorted(got, reverse=True)
    markdown = files.markdown.read_text()
    assert "## Xbb working points" in markdown and "## b-tagging" not in markdown
    assert f"{xbb_file.stem}__roc_xbb.png" in markdown


def test_salt_plot_xbb_options(xbb_file, tmp_path, capsys):
    main([
        str(xbb_file), "--ftop", "0.5", "--fhcc", "0.1", "--xbb-wps", "55", "65",
        "--out-dir", str(tmp_path), "-q",
    ])  # fmt: skip
    (path,) = tmp_path.glob("*__report.json")
    report = json.loads(path.read_text())
    assert report["requested_fractions"]["ftop"] == 0.5
    rows = report["models"][0]["xbb"]["working_points"]
    ref = numpy_xbb(xbb_file, 0.5, 0.1, [0.55, 0.65])
    np.testing.assert_allclose([r["qcd_rej"] for r in rows], ref["qcd"], rtol=1e-9)
    np.testing.assert_allclose([r["top_rej"] for r in rows], ref["top"], rtol=1e-9)
    with pytest.raises(SystemExit):
        main([str(xbb_file), "--ftop", "0.9", "--fhcc", "0.2"])
    assert "--ftop + --fhcc <= 1" in capsys.readouterr().err


def test_btag_report_has_no_xbb_section(tmp_path):
    path = write_prediction_file(tmp_path / "b__test_ttbar.h5", n_jets=2000, with_tracks=False)
    files = make_report(path, verbose=False)
    report = json.loads(files.json.read_text())
    model = report["models"][0]
    assert model["xbb"] is None and files.roc_xbb is None
    assert report["plots"]["roc_xbb"] is None
    ref = numpy_rejections(path, "GN2", 0.2, 0.01, report["working_points"])
    got = [r["light_rej"] for r in model["btag"]["working_points"]]
    np.testing.assert_allclose(got, ref["light"], rtol=1e-9)
    assert "## Xbb" not in files.markdown.read_text()


def test_ghost_light_is_the_sum_of_ud_s_and_g():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=50)
    jets = np.zeros(50, dtype=[(f"T_{p}", "f4") for p in ("pb", "pc", "pud", "ps", "pg")])
    for i, name in enumerate(jets.dtype.names):
        jets[name] = probs[:, i]
    fractions, _ = discriminants.btag_fractions(0.2, 0.0, has_ptau=False)
    got = discriminants.b_discriminant(jets, "T", fractions)
    p = probs.astype("f4").astype("f8")
    np.testing.assert_allclose(got, np.log(p[:, 0] / (0.2 * p[:, 1] + 0.8 * p[:, 2:].sum(1))))


def test_neither_class_kind_is_skipped_cleanly(tmp_path):
    """A tagger without b-tagging or Xbb outputs (a regression, say): notes, no ROC, no crash."""
    jets = np.zeros(
        300, dtype=[("pt", "f4"), ("Reg_pt", "f4"), ("HadronConeExclTruthLabelID", "i4")]
    )
    jets["Reg_pt"] = np.arange(300)
    path = tmp_path / "reg__test_ttbar.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("jets", data=jets, **hdf5plugin.LZ4())
    files = make_report(path, taggers="Reg", verbose=False)
    report = json.loads(files.json.read_text())
    model = report["models"][0]
    assert model["btag"] is None and model["xbb"] is None
    assert files.roc is None and files.roc_xbb is None
    assert files.all() == [files.markdown, files.json]
    assert any("no b-tagging" in note for note in model["notes"])
    assert "working points" not in files.markdown.read_text().replace("no working points", "")
    # a tagger with no output at all in the file is a mistake: say which taggers are there
    with pytest.raises(SaltError, match="no output of tagger 'GN2'"):
        make_report(path, taggers="GN2", verbose=False, out_dir=tmp_path / "bad")


def test_salt_plot_on_a_file_without_the_xbb_truth_says_so(xbb_file, tmp_path, capsys):
    # a prediction file written before salt test saved R10TruthLabel_R22v1
    with h5py.File(xbb_file) as f:
        jets = f["jets"][:]
    names = [n for n in jets.dtype.names if n != "R10TruthLabel_R22v1"]
    old = tmp_path / "old__test_xbb.h5"
    with h5py.File(old, "w") as f:
        f.create_dataset("jets", data=jets[names])
    with pytest.raises(SystemExit) as exit_info:
        main([str(old), "--out-dir", str(tmp_path), "-q"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "R10TruthLabel_R22v1" in err and str(old) in err and "Traceback" not in err
    assert not list(tmp_path.glob("*__report.json"))
