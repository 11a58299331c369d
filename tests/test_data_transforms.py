"""data.transforms: GaussianNoise on the training inputs, deterministic per (seed, epoch, batch)."""

from __future__ import annotations

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from test_data_loading import assert_batches_equal, make_dataset, make_module

from salt.data.datamodule import SaltDataModule
from salt.data.sampler import BatchIndex
from salt.data.transforms import GaussianNoise
from salt.errors import SaltError

DOCS_FORM = [
    {"input_type": "jets", "variable": "pt_btagJes", "mean": 0.0, "std": 0.1},
    {"input_type": "tracks", "variable": "d0", "mean": 0.1, "std": 0.05},
]
CODE_FORM = {
    "jets": [{"variable": "pt_btagJes", "mean": 0.0, "std": 0.1}],
    "tracks": [{"variable": "d0", "mean": 0.1, "std": 0.05}],
}


def noisy_dataset(path, split="train", params=DOCS_FORM, seed=3):
    return make_dataset(path, split=split, transforms=[GaussianNoise(params)], seed=seed)


def test_noise_is_fractional_per_value_on_the_chosen_variables(demo):
    plain = make_dataset(demo["train"], batch_size=6000)[0]["inputs"]
    dataset = make_dataset(
        demo["train"], batch_size=6000, transforms=[GaussianNoise(DOCS_FORM)], seed=3
    )
    batch = dataset[BatchIndex(0, epoch=1)]["inputs"]
    # x -> x * (1 + n), n ~ N(mean, std): the ratio's spread is the noise's
    ratio = batch["jets"][:, 0] / plain["jets"][:, 0] - 1
    assert abs(ratio.mean()) < 0.01 and abs(ratio.std() - 0.1) < 0.01
    d0 = plain["tracks"][:, 0]
    nonzero = d0 != 0
    ratio = batch["tracks"][nonzero, 0] / d0[nonzero] - 1
    assert len(ratio) > 50_000, "every valid track gets its own draw"
    assert abs(ratio.mean() - 0.1) < 0.002 and abs(ratio.std() - 0.05) < 0.002
    assert len(torch.unique(ratio)) > 0.9 * len(ratio)  # float32 ratios collide a little
    # everything else is untouched
    torch.testing.assert_close(batch["jets"][:, 1:], plain["jets"][:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(batch["tracks"][:, 1:], plain["tracks"][:, 1:], rtol=0, atol=0)


def test_both_config_forms_give_the_same_noise(demo):
    docs = noisy_dataset(demo["train"], params=DOCS_FORM)[BatchIndex(2, 4)]
    code = noisy_dataset(demo["train"], params=CODE_FORM)[BatchIndex(2, 4)]
    assert_batches_equal([docs], [code])


def test_noise_depends_on_seed_epoch_and_batch_only(demo):
    dataset = noisy_dataset(demo["train"])
    first = dataset[BatchIndex(2, 5)]
    dataset[BatchIndex(3, 5)]  # reading other batches in between changes nothing
    assert_batches_equal([dataset[BatchIndex(2, 5)]], [first])
    assert_batches_equal([noisy_dataset(demo["train"])[BatchIndex(2, 5)]], [first])
    for other in (
        dataset[BatchIndex(2, 6)],
        noisy_dataset(demo["train"], seed=4)[BatchIndex(2, 5)],
    ):
        assert not torch.equal(other["inputs"]["tracks"], first["inputs"]["tracks"])


def test_only_the_training_split_is_transformed(demo):
    plain = make_dataset(demo["train"], split="val")[1]
    assert_batches_equal([noisy_dataset(demo["train"], split="val")[BatchIndex(1, 2)]], [plain])
    assert_batches_equal([noisy_dataset(demo["train"], split="test")[BatchIndex(1, 2)]], [plain])


def test_identical_with_workers_or_without_and_after_a_resume(demo):
    def module(**kwargs):
        m = make_module(demo, check_jets=0, transforms=[GaussianNoise(CODE_FORM)], **kwargs)
        m.setup("fit")
        return m

    epochs = {}
    for workers in (0, 2):
        m = module(num_workers=workers)
        loader = m.train_dataloader()
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            epochs[workers, epoch] = list(loader)
        m.teardown("fit")
    assert_batches_equal(epochs[0, 0], epochs[2, 0])
    assert_batches_equal(epochs[0, 1], epochs[2, 1])
    # the same batch gets other noise in another epoch
    order = {e: loader.sampler.order(e).tolist() for e in (0, 1)}
    first = order[1][0]
    again = epochs[0, 0][order[0].index(first)]["inputs"]["tracks"]
    assert again.shape == epochs[0, 1][0]["inputs"]["tracks"].shape
    assert not torch.equal(again, epochs[0, 1][0]["inputs"]["tracks"])
    # a run resumed after 5 batches of epoch 1 gets the rest of that epoch's batches, noise and all
    loader = module(num_workers=1).train_dataloader()
    loader.load_state_dict({"epoch": 1, "batches_done": 5})
    assert_batches_equal(list(loader), epochs[0, 1][5:])
    # and without noise the batches are the file's
    plain = make_module(demo, check_jets=0)
    plain.setup("fit")
    assert not torch.equal(
        epochs[0, 1][0]["inputs"]["tracks"],
        plain.datasets["train"][int(loader.sampler.order(1)[0])]["inputs"]["tracks"],
    )


# ------------------------------------------------------------------------------------ config
def test_built_from_yaml_by_class_path(demo, tmp_path):
    config = {
        "data": {
            "variables": {"jets": ["pt_btagJes", "eta_btagJes"], "tracks": ["d0", "z0SinTheta"]},
            "transforms": [
                {
                    "class_path": "salt.data.transforms.GaussianNoise",
                    "init_args": {"noise_params": DOCS_FORM},
                },
                {
                    "class_path": "salt.data.transforms.GaussianNoise",
                    "init_args": {"noise_params": {"tracks": CODE_FORM["tracks"]}},
                },
            ],
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    parser = ArgumentParser()
    parser.add_argument("--config", action="config")
    parser.add_class_arguments(SaltDataModule, "data")
    built = parser.instantiate(parser.parse_args(["--config", str(path)]))
    transforms = built.data.read_options["transforms"]
    assert [type(t) for t in transforms] == [GaussianNoise, GaussianNoise]
    assert transforms[0].specs == [("jets", "pt_btagJes", 0.0, 0.1), ("tracks", "d0", 0.1, 0.05)]
    assert transforms[1].specs == [("tracks", "d0", 0.1, 0.05)]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([{"input_type": "trakcs", "variable": "d0", "mean": 0, "std": 1}], "'trakcs'.*tracks"),
        ([{"input_type": "tracks", "variable": "d00", "mean": 0, "std": 1}], "'d00'.*d0"),
        ({"tracks": [{"variable": "d0", "mean": 0}]}, "exactly the keys variable, mean, std"),
        ([{"variable": "d0", "mean": 0, "std": 1}], "has no input_type"),
        ([{"input_type": "tracks", "variable": "d0", "mean": 0, "std": -1}], "not negative"),
    ],
)
def test_bad_noise_params_fail_when_the_datamodule_is_built(demo, params, expected):
    with pytest.raises(SaltError, match=expected):
        make_module(demo, transforms=[GaussianNoise(params)])


def test_a_transform_must_be_a_transform(demo):
    with pytest.raises(SaltError, match=r"not a salt\.data\.transforms\.Transform"):
        make_module(demo, transforms=[lambda x: x])
