"""Bad input fails before any training step, as a SaltError that names file, dataset, variable and
jet; through the `salt` command, as a short message and exit code 2, never a traceback."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from test_data_loading import VARIABLES, make_dataset, make_module, read_file, write_upp

from salt.data.yamldicts import load_class_weights, load_norm_dict
from salt.errors import SaltError
from tests.conftest import data_args, run_salt

FLAVOURS = {"jets": {"flavour_label": ["bjets", "cjets", "ujets", "taujets"]}}


@pytest.fixture(scope="module")
def content(demo) -> tuple[np.ndarray, np.ndarray]:
    jets, tracks = read_file(demo["train"])
    return jets[:2000], tracks[:2000]


def crafted(tmp_path: Path, content, name: str = "crafted.h5", edit=None) -> Path:
    """A copy of the first 2000 demo jets, changed by `edit(jets, tracks)`."""
    jets, tracks = content[0].copy(), content[1].copy()
    if edit is not None:
        edit(jets, tracks)
    return write_upp(tmp_path / name, {"jets": jets, "tracks": tracks}, FLAVOURS)


def setup_error(demo, train_file, **kwargs) -> str:
    module = make_module(demo, train_file=str(train_file), **kwargs)
    with pytest.raises(SaltError) as info:
        module.setup("fit")
    return str(info.value)


def valid_slot(tracks: np.ndarray, jet: int) -> int:
    return int(np.flatnonzero(tracks["valid"][jet])[-1])


# ------------------------------------------------------------------------------------ files
def test_missing_file(demo, tmp_path):
    message = setup_error(demo, tmp_path / "nope.h5")
    assert "data.train_file" in message and f"'{tmp_path / 'nope.h5'}' does not exist" in message
    message = setup_error(demo, tmp_path / "none_*.h5")
    assert "no file matches the pattern" in message


def test_not_hdf5(demo, tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("jets, tracks\n" * 100)
    message = setup_error(demo, path)
    assert str(path) in message and "is not an HDF5 file" in message


def test_truncated_file(demo, tmp_path):
    path = tmp_path / "cut.h5"
    shutil.copyfile(demo["train"], path)
    os.truncate(path, path.stat().st_size // 2)  # an interrupted copy
    message = setup_error(demo, path)
    assert str(path) in message and "truncated" in message


def test_empty_file(demo, content, tmp_path):
    path = write_upp(tmp_path / "empty.h5", {"jets": content[0][:0], "tracks": content[1][:0]})
    message = setup_error(demo, path)
    assert str(path) in message and "holds no jets" in message


def test_missing_dataset_lists_close_matches(demo, content, tmp_path):
    path = write_upp(tmp_path / "track.h5", {"jets": content[0], "track": content[1]})
    message = setup_error(demo, path)
    assert str(path) in message and "no dataset 'tracks'" in message
    assert "Did you mean: track?" in message


def test_missing_variable_lists_close_matches(demo):
    variables = {"jets": ["pt_btagJes"], "tracks": ["d0", "IP3D_signed_d0_signifcance"]}
    message = setup_error(demo, demo["train"], variables=variables)
    assert str(demo["train"]) in message
    assert "dataset 'tracks' has no variable 'IP3D_signed_d0_signifcance'" in message
    assert "Did you mean: IP3D_signed_d0_significance" in message


def test_missing_label_field(demo):
    labels = {"jets": ["flavour_labels"]}
    message = setup_error(demo, demo["train"], labels=labels)
    assert "dataset 'jets' has no variable 'flavour_labels'" in message
    assert "Did you mean: flavour_label" in message


def test_inconsistent_datasets(demo, content, tmp_path):
    path = write_upp(tmp_path / "rows.h5", {"jets": content[0], "tracks": content[1][:1500]})
    assert "'tracks' has 1500 rows but 'jets' has 2000" in setup_error(demo, path)
    no_valid = content[1][[n for n in content[1].dtype.names if n != "valid"]]
    path = write_upp(tmp_path / "novalid.h5", {"jets": content[0], "tracks": no_valid})
    assert "no boolean 'valid' field" in setup_error(demo, path)


def test_damaged_chunk_names_the_jets(demo, tmp_path):
    path = tmp_path / "damaged.h5"
    shutil.copyfile(demo["train"], path)
    with h5py.File(path, "r") as f:
        chunk = f["tracks"].id.get_chunk_info(7)  # jets 700..799
    with path.open("r+b") as f:
        f.seek(chunk.byte_offset + 20)
        f.write(b"\xff" * 2000)
    message = setup_error(demo, path, check_jets=-1)
    assert f"'{path}': dataset 'tracks' cannot be read at jets 500..999" in message
    # past the start-up scan: from the read-ahead thread, and from a worker
    for workers in (0, 1):
        module = make_module(demo, train_file=str(path), check_jets=0, num_workers=workers)
        module.setup("fit")
        with pytest.raises(SaltError, match=r"cannot be read at jets 500\.\.999"):
            list(module.train_dataloader())


# ------------------------------------------------------------------------------------ values
def test_padding_may_hold_nan(demo, content):
    # UPP pads with NaN (ftag's TrackSelector convention): only valid slots are checked
    tracks = content[1]
    assert np.isnan(tracks["d0"][~tracks["valid"]]).all()
    make_module(demo, check_jets=-1).setup("fit")


def test_nan_input_names_variable_and_jet(demo, content, tmp_path):
    def edit(jets, tracks):
        tracks[1234, valid_slot(tracks, 1234)]["z0SinTheta"] = np.nan

    path = crafted(tmp_path, content, edit=edit)
    message = setup_error(demo, path, check_jets=-1)
    assert str(path) in message
    assert "variable 'z0SinTheta' of dataset 'tracks' is nan" in message
    assert "jet 1234" in message


def test_inf_jet_input_names_variable_and_jet(demo, content, tmp_path):
    def edit(jets, tracks):
        jets[77]["eta_btagJes"] = -np.inf

    message = setup_error(demo, crafted(tmp_path, content, edit=edit))
    assert "variable 'eta_btagJes' of dataset 'jets' is -inf in jet 77" in message


def test_nan_past_the_scan_fails_when_its_batch_is_read(demo, content, tmp_path):
    def edit(jets, tracks):
        tracks[1700, valid_slot(tracks, 1700)]["d0"] = np.nan

    path = crafted(tmp_path, content, edit=edit)
    for workers in (0, 1):
        module = make_module(demo, train_file=str(path), check_jets=500, num_workers=workers)
        module.setup("fit")  # the scan covers the first 500 jets only
        before = {p.pid for p in multiprocessing.active_children()}
        with pytest.raises(SaltError) as info:
            list(module.train_dataloader())
        message = str(info.value)
        assert "variable 'd0' of dataset 'tracks' is nan" in message and "jet 1700" in message
        assert "Traceback" not in message, "a worker's error reads as the same short message"
        # and its workers are gone: they ignore SIGTERM, torch's fallback, and would otherwise
        # linger (and keep the interpreter from exiting)
        assert {p.pid for p in multiprocessing.active_children()} <= before


def test_label_outside_the_task_classes(demo, content, tmp_path):
    def edit(jets, tracks):
        jets[321]["flavour_label"] = 7

    message = setup_error(demo, crafted(tmp_path, content, edit=edit))
    assert "label 'flavour_label' of dataset 'jets' is 7 for jet 321" in message
    assert "4 classes (0..3)" in message


def test_track_label_outside_classes_and_ignore_index(demo, content, tmp_path):
    def ignore(jets, tracks):
        tracks[5, valid_slot(tracks, 5)]["ftagTruthOriginLabel"] = -1

    module = make_module(demo, train_file=str(crafted(tmp_path, content, "ok.h5", ignore)))
    module.setup("fit")  # -1 on a constituent means "ignore"

    def edit(jets, tracks):
        tracks[999, valid_slot(tracks, 999)]["ftagTruthOriginLabel"] = 8

    message = setup_error(demo, crafted(tmp_path, content, edit=edit))
    assert "label 'ftagTruthOriginLabel' of dataset 'tracks' is 8 for jet 999" in message
    assert "8 classes (0..7, or -1 to ignore)" in message


def test_non_finite_float_label_passes_through(demo, content, tmp_path):
    """A missing regression target (NaN) is not an error: the regression loss skips it."""

    def edit(jets, tracks):
        jets[42]["HadronConeExclTruthLabelPt"] = np.nan

    path = crafted(tmp_path, content, edit=edit)
    dataset = make_dataset(path, labels={"jets": ["HadronConeExclTruthLabelPt"]})
    target = dataset[0]["labels"]["jets"]["HadronConeExclTruthLabelPt"]
    assert np.isnan(target[42].item())
    assert np.isfinite(np.delete(target.numpy(), 42)).all()


# ------------------------------------------------------------------------------------ settings
def test_num_train_zero_and_batch_size_zero(demo):
    assert "data.num_train is 0" in setup_error(demo, demo["train"], num_train=0)
    with pytest.raises(SaltError, match="batch_size must be at least 1"):
        make_dataset(demo["train"], batch_size=0)


def _norm_dict(tmp_path: Path, demo, edit) -> Path:
    content = yaml.safe_load(Path(demo["norm_dict"]).read_text())
    edit(content)
    path = tmp_path / "norm_dict.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["tracks"].pop("d0"), "has no mean/std for tracks.d0"),
        (lambda d: d["tracks"]["dphi"].update(std=0.0), "tracks.dphi has mean .* and std 0.0"),
        (lambda d: d["jets"]["pt_btagJes"].update(std=float("nan")), "jets.pt_btagJes .* std nan"),
        (lambda d: d["tracks"]["d0"].update(mean=float("inf")), "tracks.d0 has mean inf"),
        (lambda d: d.pop("tracks"), "has no entry for 'tracks'"),
        (lambda d: d["tracks"].update(d0=3.0), r"tracks.d0 should be \{mean: float"),
    ],
)
def test_norm_dict_must_cover_every_variable(demo, tmp_path, edit, expected):
    path = _norm_dict(tmp_path, demo, edit)
    with pytest.raises(SaltError, match=f"norm_dict '{path}'.*{expected}"):
        load_norm_dict(path, VARIABLES)


def test_norm_dict_file_problems(demo, tmp_path):
    with pytest.raises(SaltError, match="does not exist"):
        load_norm_dict(tmp_path / "missing.yaml", VARIABLES)
    bad = tmp_path / "bad.yaml"
    bad.write_text("jets: [unclosed\n")
    with pytest.raises(SaltError, match="is not valid YAML"):
        load_norm_dict(bad, VARIABLES)
    # dataset names of an input_map are found too
    content = yaml.safe_load(Path(demo["norm_dict"]).read_text())
    content["consts"] = content.pop("tracks")
    mapped = tmp_path / "mapped.yaml"
    mapped.write_text(yaml.safe_dump(content))
    assert load_norm_dict(mapped, VARIABLES, {"tracks": "consts"})["tracks"]["d0"][1] > 0


def test_class_dict_checks(demo):
    weights = load_class_weights(demo["class_dict"], "tracks", "ftagTruthOriginLabel", 8)
    assert len(weights) == 8 and min(weights) == 1.0
    with pytest.raises(SaltError, match="has 8 weights but the task has 4 classes"):
        load_class_weights(demo["class_dict"], "tracks", "ftagTruthOriginLabel", 4)
    with pytest.raises(SaltError, match=r"has no weights for tracks\.nothing"):
        load_class_weights(demo["class_dict"], "tracks", "nothing", 4)


# ------------------------------------------------------------------------------------ salt fit
def _bad_nan(tmp_path, content):
    def edit(jets, tracks):
        tracks[1234, valid_slot(tracks, 1234)]["d0"] = np.nan

    return crafted(tmp_path, content, edit=edit), ["'d0' of dataset 'tracks' is nan", "jet 1234"]


def _bad_label(tmp_path, content):
    def edit(jets, tracks):
        jets[321]["flavour_label"] = 7

    return crafted(tmp_path, content, edit=edit), ["'flavour_label'", "is 7 for jet 321"]


def _truncated(tmp_path, content):
    path = crafted(tmp_path, content)
    os.truncate(path, path.stat().st_size - 1000)
    return path, [str(path), "truncated"]


@pytest.mark.parametrize("bad", [_bad_nan, _bad_label, _truncated])
def test_salt_fit_stops_before_training(demo, content, tmp_path, bad):
    path, expected = bad(tmp_path, content)
    args = data_args(demo)
    args[args.index("--data.train_file") + 1] = str(path)
    result = run_salt(
        ["fit", "--config", "configs/GN2.yaml", *args, "--force", "--trainer.max_epochs", "1"],
        cwd=tmp_path,
        check=False,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "salt: error:" in result.stderr
    for text in expected:
        assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("logs/*/ckpts/*.ckpt")), "no training step was taken"
