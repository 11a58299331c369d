"""Tests of `to_onnx` and `get_onnx_metadata` (salt.export).

Every shipped config is trained briefly through the CLI on the demo files, exported, checked
against PyTorch and read back. The ONNX models are then run here directly, independently
of the export's own parity code, and a deliberately broken export must fail the check.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the demo files are LZ4-compressed)
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from onnx import numpy_helper

from salt.callbacks.checkpoint import best_checkpoint
from salt.export.loading import load_run
from salt.export.metadata import main as metadata_main
from salt.export.metadata import read_metadata
from salt.export.outputs import class_field
from salt.export.to_onnx import main as to_onnx_main
from salt.export.wrapper import dense_vertex_index
from salt.models.layout import Packed
from salt.models.tasks import vertex_index
from tests.conftest import run_salt

CLASSES = ["bjets", "cjets", "ujets", "taujets"]
TRACK_MODELS = ("GN2", "GN1")


@pytest.fixture
def trained(trained_run):
    """`trained("GN2")` -> a copy of the session's trained run of that config (conftest)."""
    return trained_run


def checkpoint(run: Path) -> Path:
    return best_checkpoint(run / "ckpts")


def to_onnx(args: list[str], capsys) -> tuple[int, str]:
    """Run `to_onnx ARGS` in this process; exit status and everything it printed."""
    try:
        to_onnx_main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def val_jets(demo, variables: dict, n: int = 50) -> tuple[np.ndarray, list[np.ndarray]]:
    """Raw jet inputs (n, F_jets) and each jet's valid track inputs (n_i, F_tracks)."""
    with h5py.File(demo["val"]) as f:
        jets = f["jets"][:n]
        tracks = f["tracks"][:n]
    jet_x = np.stack([jets[v] for v in variables.get("jets", ["pt"])], -1).astype(np.float32)
    track_x = np.stack([tracks[v] for v in variables["tracks"]], -1).astype(np.float32)
    return jet_x, [track_x[i][tracks["valid"][i]] for i in range(n)]


@torch.no_grad()
def pytorch_packed(model, jets: np.ndarray | None, tracks: list[np.ndarray]) -> dict:
    """The model's predictions on a batch, in its packed training layout."""
    inputs, valid = {}, None
    if jets is not None:
        inputs["jets"] = torch.from_numpy(jets)
    if tracks:
        counts = torch.tensor([len(t) for t in tracks])
        inputs["tracks"] = torch.from_numpy(np.concatenate(tracks))
        valid = {"tracks": torch.arange(40)[None, :] < counts[:, None]}
    return model.predict(inputs, valid)


# --------------------------------------------------------------------------------- every config
@pytest.mark.slow
@pytest.mark.parametrize("config", ["GN2", "GN1", "DIPS", "DL1", "regression"])
def test_export_check_and_metadata(config, trained, demo, capsys, tmp_path):
    run = trained(config)
    ckpt = checkpoint(run)
    name = f"{config}vXX"
    if config == "GN2":  # the console script as users run it, exit status included
        result = run_salt(
            ["--ckpt_path", ckpt, "--name", name], cwd=tmp_path, command="salt.export.to_onnx"
        )
        text = result.stdout + result.stderr
    else:  # in this process, with a shorter parity check
        code, text = to_onnx(["--ckpt_path", ckpt, "--name", name, "--parity_jets", "300"], capsys)
        assert code == 0, text
    assert "PASSED" in text
    path = run / f"{name}.onnx"
    assert path.is_file()

    meta = read_metadata(path)
    config_yaml = yaml.safe_load((run / "config.yaml").read_text())
    variables = config_yaml["data"]["variables"]
    norm = yaml.safe_load(Path(demo["norm_dict"]).read_text())
    assert meta["model_name"] == name
    assert meta["track_selection"] == "r22default"
    assert meta["training_config"] == (run / "config.yaml").read_text()
    assert meta["salt_version"]
    assert "git_hash" in meta
    assert meta["export"]["checkpoint"] == ckpt.name
    expected_inputs = {"jets": "jet_features", "tracks": "track_features"}
    assert [i["name"] for i in meta["inputs"]] == [expected_inputs[o] for o in variables]
    for item in meta["inputs"]:
        obj = item["object"]
        assert [v["name"] for v in item["variables"]] == variables[obj]
        for var in item["variables"]:
            # the checkpoint's float32 buffers, i.e. the norm dict's values in float32
            assert var["mean"] == float(np.float32(norm[obj][var["name"]]["mean"]))
            assert var["std"] == float(np.float32(norm[obj][var["name"]]["std"]))
    names = [class_field(name, c) for c in CLASSES]
    if config in TRACK_MODELS:
        names += [f"{name}_TrackOrigin", f"{name}_VertexIndex"]
    if config == "regression":  # <model>_<target>, as `salt test` names them (output_fields)
        lxy = f"{name}_HadronConeExclTruthLabelLxy"
        names += [f"{name}_HadronConeExclTruthLabelPt", lxy, f"{lxy}_stddev"]
    assert [o["name"] for o in meta["outputs"]] == names
    assert [o.name for o in session(path).get_outputs()] == names
    parity = meta["parity"]
    jets = 1000 if config == "GN2" else 300  # the default, or --parity_jets
    assert parity["passed"] and parity["jets"] >= jets and parity["tolerance"] == 1e-5
    assert set(parity["max_abs_diff"]) == set(names)
    if "tracks" in variables:
        assert parity["constituent_counts"][1] == 40
        assert parity["constituent_counts"][0] == (
            0 if meta["export"]["accepts_zero_tracks"] else 1
        )

    # the readable summary and the JSON dump of get_onnx_metadata
    metadata_main([str(path)])
    summary = capsys.readouterr().out
    for var in [*variables.get("jets", []), *variables.get("tracks", []), *names]:
        assert var in summary
    for out in names:  # a long name is not run into its type (GN2regvXX_..._LabelPtfloat32)
        assert re.search(rf"^  {re.escape(out)}\s+(float32|int8)\s", summary, re.M), out
    metadata_main([str(path), "--json"])
    assert json.loads(capsys.readouterr().out) == meta
    if "tracks" in variables:
        check_dynamic_track_axis(path, run, name, demo)


def check_dynamic_track_axis(path: Path, run: Path, name: str, demo) -> None:
    """ONNX on jets of 1 and 40 tracks (and 0 if it says it takes them) equals PyTorch, packed.

    Independent of the export's own parity code: the model is loaded afresh and run on a batch.
    """
    meta = read_metadata(path)
    model = load_run(checkpoint(run)).model
    sess = session(path)
    jets, tracks = val_jets(demo, model.variables)
    pool = np.concatenate(tracks)
    has_jets = "jets" in model.variables
    zero = meta["export"]["accepts_zero_tracks"]
    counts = [1, 40, *([0] if zero else [])]
    picked = [pool[i * 3 : i * 3 + n] for i, n in enumerate(counts)]
    ref = pytorch_packed(model, jets[: len(counts)] if has_jets else None, picked)
    out_names = [o.name for o in sess.get_outputs()]
    for i, trk in enumerate(picked):
        feed = {"track_features": trk} | ({"jet_features": jets[i : i + 1]} if has_jets else {})
        out = dict(zip(out_names, sess.run(None, feed)))
        probs = np.concatenate([out[class_field(name, c)] for c in CLASSES])
        np.testing.assert_allclose(probs, ref["jets_classification"]["probs"][i], atol=1e-5)
        if f"{name}_TrackOrigin" in out:
            start = sum(counts[:i])
            origin, vertex = out[f"{name}_TrackOrigin"], out[f"{name}_VertexIndex"]
            assert origin.shape == vertex.shape == (len(trk),)
            assert origin.dtype == vertex.dtype == np.int8
            want = ref["track_origin"]["argmax"][start : start + len(trk)]
            np.testing.assert_array_equal(origin, want)
            want = ref["track_vertexing"]["vertex_index"][start : start + len(trk)]
            np.testing.assert_array_equal(vertex, want)
    if not zero:
        feed = {"track_features": pool[:0]} | ({"jet_features": jets[:1]} if has_jets else {})
        with pytest.raises(Exception):  # noqa: B017  onnxruntime's own error types
            sess.run(None, feed)


@pytest.mark.slow
def test_vertex_index_with_real_vertices(trained, demo, capsys, tmp_path):
    """VertexIndex in ONNX equals training's on jets with multi-track vertices.

    After a short training the vertexing head calls (nearly) every pair apart, which any graph
    reproduces; its output bias is raised here until a fifth of the pairs join.
    """
    run = trained("GN2")
    model = load_run(checkpoint(run)).model
    (index,) = [i for i, t in enumerate(model.tasks) if t.name == "track_vertexing"]
    jets, tracks = val_jets(demo, model.variables)
    with torch.no_grad():
        counts = torch.tensor([len(t) for t in tracks])
        outputs, _ = model(
            {"jets": torch.from_numpy(jets), "tracks": torch.from_numpy(np.concatenate(tracks))},
            {"tracks": torch.arange(40)[None, :] < counts[:, None]},
        )
    shift = -torch.quantile(outputs["track_vertexing"], 0.8)
    ckpt = torch.load(checkpoint(run), map_location="cpu", weights_only=True)
    prefix = f"model.tasks.{index}.rest.net."
    last = max(
        int(k.removeprefix(prefix).split(".")[0])
        for k in ckpt["state_dict"]
        if k.startswith(prefix)
    )
    ckpt["state_dict"][f"{prefix}{last}.bias"] += shift
    copy = tmp_path / "run"
    (copy / "ckpts").mkdir(parents=True)
    for name in ("config.yaml", "metadata.yaml", "norm_dict.yaml"):
        shutil.copy(run / name, copy / name)
    joined = copy / "ckpts" / "epoch=000-val_loss=1.00000.ckpt"  # a name salt picks up
    torch.save(ckpt, joined)

    code, text = to_onnx(["--ckpt_path", joined], capsys)
    assert code == 0, text
    check_dynamic_track_axis(copy / "GN2.onnx", copy, "GN2", demo)
    ref = pytorch_packed(load_run(joined).model, jets, tracks)
    vertex = ref["track_vertexing"]["vertex_index"]
    position = torch.cat([torch.arange(len(t)) for t in tracks])
    assert (vertex != position).float().mean() > 0.1, "few tracks share a vertex: no test"


# --------------------------------------------------------------------------------- outputs
@pytest.mark.slow
def test_combine_and_rename(trained, demo, capsys, tmp_path):
    run = trained("DL1")
    plain, combined = tmp_path / "plain.onnx", tmp_path / "combined.onnx"
    code, text = to_onnx(["--ckpt_path", checkpoint(run), "--output", plain], capsys)
    assert code == 0, text
    code, text = to_onnx(
        ["--ckpt_path", checkpoint(run), "--output", combined, "--parity_jets", 300,
         "--combine_outputs", "pqcd=pu+pc", "DL1_pnotb=pc+pu+ptau", "--rename", "pb:pbottom",
         "pqcd:plight"],
        capsys,
    )  # fmt: skip
    assert code == 0, text
    names = [o["name"] for o in read_metadata(combined)["outputs"]]
    assert names == ["DL1_pbottom", "DL1_pc", "DL1_pu", "DL1_ptau", "DL1_plight", "DL1_pnotb"]
    assert read_metadata(combined)["export"]["rename"] == ["pb:pbottom", "pqcd:plight"]

    variables = yaml.safe_load((run / "config.yaml").read_text())["data"]["variables"]["jets"]
    with h5py.File(demo["val"]) as f:
        x = np.stack([f["jets"][v][:20] for v in variables], -1).astype(np.float32)
    a, b = session(plain), session(combined)
    for i in range(len(x)):
        ref = dict(
            zip([o.name for o in a.get_outputs()], a.run(None, {"jet_features": x[i : i + 1]}))
        )
        out = dict(
            zip([o.name for o in b.get_outputs()], b.run(None, {"jet_features": x[i : i + 1]}))
        )
        np.testing.assert_array_equal(out["DL1_pbottom"], ref["DL1_pb"])
        np.testing.assert_allclose(out["DL1_plight"], ref["DL1_pu"] + ref["DL1_pc"], atol=1e-7)
        np.testing.assert_allclose(out["DL1_pnotb"], 1 - ref["DL1_pb"], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--combine_outputs", "plight", "write NEW=A+B"),
        ("--combine_outputs", "plight=pu+pgluon", "no output 'pgluon'"),
        ("--rename", "pbb:pbottom", "Did you mean: DL1_pb"),
        ("--rename", "pb:pc", "exists already"),
    ],
)
def test_bad_output_options_are_refused(option, value, message, trained, capsys, tmp_path):
    code, text = to_onnx(
        ["--ckpt_path", checkpoint(trained("DL1")), "--output", tmp_path / "x.onnx", option, value],
        capsys,
    )
    assert code == 2
    assert message in text
    assert not (tmp_path / "x.onnx").exists()


# --------------------------------------------------------------------------------- failures
@pytest.mark.slow
def test_tampered_model_fails_the_check(trained, capsys, tmp_path):
    """A changed normalisation in the ONNX file: `to_onnx --check` must exit 1."""
    run = trained("DIPS")
    good = tmp_path / "good.onnx"
    code, text = to_onnx(["--ckpt_path", checkpoint(run), "--output", good], capsys)
    assert code == 0, text
    proto = onnx.load(str(good))
    norm = load_run(checkpoint(run)).model.norms["tracks"]
    mean, std = norm.mean.numpy(), norm.std.numpy()
    hits = [t for t in proto.graph.initializer if np.array_equal(numpy_helper.to_array(t), mean)]
    assert len(hits) == 1, "the track means should be one initializer of the graph"
    shifted = numpy_helper.to_array(hits[0]).copy()
    shifted[0] += 0.5 * std[0]  # d0's mean off by half a std, as from a stale norm dict
    hits[0].CopyFrom(numpy_helper.from_array(shifted, hits[0].name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))

    code, text = to_onnx(["--ckpt_path", checkpoint(run), "--check", good], capsys)
    assert code == 0, text
    code, text = to_onnx(["--ckpt_path", checkpoint(run), "--check", bad], capsys)
    assert code == 1
    assert "FAILED" in text


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["offset", "nan"])
def test_broken_export_is_not_written(damage, trained, capsys, tmp_path, monkeypatch):
    """An export whose graph differs from PyTorch exits 1 and leaves --output unwritten."""
    from salt.export.wrapper import ExportModel

    forward = ExportModel.forward

    def broken(self, *features):
        outputs = forward(self, *features)
        bad = outputs[0] + 1e-3 if damage == "offset" else outputs[0] * float("nan")
        return (bad, *outputs[1:])

    monkeypatch.setattr(ExportModel, "forward", broken)
    out = tmp_path / "model.onnx"
    code, text = to_onnx(["--ckpt_path", checkpoint(trained("DL1")), "--output", out], capsys)
    assert code == 1
    assert "FAILED" in text and ("NaN" in text if damage == "nan" else "1.00e-03" in text)
    assert not out.exists()
    failed = tmp_path / "model.parity_failed.onnx"
    assert read_metadata(failed)["parity"]["passed"] is False


@pytest.mark.slow
def test_compiled_checkpoint(trained, capsys, tmp_path):
    """Keys of a torch.compile'd model (`_orig_mod.`) load into the plain model.

    `salt fit --compile` compiles in place and saves plain keys (checked by hand: a compiled CPU
    fit takes over a minute here); a model wrapped as `torch.compile(model)` saves these.
    """
    run = trained("DL1")
    ckpt = torch.load(checkpoint(run), map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {
        k.replace("model.", "model._orig_mod.", 1): v for k, v in ckpt["state_dict"].items()
    }
    copy = tmp_path / "run"
    (copy / "ckpts").mkdir(parents=True)
    for name in ("config.yaml", "metadata.yaml", "norm_dict.yaml"):
        shutil.copy(run / name, copy / name)
    torch.save(ckpt, copy / "ckpts" / "compiled.ckpt")
    code, text = to_onnx(
        ["--ckpt_path", copy / "ckpts/compiled.ckpt", "--parity_jets", 300], capsys
    )
    assert code == 0, text
    assert (copy / "DL1.onnx").is_file()


@pytest.mark.slow
def test_moved_run_needs_its_files(trained, demo, capsys, tmp_path):
    """A run folder copied elsewhere: norm dict from the copy, the val file asked for by name."""
    run = trained("DL1")
    copy = tmp_path / "run"
    (copy / "ckpts").mkdir(parents=True)
    shutil.copy(checkpoint(run), copy / "ckpts")
    shutil.copy(run / "norm_dict.yaml", copy)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["val_file"] = "gone/pp_output_val.h5"
    config["data"]["norm_dict"] = config["model"]["model"]["init_args"]["norm_dict"] = "gone.yaml"
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["--ckpt_path", next((copy / "ckpts").glob("*.ckpt")), "--parity_jets", 300]
    code, text = to_onnx(args, capsys)
    assert code == 2
    assert "gone/pp_output_val.h5" in text and "--val_file" in text
    code, text = to_onnx([*args, "--val_file", demo["val"]], capsys)
    assert code == 0, text
    # another norm dict builds the model, but the checkpoint's values are what the graph holds
    norm = yaml.safe_load((run / "norm_dict.yaml").read_text())
    trained_mean = norm["jets"]["pt_btagJes"]["mean"]
    norm["jets"]["pt_btagJes"]["mean"] = trained_mean + 1000.0
    (tmp_path / "other_norm.yaml").write_text(yaml.safe_dump(norm))
    out = tmp_path / "other.onnx"
    code, text = to_onnx(
        [*args, "--val_file", demo["val"], "--norm_dict", tmp_path / "other_norm.yaml",
         "--output", out],
        capsys,
    )  # fmt: skip
    assert code == 0, text
    assert "warning: jets.pt_btagJes has another mean/std" in text
    (jets,) = [i for i in read_metadata(out)["inputs"] if i["object"] == "jets"]
    assert jets["variables"][0]["mean"] == float(np.float32(trained_mean))
    code, text = to_onnx(
        [*args[:2], "--config", Path(__file__).parents[1] / "salt/configs/DL1.yaml"], capsys
    )
    assert code == 2
    assert "not a config written by `salt fit`" in text


# --------------------------------------------------------------------------------- units
@pytest.mark.parametrize("seed", range(4))
def test_dense_vertex_index_matches_training(seed):
    """The graph's vertex index equals `tasks.vertex_index` for jets of 0 to 40 tracks."""
    gen = torch.Generator().manual_seed(seed)
    for n in [0, 1, 2, 7, 40]:
        logits = torch.randn(n, n, generator=gen) - 1.5 + seed  # sparse to dense graphs
        if seed == 0 and n == 40:  # one chain through all 40 tracks, in a scrambled order
            logits = torch.full((n, n), -1.0)
            order = torch.randperm(n, generator=gen)
            logits[order[:-1], order[1:]] = logits[order[1:], order[:-1]] = 1.0
        upper = torch.triu(logits, 1)
        sym = upper + upper.T
        layout = Packed(torch.arange(40)[None, :] < n)
        i, j = layout.pairs()
        expected = vertex_index(sym[i, j], layout)
        assert torch.equal(dense_vertex_index(sym), expected)
        if seed == 0 and n == 40:
            assert expected.eq(0).all()


def test_help_says_what_and_how(capsys):
    for main in (to_onnx_main, metadata_main):
        with pytest.raises(SystemExit) as exc:
            main(["--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "example" in text and "ONNX" in text
