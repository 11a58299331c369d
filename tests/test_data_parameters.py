"""data.parameters: the inputs of a parameterised network, drawn for background jets at fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_data_loading import (
    VARIABLES,
    assert_batches_equal,
    make_dataset,
    make_module,
    read_file,
    write_upp,
)

from salt.data.parameters import ParameterSpec
from salt.data.sampler import BatchIndex
from salt.errors import SaltError

TRAIN = [5.0, 16.0, 55.0]
PROB = [0.2, 0.3, 0.5]
SPEC = {"mass": {"train": TRAIN, "test": 40, "prob": PROB}}
PARAM_VARIABLES = {**VARIABLES, "parameters": ["mass"]}


@pytest.fixture(scope="module")
def mass_file(demo, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """Demo jets whose b-jets (signal) carry a hypothesis mass of TRAIN; the others do not."""
    jets, tracks = read_file(demo["train"])
    rng = np.random.default_rng(4)
    signal = jets["HadronConeExclTruthLabelID"] == 5
    jets["mass"] = np.where(signal, rng.choice(TRAIN, len(jets)), rng.uniform(0, 100, len(jets)))
    jets["mass"][~signal & (rng.random(len(jets)) < 0.1)] = np.nan  # no mass at all
    path = write_upp(tmp_path_factory.mktemp("mass") / "mass.h5", {"jets": jets, "tracks": tracks})
    return path, jets


def param_dataset(path, split="train", spec=SPEC, **kwargs):
    return make_dataset(
        path, variables=PARAM_VARIABLES, parameters=spec, split=split, seed=7, **kwargs
    )


@pytest.mark.parametrize("split", ["train", "val"])
def test_background_jets_get_train_values_drawn_with_prob(mass_file, split):
    path, jets = mass_file
    dataset = param_dataset(path, split, batch_size=6000)
    x = dataset[BatchIndex(0, 3)]["inputs"]["parameters"].numpy()
    assert x.shape == (6000, 1) and x.dtype == np.float32
    signal = jets["HadronConeExclTruthLabelID"] == 5
    np.testing.assert_array_equal(x[signal, 0], jets["mass"][signal])
    drawn = x[~signal, 0]
    assert np.isin(drawn, TRAIN).all()
    frequency = [(drawn == v).mean() for v in TRAIN]
    np.testing.assert_allclose(frequency, PROB, atol=0.03)
    # the jets' own inputs are untouched
    plain = make_dataset(path, batch_size=6000)[0]["inputs"]
    torch.testing.assert_close(dataset[0]["inputs"]["jets"], plain["jets"], rtol=0, atol=0)


def test_uniform_without_prob(mass_file):
    path, jets = mass_file
    spec = {"mass": ParameterSpec(train=TRAIN, test=40)}
    x = param_dataset(path, spec=spec, batch_size=6000)[0]["inputs"]["parameters"].numpy()
    drawn = x[jets["HadronConeExclTruthLabelID"] != 5, 0]
    np.testing.assert_allclose([(drawn == v).mean() for v in TRAIN], [1 / 3] * 3, atol=0.03)


def test_test_split_gets_the_test_value(mass_file):
    x = param_dataset(mass_file[0], "test")[BatchIndex(1, 2)]["inputs"]["parameters"].numpy()
    assert (x == 40).all() and x.shape == (700, 1)


def test_draws_depend_on_seed_epoch_and_batch(mass_file):
    path = mass_file[0]
    a = param_dataset(path)[BatchIndex(4, 1)]
    assert_batches_equal([param_dataset(path)[BatchIndex(4, 1)]], [a])
    for other in (param_dataset(path)[BatchIndex(4, 2)], param_dataset(path)[BatchIndex(5, 1)]):
        assert not torch.equal(other["inputs"]["parameters"], a["inputs"]["parameters"])


def test_identical_with_workers_or_without(demo, mass_file):
    runs = []
    for workers in (0, 2):
        module = make_module(
            demo,
            train_file=str(mass_file[0]),
            variables=PARAM_VARIABLES,
            parameters=SPEC,
            num_workers=workers,
            check_jets=0,
        )
        module.setup("fit")
        loader = module.train_dataloader()
        loader.sampler.set_epoch(2)
        runs.append(list(loader))
        module.teardown("fit")
    assert_batches_equal(runs[0], runs[1])


@pytest.mark.parametrize(
    ("names", "spec", "expected"),
    [
        (["mass"], None, "has no entry for mass"),
        (["mass", "width"], SPEC, "has no entry for width"),
        (None, SPEC, "mass, not listed in data.variables.parameters"),
        (
            ["width", "mass"],
            {"mass": SPEC["mass"], "width": {"train": [1.0], "test": 1.0}},
            "in a different order",
        ),
        (["mass"], {"mass": {"train": TRAIN, "test": 40, "prob": [0.5, 0.5]}}, "2 values but"),
        (["mass"], {"mass": {"train": TRAIN, "test": 40, "prob": [0.2, 0.3, 0.6]}}, "sum to 1"),
        (["mass"], {"mass": {"train": [], "test": 40}}, "non-empty list"),
        (["mass"], {"mass": {"train": TRAIN}}, "should have train"),
    ],
)
def test_bad_parameter_configs_fail_when_the_datamodule_is_built(demo, names, spec, expected):
    variables = dict(VARIABLES)
    if names is not None:
        variables["parameters"] = names
    with pytest.raises(SaltError, match=expected):
        make_module(demo, variables=variables, parameters=spec)


def test_parameter_missing_from_the_file(demo):
    with pytest.raises(SaltError, match="dataset 'jets' has no variable 'mH'"):
        make_dataset(
            demo["train"],
            variables={**VARIABLES, "parameters": ["mH"]},
            parameters={"mH": {"train": [125.0], "test": 125.0}},
        )
