"""`salt test`: the prediction file that puma and ftag read, and the report beside it."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from ftag.hdf5 import H5Reader

from salt.callbacks.predictionwriter import output_path, sample_name
from tests.conftest import run_salt

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

ORIGINS = ["Pileup", "Fake", "Primary", "FromB", "FromBC", "FromC", "FromTau", "OtherSecondary"]


@pytest.fixture
def trained(trained_run) -> Path:
    """A copy of the session's GN2 run folder (two epochs of checkpoints, conftest)."""
    return trained_run("GN2")


def best_ckpt(run_dir: Path) -> Path:
    ckpts = sorted((run_dir / "ckpts").glob("epoch=*-val_loss=*.ckpt"))
    return min(ckpts, key=lambda p: float(p.stem.split("val_loss=")[1]))


def test_sample_names_and_paths():
    assert sample_name("a/pp_output_test_ttbar.h5") == "ttbar"
    assert sample_name("pp_output_test.h5") == "pp_output_test"
    assert output_path(
        "r/ckpts/epoch=001-val_loss=0.5.ckpt", "x/pp_output_test_zprime.h5", "v2"
    ) == (Path("r/ckpts/epoch=001-val_loss=0.5__test_zprime_v2.h5"))


def test_jets_file_for_puma_and_ftag(trained, demo):
    result = run_salt(["test", "--config", str(trained / "config.yaml")], trained.parent.parent)
    ckpt = best_ckpt(trained)
    path = ckpt.parent / f"{ckpt.stem}__test_ttbar.h5"
    assert str(ckpt) in result.stdout  # the lowest validation loss was chosen
    reader = H5Reader(path, batch_size=100, shuffle=False)
    probs = ["GN2_pb", "GN2_pc", "GN2_pu", "GN2_ptau"]
    jets = reader.load({"jets": [*probs, "HadronConeExclTruthLabelID", "pt", "n_tracks"]})["jets"]
    with h5py.File(demo["test"]) as f:
        truth = f["jets"][:]
    assert len(jets) == len(truth)
    assert all(jets.dtype[p] == np.float32 for p in probs)
    total = sum(jets[p].astype(np.float64) for p in probs)
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    np.testing.assert_array_equal(
        jets["HadronConeExclTruthLabelID"], truth["HadronConeExclTruthLabelID"]
    )
    np.testing.assert_array_equal(jets["pt"], truth["pt"])
    with h5py.File(path) as f:
        assert "tracks" not in f
        assert "writer_version" in f.attrs

    # the report's rejections equal a direct computation from the file
    report = json.loads((path.parent / f"{path.stem}__report.json").read_text())
    (model,) = report["models"]
    flavour = jets["HadronConeExclTruthLabelID"]
    disc = np.log(
        jets["GN2_pb"].astype(np.float64)
        / (0.2 * jets["GN2_pc"] + 0.01 * jets["GN2_ptau"] + 0.79 * jets["GN2_pu"])
    )
    for wp in model["btag"]["working_points"]:
        cut = np.quantile(disc[flavour == 5], 1 - wp["b_eff"])
        light_eff = (disc[flavour == 0] > cut).mean()
        assert wp["light_rej"] == pytest.approx(1 / light_eff, rel=1e-6)
    assert (path.parent / f"{path.stem}__roc.png").stat().st_size > 10_000


def test_tracks_half_precision_limits_and_suffix(trained, demo):
    ckpt = best_ckpt(trained)
    run_salt(
        [
            "test",
            "--config",
            str(trained / "config.yaml"),
            "--ckpt_path",
            str(ckpt),
            "--data.num_test",
            "300",
            "--data.test_suff",
            "half",
            "--trainer.callbacks+=salt.callbacks.PredictionWriter",
            "--trainer.callbacks.write_tracks",
            "true",
            "--trainer.callbacks.half_precision",
            "true",
        ],
        trained.parent.parent,
    )
    path = ckpt.parent / f"{ckpt.stem}__test_ttbar_half.h5"
    with h5py.File(path) as f:
        jets, tracks = f["jets"][:], f["tracks"][:]
    with h5py.File(demo["test"]) as f:
        truth = f["tracks"][:300]
    assert jets.shape == (300,) and tracks.shape == (300, 40)
    assert jets.dtype["GN2_pb"] == np.float16
    valid = truth["valid"]
    np.testing.assert_array_equal(tracks["valid"], valid)
    origin_probs = np.stack([tracks[f"GN2_p{o}"].astype(np.float64) for o in ORIGINS], -1)
    np.testing.assert_allclose(origin_probs[valid].sum(-1), 1.0, atol=5e-3)
    argmax = tracks["GN2_aux_TrackOrigin"]
    # the arg-max of the float32 outputs; after rounding to float16 it may tie with another class
    chosen = np.take_along_axis(origin_probs[valid], argmax[valid][:, None], -1)[:, 0]
    np.testing.assert_allclose(chosen, origin_probs[valid].max(-1), atol=1e-3)
    assert (argmax[~valid] == -1).all()
    vertex = tracks["GN2_aux_VertexIndex"]
    assert (vertex[~valid] == -1).all()
    # a vertex index names the first track of its vertex: never beyond the track itself
    slots = np.broadcast_to(np.arange(40), valid.shape)
    assert ((vertex[valid] >= 0) & (vertex[valid] <= slots[valid])).all()
    np.testing.assert_array_equal(tracks["ftagTruthOriginLabel"], truth["ftagTruthOriginLabel"])


def test_regression_outputs_are_named_by_the_model(trained_run):
    """`<model>_<target>` for plain and Gaussian regression alike, as in ONNX (output_fields)."""
    run = trained_run("regression")
    run_salt(["test", str(run)], run.parent.parent)
    (path,) = (run / "ckpts").glob("*__test_ttbar.h5")
    with h5py.File(path) as f:
        jets = f["jets"][:]
    pt, lxy = "GN2reg_HadronConeExclTruthLabelPt", "GN2reg_HadronConeExclTruthLabelLxy"
    assert {"GN2reg_pb", pt, lxy, f"{lxy}_stddev"} <= set(jets.dtype.names)
    assert not [n for n in jets.dtype.names if n.startswith("hadron_")]
    assert np.isfinite(jets[pt]).all() and (jets[f"{lxy}_stddev"] > 0).all()
