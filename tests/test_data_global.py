"""Jet-level inputs besides the jets' own: `global` (and `parameters`, see test_data_parameters)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.recfunctions import structured_to_unstructured
from test_data_loading import (
    JET_VARS,
    TRACK_VARS,
    VARIABLES,
    assert_batch_equal,
    expected_batch,
    make_dataset,
    make_module,
    read_file,
    write_upp,
)

from salt.errors import SaltError

GLOBAL = ["HadronConeExclTruthLabelLxy", "n_tracks", "pt"]  # f4, i4, f4: three runs


@pytest.fixture(scope="module")
def content(demo) -> tuple[np.ndarray, np.ndarray]:
    return read_file(demo["train"])


def split_global(batch: dict) -> tuple[dict, np.ndarray]:
    inputs = dict(batch["inputs"])
    return {**batch, "inputs": inputs}, inputs.pop("global").numpy()


@pytest.mark.parametrize(
    "input_map",
    [None, {"global": "global"}, {"global": "jets", "jets": "jets"}, {"global": "nothing"}],
)
def test_global_inputs_come_from_the_jet_dataset(demo, content, input_map):
    # salt-ml reads them from the jet-level dataset whatever input_map says (GN3V01 maps
    # global: global, a dataset that no file has)
    dataset = make_dataset(
        demo["train"], variables={**VARIABLES, "global": GLOBAL}, input_map=input_map
    )
    assert dataset.object_names == ["jets", "tracks"] and dataset.extra_inputs == ["global"]
    batch, x = split_global(dataset[2])
    assert x.dtype == np.float32 and x.shape == (700, 3)
    expected = structured_to_unstructured(content[0][1400:2100][GLOBAL], dtype=np.float32)
    np.testing.assert_array_equal(x, expected)
    assert "global" not in batch["valid"], "global inputs are not constituents"
    assert_batch_equal(batch, expected_batch(*content, 1400, 2100))


def test_global_without_jet_inputs(demo, content):
    # a model whose jet variables join only after the encoder
    dataset = make_dataset(demo["train"], variables={"tracks": TRACK_VARS, "global": JET_VARS})
    batch = dataset[0]
    assert set(batch["inputs"]) == {"tracks", "global"}
    expected = structured_to_unstructured(content[0][:700][JET_VARS], dtype=np.float32)
    np.testing.assert_array_equal(batch["inputs"]["global"], expected)


def test_global_of_another_jet_level_object(content, tmp_path):
    path = write_upp(tmp_path / "fat.h5", {"fatjets": content[0][:800], "tracks": content[1][:800]})
    dataset = make_dataset(
        path,
        variables={"fatjets": JET_VARS, "tracks": TRACK_VARS, "global": GLOBAL},
        labels={},
        global_object="fatjets",
    )
    expected = structured_to_unstructured(content[0][700:800][GLOBAL], dtype=np.float32)
    np.testing.assert_array_equal(dataset[1]["inputs"]["global"], expected)


def test_global_through_several_files_and_workers(demo, content, tmp_path):
    parts = [
        write_upp(tmp_path / f"part_{i}.h5", {"jets": content[0][a:b], "tracks": content[1][a:b]})
        for i, (a, b) in enumerate([(0, 2500), (2500, 6000)])
    ]
    variables = {**VARIABLES, "global": GLOBAL}
    module = make_module(
        demo,
        train_file=[str(p) for p in parts],
        variables=variables,
        input_map={"global": "global"},
        num_workers=1,
        check_jets=0,
    )
    module.setup("fit")
    loader = module.train_dataloader()
    for index, batch in zip(loader.sampler.order(), loader):
        start, stop = module.datasets["train"].rows(int(index))
        expected = structured_to_unstructured(content[0][start:stop][GLOBAL], dtype=np.float32)
        np.testing.assert_array_equal(batch["inputs"]["global"], expected)
    module.teardown("fit")


def test_missing_global_variable_names_the_jet_dataset(demo):
    with pytest.raises(SaltError) as info:
        make_dataset(demo["train"], variables={**VARIABLES, "global": ["softMuon_isMedium"]})
    message = str(info.value)
    assert "dataset 'jets' has no variable 'softMuon_isMedium'" in message
    assert "data.variables.global" in message and str(demo["train"]) in message


def test_non_finite_global_input(demo, content, tmp_path):
    jets = content[0][:1000].copy()
    jets["HadronConeExclTruthLabelLxy"][17] = np.nan  # a missing soft muon, say
    path = write_upp(tmp_path / "nan.h5", {"jets": jets, "tracks": content[1][:1000]})
    variables = {**VARIABLES, "global": GLOBAL}
    with pytest.raises(SaltError, match="'HadronConeExclTruthLabelLxy' of dataset 'jets' is nan"):
        make_dataset(path, variables=variables)[0]
    x = make_dataset(path, variables=variables, non_finite_to_num=True)[0]["inputs"]["global"]
    assert x[17, 0] == 0 and x[16, 0] == jets["HadronConeExclTruthLabelLxy"][16]
