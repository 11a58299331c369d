"""data.non_finite_to_num: NaN and +-inf inputs read as 0 instead of stopping the run."""

from __future__ import annotations

import numpy as np
import pytest
from test_data_loading import expected_batch, make_dataset, make_module, read_file, write_upp

from salt.errors import SaltError

BAD = {(3, "d0"): np.nan, (640, "z0SinTheta"): np.inf, (641, "dphi"): -np.inf}


@pytest.fixture(scope="module")
def broken(demo, tmp_path_factory):
    """The first 1400 demo jets with a NaN, an inf and a -inf in valid tracks, a NaN jet input."""
    jets, tracks = (a[:1400].copy() for a in read_file(demo["train"]))
    for (jet, var), value in BAD.items():
        tracks[jet, 0][var] = value
        assert tracks[jet, 0]["valid"]
    jets[900]["eta_btagJes"] = np.nan
    path = write_upp(tmp_path_factory.mktemp("nf") / "broken.h5", {"jets": jets, "tracks": tracks})
    return path, jets, tracks


def test_non_finite_inputs_become_zero(broken):
    path, jets, tracks = broken
    dataset = make_dataset(path, non_finite_to_num=True)
    replaced = 0
    for index in (0, 1):
        start, stop = dataset.rows(index)
        batch = dataset[index]
        expected = expected_batch(jets, tracks, start, stop)
        for name in ("jets", "tracks"):
            want = expected["inputs"][name]
            replaced += (~np.isfinite(want)).sum()
            want = np.where(np.isfinite(want), want, 0)
            np.testing.assert_array_equal(batch["inputs"][name], want)
    assert replaced == 4


def test_without_it_the_error_names_the_option(broken, demo):
    with pytest.raises(SaltError) as info:
        make_dataset(broken[0])[0]
    message = str(info.value)
    assert "variable 'd0' of dataset 'tracks' is nan in a valid constituent of jet 3" in message
    assert "data.non_finite_to_num: true" in message
    # and through the datamodule's start-up scan
    module = make_module(demo, train_file=str(broken[0]), check_jets=-1)
    with pytest.raises(SaltError, match="is nan in a valid constituent of jet 3"):
        module.setup("fit")
    make_module(demo, train_file=str(broken[0]), check_jets=-1, non_finite_to_num=True).setup("fit")
