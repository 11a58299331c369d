"""One naming rule for every output, in prediction files and ONNX (salt.export.outputs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from salt.errors import SaltError
from salt.export.outputs import output_fields
from salt.models.tasks import (
    ClassificationTask,
    GaussianRegressionTask,
    RegressionTask,
    VertexingTask,
)

DENSE = {"input_size": 8, "hidden_layers": [4]}
FLAVOURS = ["bjets", "cjets", "ujets", "taujets"]
PT, LXY = "HadronConeExclTruthLabelPt", "HadronConeExclTruthLabelLxy"


def jets_classifier(name: str = "jets_classification") -> ClassificationTask:
    return ClassificationTask(name, "jets", "flavour_label", DENSE, class_names=FLAVOURS)


def regression(name: str, target: str, gaussian: bool = False) -> RegressionTask:
    cls = GaussianRegressionTask if gaussian else RegressionTask
    return cls(name, "jets", [target], DENSE, scales={target: [1.0, 2.0]})


def model(*tasks) -> SimpleNamespace:
    """What the naming reads of a SaltModel: its tasks, jet object and constituent types."""
    return SimpleNamespace(tasks=list(tasks), global_object="jets", constituents=["tracks"])


def names(m, for_file: bool = False) -> list[str]:
    return [s.name for s in output_fields(m, "GN2", for_file=for_file)]


def test_classification_and_regression_are_named_by_the_model():
    m = model(jets_classifier(), regression("hadron_pt", PT), regression("hadron_lxy", LXY, True))
    expected = ["GN2_pb", "GN2_pc", "GN2_pu", "GN2_ptau", f"GN2_{PT}", f"GN2_{LXY}"]
    expected.append(f"GN2_{LXY}_stddev")
    assert names(m) == expected
    assert names(m, for_file=True) == expected  # the file and ONNX agree


def test_a_clash_names_the_later_task():
    m = model(
        jets_classifier(), jets_classifier("aux_flavour"),
        regression("pt_mse", PT), regression("pt_gauss", PT, gaussian=True),
    )  # fmt: skip
    assert names(m) == [
        "GN2_pb", "GN2_pc", "GN2_pu", "GN2_ptau",
        "GN2_aux_flavour_pb", "GN2_aux_flavour_pc", "GN2_aux_flavour_pu", "GN2_aux_flavour_ptau",
        f"GN2_{PT}", f"GN2_pt_gauss_{PT}", f"GN2_pt_gauss_{PT}_stddev",
    ]  # fmt: skip


def test_custom_output_names_replace_the_targets():
    task = regression("hadron_lxy", LXY, gaussian=True)
    task.custom_output_names = ["Lxy"]
    assert names(model(task)) == ["GN2_Lxy", "GN2_Lxy_stddev"]
    task.custom_output_names = ["a", "b"]
    with pytest.raises(SaltError, match="custom_output_names"):
        names(model(task))


def test_track_outputs_in_files_and_in_onnx():
    origin = ClassificationTask("track_origin", "tracks", "ftagTruthOriginLabel", DENSE)
    vertexing = VertexingTask("track_vertexing", "tracks", DENSE)
    m = model(jets_classifier(), origin, vertexing)
    assert names(m)[4:] == ["GN2_TrackOrigin", "GN2_VertexIndex"]
    in_file = names(m, for_file=True)[4:]
    assert in_file == [
        *[f"GN2_p{o}" for o in origin.class_names], "GN2_aux_TrackOrigin", "GN2_aux_VertexIndex",
    ]  # fmt: skip
