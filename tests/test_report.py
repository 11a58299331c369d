"""Tests of the evaluation report (salt.evaluation.report, .metrics, .plots).

Prediction files are generated here with known score distributions, in the layout `salt test`
writes (jets + optional tracks, LZ4), and every reported number is checked against a direct
numpy (or brute-force) computation.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from salt.errors import SaltError
from salt.evaluation import metrics
from salt.evaluation.plot_cli import main
from salt.evaluation.report import make_report

N_TRACKS = 40
ORIGINS = metrics.TRACK_ORIGINS


def write_prediction_file(
    path: Path,
    n_jets: int = 3000,
    tagger: str = "GN2",
    seed: int = 0,
    separation: float = 1.5,
    with_tracks: bool = True,
    with_ptau: bool = True,
    other_tagger: str | None = None,
) -> Path:
    """A prediction file like `salt test` writes, with scores from shifted logits.

    The true class's logit is raised by `separation`, so a larger value gives a better tagger.
    `other_tagger` adds a copied-input tagger before the model's fields (as in UPP test files).
    """
    rng = np.random.default_rng(seed)
    flav_ids = np.array([5, 4, 0, 15])
    n_cls = 4 if with_ptau else 3
    cls = rng.choice(4, size=n_jets, p=[0.3, 0.3, 0.3, 0.1])
    logits = rng.normal(size=(n_jets, n_cls))
    hit = cls < n_cls
    logits[np.flatnonzero(hit), cls[hit]] += separation
    probs = np.exp(logits)
    probs = (probs / probs.sum(1, keepdims=True)).astype("f4")

    px = ["pb", "pc", "pu", "ptau"][:n_cls]
    fields = [("pt", "f4"), ("eta", "f4"), ("HadronConeExclTruthLabelID", "i4")]
    fields += [("n_tracks", "i4"), ("flavour_label", "i4")]
    if other_tagger:
        fields += [(f"{other_tagger}_{p}", "f4") for p in px]
    fields += [(f"{tagger}_{p}", "f4") for p in px]
    jets = np.zeros(n_jets, dtype=fields)
    jets["pt"] = rng.uniform(20e3, 250e3, n_jets)
    jets["eta"] = rng.uniform(-2.5, 2.5, n_jets)
    jets["HadronConeExclTruthLabelID"] = flav_ids[cls]
    jets["flavour_label"] = cls
    for i, p in enumerate(px):
        jets[f"{tagger}_{p}"] = probs[:, i]
        if other_tagger:
            jets[f"{other_tagger}_{p}"] = probs[::-1, i]

    with h5py.File(path, "w") as f:
        f.attrs["writer_version"] = "v0.3.6"
        if with_tracks:
            tracks = _random_tracks(rng, n_jets, tagger)
            jets["n_tracks"] = tracks["valid"].sum(1)
            f.create_dataset("tracks", data=tracks, chunks=(100, N_TRACKS), **hdf5plugin.LZ4())
        f.create_dataset("jets", data=jets, **hdf5plugin.LZ4())
    return path


def _random_tracks(rng: np.random.Generator, n_jets: int, tagger: str) -> np.ndarray:
    """Tracks with padding (and holes), origin and vertex truth, and noisy predictions."""
    dtype = [
        ("d0", "f4"),
        ("valid", "?"),
        ("ftagTruthOriginLabel", "i4"),
        ("ftagTruthVertexIndex", "i4"),
        *[(f"{tagger}_p{o}", "f4") for o in ORIGINS],
        (f"{tagger}_aux_TrackOrigin", "i4"),
        (f"{tagger}_aux_VertexIndex", "i4"),
    ]
    tracks = np.zeros((n_jets, N_TRACKS), dtype=dtype)
    n_valid = rng.integers(1, 16, n_jets)
    # Holes as left by a track selection: valid need not be a prefix.
    valid = (np.arange(N_TRACKS) < n_valid[:, None]) & (rng.random((n_jets, N_TRACKS)) > 0.05)
    shape = valid.shape
    t_origin = rng.choice(len(ORIGINS), size=shape)
    p_origin = np.where(rng.random(shape) < 0.7, t_origin, rng.integers(0, len(ORIGINS), shape))
    t_vtx = rng.integers(-1, 4, shape)
    p_vtx = np.where(rng.random(shape) < 0.8, np.maximum(t_vtx, 0), rng.integers(0, 4, shape))
    tracks["valid"] = valid
    tracks["d0"] = np.where(valid, rng.normal(size=shape), np.nan)
    # Padding as written: -1 labels, and predictions that would pair up if not masked.
    tracks["ftagTruthOriginLabel"] = np.where(valid, t_origin, -1)
    tracks["ftagTruthVertexIndex"] = np.where(valid, t_vtx, -1)
    tracks[f"{tagger}_aux_TrackOrigin"] = np.where(valid, p_origin, -1)
    tracks[f"{tagger}_aux_VertexIndex"] = np.where(valid, p_vtx, -1)
    onehot = np.eye(len(ORIGINS), dtype="f4")[p_origin]
    for i, o in enumerate(ORIGINS):
        tracks[f"{tagger}_p{o}"] = np.where(valid, 0.1 + 0.8 * onehot[..., i], 0.0)
    return tracks


def numpy_rejections(path: Path, tagger: str, fc: float, ftau: float, wps) -> dict:
    """Rejections computed by hand: D_b, cut at the b-jet quantile, 1 / background efficiency."""
    with h5py.File(path) as f:
        jets = f["jets"][:]
    p = {k: jets[f"{tagger}_{k}"].astype("f8") for k in ("pb", "pc", "pu")}
    p["ptau"] = jets[f"{tagger}_ptau"].astype("f8") if ftau else 0.0
    disc = np.log(p["pb"] / (fc * p["pc"] + ftau * p["ptau"] + (1 - fc - ftau) * p["pu"]))
    label = jets["HadronConeExclTruthLabelID"]
    cuts = np.quantile(disc[label == 5], 1 - np.asarray(wps))
    out = {"cut": cuts}
    for name, flav in (("light", 0), ("c", 4), ("tau", 15)):
        bkg = disc[label == flav]
        out[name] = 1 / (bkg[None, :] >= cuts[:, None]).mean(axis=1)
    return out


def read_json(files) -> dict:
    return json.loads(files.json.read_text())


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One file in a run folder, reported once for several tests."""
    ckpts = tmp_path_factory.mktemp("GN2_20240101-T120000") / "ckpts"
    ckpts.mkdir()
    path = write_prediction_file(ckpts / "epoch=019-val_loss=0.65432__test_ttbar.h5")
    return path, make_report([path], verbose=False)


def test_rejections_match_numpy(single):
    path, files = single
    report = read_json(files)
    wps = report["working_points"]
    assert wps == [0.6, 0.7, 0.77, 0.85]
    ref = numpy_rejections(path, "GN2", 0.2, 0.01, wps)
    rows = report["models"][0]["btag"]["working_points"]
    np.testing.assert_allclose([r["cut"] for r in rows], ref["cut"], rtol=1e-6, atol=1e-9)
    for name in ("light", "c", "tau"):
        np.testing.assert_allclose([r[f"{name}_rej"] for r in rows], ref[name], rtol=1e-9)
    # Tighter WPs reject more; a tagger that separates at all beats 1.
    light = [r["light_rej"] for r in rows]
    assert light == sorted(light, reverse=True)
    assert min(light) > 1


def test_defaults_from_run_folder(single):
    path, files = single
    report = read_json(files)
    model = report["models"][0]
    assert model["label"] == path.parent.parent.name
    assert model["tagger"] == "GN2"
    assert report["sample"] == "ttbar"
    assert model["btag"]["fractions"] == pytest.approx({"fc": 0.2, "fu": 0.79, "ftau": 0.01})
    stem = path.stem
    assert files.json.parent == path.parent
    assert files.json.name == f"{stem}__report.json"
    assert files.markdown.name == f"{stem}__report.md"
    assert files.roc.name == f"{stem}__roc.png"
    for png in [files.roc, *files.track_origin]:
        assert png.stat().st_size > 10_000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = files.markdown.read_text()
    assert "## b-tagging working points" in md
    assert "## Track origin" in md
    assert "## Vertexing" in md


def test_confusion_matches_bincount(single):
    path, files = single
    with h5py.File(path) as f:
        tracks = f["tracks"][:]
    valid = tracks["valid"]
    truth = tracks["ftagTruthOriginLabel"][valid]
    pred = tracks["GN2_aux_TrackOrigin"][valid]
    counts = np.bincount(truth * 8 + pred, minlength=64).reshape(8, 8)
    origin = read_json(files)["models"][0]["track_origin"]
    assert origin["classes"] == list(ORIGINS)
    np.testing.assert_array_equal(origin["counts"], counts)
    assert origin["n_tracks"] == valid.sum()
    norm = counts / counts.sum(1, keepdims=True)
    np.testing.assert_allclose(origin["row_normalised"], norm, rtol=1e-12)
    np.testing.assert_allclose(list(origin["efficiency"].values()), np.diag(norm), rtol=1e-12)
    assert origin["accuracy"] == pytest.approx((truth == pred).mean(), rel=1e-12)
    assert len(files.track_origin) == 1


def brute_force_pairs(truth, pred, valid) -> dict[str, int]:
    """Pair counts with explicit loops over jets and track pairs."""
    c = dict.fromkeys(metrics.PAIR_KEYS, 0)
    for t_jet, p_jet, v_jet in zip(truth, pred, valid):
        for i, j in combinations(np.flatnonzero(v_jet), 2):
            same_t = t_jet[i] == t_jet[j] and t_jet[i] >= 0
            same_p = p_jet[i] == p_jet[j]
            sv = same_t and t_jet[i] > 0
            c["truth"] += same_t
            c["pred"] += same_p
            c["both"] += same_t and same_p
            c["truth_sv"] += sv
            c["both_sv"] += sv and same_p
            c["pred_sv"] += same_p and (t_jet[i] > 0 or t_jet[j] > 0)
    return c


def test_vertexing_hand_example():
    # Padded slots hold values that would pair up if padding leaked into the count.
    truth = np.full((3, N_TRACKS), 2)
    pred = np.full((3, N_TRACKS), 3)
    valid = np.zeros((3, N_TRACKS), dtype=bool)
    # Jet 0, tracks 0-3: truth [0, 0, 1, 1], pred [0, 0, 0, 1].
    #   (0,1) truth+pred; (0,2), (1,2) pred only; (2,3) truth only (secondary).
    #   -> truth 2, pred 3, both 1; truth_sv 1, both_sv 0; pred pairs touching an SV track:
    #      (0,2), (1,2) -> pred_sv 2.
    truth[0, :4], pred[0, :4], valid[0, :4] = [0, 0, 1, 1], [0, 0, 0, 1], True
    # Jet 1, tracks 0-2: truth [-1, -1, 2], pred [3, 3, 3]. No truth pair (-1 never pairs);
    #   all 3 pairs predicted; (0,2), (1,2) touch the SV track -> pred 3, pred_sv 2.
    truth[1, :3], pred[1, :3], valid[1, :3] = [-1, -1, 2], [3, 3, 3], True
    # Jet 2, track 1 invalid (a hole): truth [2, x, 2, 0], pred [1, x, 1, 0].
    #   Pairs of {0, 2, 3}: (0,2) truth+pred, secondary -> truth 1, pred 1, both 1,
    #   truth_sv 1, both_sv 1, pred_sv 1.
    truth[2, :4], pred[2, :4] = [2, 9, 2, 0], [1, 9, 1, 0]
    valid[2, [0, 2, 3]] = True
    # Totals: truth 3, pred 7, both 2 -> eff 2/3, purity 2/7;
    #         truth_sv 2, both_sv 1, pred_sv 5 -> eff 1/2, purity 1/5.
    expected = {"truth": 3, "pred": 7, "both": 2, "truth_sv": 2, "both_sv": 1, "pred_sv": 5}
    for chunk in (1, 2, 1024):
        assert metrics.vertex_pair_counts(truth, pred, valid, chunk=chunk) == expected
    assert brute_force_pairs(truth, pred, valid) == expected
    summary = metrics.vertexing_summary(expected)
    assert summary["all"] == pytest.approx({"efficiency": 2 / 3, "purity": 2 / 7})
    assert summary["secondary"] == pytest.approx({"efficiency": 1 / 2, "purity": 1 / 5})


def test_vertexing_random_matches_brute_force(single):
    path, files = single
    with h5py.File(path) as f:
        tracks = f["tracks"][:400]
    args = (tracks["ftagTruthVertexIndex"], tracks["GN2_aux_VertexIndex"], tracks["valid"])
    expected = brute_force_pairs(*args)
    assert expected["truth_sv"] > 0
    # A chunk size that does not divide the jets checks the chunk boundaries.
    assert metrics.vertex_pair_counts(*args, chunk=37) == expected

    # The report over the whole file, against the same brute force on all jets.
    with h5py.File(path) as f:
        tracks = f["tracks"][:]
    args = (tracks["ftagTruthVertexIndex"], tracks["GN2_aux_VertexIndex"], tracks["valid"])
    vtx = read_json(files)["models"][0]["vertexing"]
    assert vtx["pair_counts"] == brute_force_pairs(*args)
    c = vtx["pair_counts"]
    assert vtx["all"]["efficiency"] == pytest.approx(c["both"] / c["truth"])
    assert vtx["secondary"]["purity"] == pytest.approx(c["both_sv"] / c["pred_sv"])


def test_several_files_one_roc(tmp_path, monkeypatch):
    import puma

    drawn = []

    class SpyRocPlot(puma.RocPlot):
        def draw(self, *args, **kwargs):
            drawn.append([(roc.label, roc.rej_class) for roc in self.rocs.values()])
            return super().draw(*args, **kwargs)

    monkeypatch.setattr(puma, "RocPlot", SpyRocPlot)
    a = write_prediction_file(tmp_path / "a__test_ttbar.h5", seed=1, separation=1.0)
    b = write_prediction_file(tmp_path / "b__test_ttbar.h5", seed=2, separation=2.0)
    files = make_report([a, b], labels=["weak", "strong"], out_dir=tmp_path / "out")
    assert len(drawn) == 1
    assert sorted(drawn[0]) == sorted(
        (m, c) for m in ("weak", "strong") for c in ("ujets", "cjets")
    )
    report = read_json(files)
    assert [m["label"] for m in report["models"]] == ["weak", "strong"]
    assert report["reference"] == "weak"
    weak, strong = (m["btag"]["working_points"][1]["light_rej"] for m in report["models"])
    assert strong > weak
    assert files.roc == tmp_path / "out" / "compare_weak_vs_strong__test_ttbar__roc.png"
    assert files.roc.stat().st_size > 10_000
    assert [p.name for p in files.track_origin] == [
        "compare_weak_vs_strong__test_ttbar__track_origin_weak.png",
        "compare_weak_vs_strong__test_ttbar__track_origin_strong.png",
    ]
    assert "light / weak" in files.markdown.read_text()


def test_a_comparison_keeps_the_single_model_report_and_lists_every_file(tmp_path, capsys):
    """`salt plot a.h5` then `salt plot a.h5 b.h5`: the second must not overwrite the first."""
    a = write_prediction_file(tmp_path / "a__test_ttbar.h5", seed=1, separation=1.0)
    b = write_prediction_file(tmp_path / "b__test_ttbar.h5", seed=2, separation=2.0)
    main([str(a), "-q"])
    single = {p: p.read_bytes() for p in tmp_path.glob("a__test_ttbar__*")}
    assert {p.name for p in single} == {
        "a__test_ttbar__report.md", "a__test_ttbar__report.json", "a__test_ttbar__roc.png",
        "a__test_ttbar__track_origin.png",
    }  # fmt: skip
    capsys.readouterr()
    main([str(a), str(b)])
    out = capsys.readouterr().out
    assert {p: p.read_bytes() for p in tmp_path.glob("a__test_ttbar__*")} == single
    written = sorted(p.name for p in tmp_path.glob("compare_*"))
    assert written == sorted(
        f"compare_a_vs_b__test_ttbar__{end}"
        for end in ("report.md", "report.json", "roc.png", "track_origin_a.png",
                    "track_origin_b.png")
    )  # fmt: skip
    listed = out.strip().splitlines()[-1]
    assert all(name in listed for name in written), listed


def test_checkpoints_of_one_run_are_labelled_by_epoch_and_the_ratio_label_is_short(tmp_path):
    from salt.evaluation.plots import RATIO_LABEL_CHARS, RocCurves, roc_figure

    ckpts = tmp_path / "logs" / "GN2_20260101-120000" / "ckpts"
    ckpts.mkdir(parents=True)
    a = write_prediction_file(ckpts / "epoch=001-val_loss=0.65432__test_ttbar.h5", seed=1)
    b = write_prediction_file(ckpts / "epoch=003-val_loss=0.61234__test_ttbar.h5", seed=2)
    report = read_json(make_report([a, b], verbose=False))
    assert [m["label"] for m in report["models"]] == ["epoch=001", "epoch=003"]

    eff = np.linspace(0.5, 1.0, 21)
    curve = {"ujets": 4 / (1.01 - eff), "cjets": 2 / (1.01 - eff)}
    n_bkg = {"ujets": 900, "cjets": 900}
    for label, expected in [
        ("GN2", "Ratio to GN2"),
        ("epoch=001-val_loss=0.65432__test_ttbar", "Ratio to reference"),
    ]:
        models = [RocCurves(label, eff, curve, n_bkg), RocCurves("other", eff, curve, n_bkg)]
        plot = roc_figure(models, "tag")
        (text,) = [t for t in plot.fig.texts if t.get_text().startswith("Ratio to")]
        assert text.get_text() == expected
        assert len(text.get_text()) <= len("Ratio to ") + RATIO_LABEL_CHARS
        # the label stays beside the ratio panels, below the main panel
        renderer = plot.fig.canvas.get_renderer()
        top = text.get_window_extent(renderer).y1
        assert top <= plot.axis_top.get_window_extent(renderer).y0 + 1
        legend = [t.get_text() for t in plot.axis_top.get_legend().get_texts()]
        if "reference" in expected:
            assert legend[0].endswith("(reference)")


def test_a_long_confusion_matrix_title_stays_inside_the_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from salt.evaluation.plots import confusion_figure

    counts = np.diag(np.arange(1, len(ORIGINS) + 1)) + 1
    label = "GN2 with twelve heads and a much longer training on the full ttbar sample, rerun"
    fig = confusion_figure(metrics.confusion_summary(counts), label)
    FigureCanvasAgg(fig).draw()
    title = fig.axes[0].title
    box = title.get_window_extent(fig.canvas.get_renderer())
    width, height = fig.bbox.width, fig.bbox.height
    assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height, (box, width, height)
    assert label.split()[0] in title.get_text() and "accuracy" in title.get_text()


def test_without_tracks_and_ptau(tmp_path):
    path = write_prediction_file(
        tmp_path / "model.h5", n_jets=2000, with_tracks=False, with_ptau=False
    )
    files = make_report(path, verbose=False)
    report = read_json(files)
    model = report["models"][0]
    assert model["track_origin"] is None
    assert model["vertexing"] is None
    assert files.track_origin == []
    assert model["btag"]["fractions"] == pytest.approx({"fc": 0.2, "fu": 0.8, "ftau": 0.0})
    assert any("f_tau set to 0" in note for note in model["notes"])
    ref = numpy_rejections(path, "GN2", 0.2, 0.0, report["working_points"])
    np.testing.assert_allclose([r["c_rej"] for r in model["btag"]["working_points"]], ref["c"])
    md = files.markdown.read_text()
    assert "Track origin" not in md
    assert "Vertexing" not in md
    assert "f_tau set to 0" in md
    assert report["sample"] is None
    assert model["label"] == "model"


def test_tagger_inference_and_override(tmp_path):
    path = write_prediction_file(
        tmp_path / "x.h5", n_jets=1500, with_tracks=False, other_tagger="MockTagger"
    )
    # The model's outputs follow the copied inputs, so the last *_pb field is the model.
    auto = read_json(make_report(path, verbose=False, out_dir=tmp_path / "auto"))
    assert auto["models"][0]["tagger"] == "GN2"
    other = read_json(
        make_report(path, taggers="MockTagger", verbose=False, out_dir=tmp_path / "other")
    )
    assert other["models"][0]["tagger"] == "MockTagger"
    ref = numpy_rejections(path, "MockTagger", 0.2, 0.01, other["working_points"])
    got = [r["light_rej"] for r in other["models"][0]["btag"]["working_points"]]
    np.testing.assert_allclose(got, ref["light"], rtol=1e-9)
    with pytest.raises(SaltError, match="NoSuchTagger"):
        make_report(path, taggers="NoSuchTagger", verbose=False, out_dir=tmp_path / "bad")


def test_cli(tmp_path, capsys):
    path = write_prediction_file(tmp_path / "m__test_zprime.h5", n_jets=2000, seed=3)
    out = tmp_path / "cli"
    args = ["--tagger", "GN2", "--label", "mine", "--fc", "0.1", "--ftau", "0.05"]
    main([str(path), *args, "--out-dir", str(out), "--sample", "zp", "--wps", "70", "85"])
    stdout = capsys.readouterr().out
    assert "| mine | 70% |" in stdout
    report = json.loads((out / "m__test_zprime__report.json").read_text())
    assert report["sample"] == "zp"
    assert report["working_points"] == [0.7, 0.85]
    ref = numpy_rejections(path, "GN2", 0.1, 0.05, [0.7, 0.85])
    got = [r["light_rej"] for r in report["models"][0]["btag"]["working_points"]]
    np.testing.assert_allclose(got, ref["light"], rtol=1e-9)
    assert (out / "m__test_zprime__roc.png").stat().st_size > 0
    assert (out / "m__test_zprime__track_origin.png").stat().st_size > 0

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "example" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main([str(path), "--label", "a", "--label", "b"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.h5")])
