"""The data options as a config gives them: built by jsonargparse, or as the parsed Namespaces
that salt's early file check hands to JetDataset before anything is instantiated."""

from __future__ import annotations

import pytest
import yaml
from jsonargparse import ArgumentParser
from test_data_loading import LABELS, VARIABLES, assert_batches_equal

from salt.data.datamodule import SaltDataModule
from salt.data.dataset import JetDataset
from salt.data.sampler import BatchIndex

OPTIONS = {
    "non_finite_to_num": True,
    "selections": {"tracks": ["d0 < 0.5", "numberOfSCTHits > 5"]},
    "labeller_config": {
        "use_labeller": True,
        "class_names": ["bjets", "cjets", "ujets", "taujets"],
    },
    "multi_target": [
        {
            "input_name": "jets",
            "sel_label": "HadronConeExclTruthLabelID",
            "opp": "==",
            "value": 15,
            "custom_target": "tau_pt",
            "source": "HadronConeExclTruthLabelPt",
        }
    ],
    "parameters": {"mass": {"train": [5, 16, 55], "test": 40, "prob": [0.2, 0.3, 0.5]}},
    "label_maps": {"tracks": {"ftagTruthOriginLabel": {7: 6, 6: 7}}},
}


@pytest.fixture(scope="module")
def parsed(demo, tmp_path_factory):
    config = {
        "data": {
            "train_file": str(demo["train"]),
            "val_file": str(demo["val"]),
            "variables": {**VARIABLES, "parameters": ["mass"], "global": ["pt"]},
            "labels": {"jets": ["flavour_label", "tau_pt"], "tracks": LABELS["tracks"]},
            "label_classes": {"jets": {"flavour_label": 4}, "tracks": {"ftagTruthOriginLabel": 8}},
            "batch_size": 500,
            "check_jets": 0,
            **OPTIONS,
        }
    }
    path = tmp_path_factory.mktemp("options") / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    parser = ArgumentParser()
    parser.add_argument("--config", action="config")
    parser.add_class_arguments(SaltDataModule, "data")
    return parser, parser.parse_args(["--config", str(path)])


def test_typos_in_options_are_refused_by_the_parser(parsed, tmp_path):
    parser, _ = parsed
    for key, value in [
        ("labeller_config", {"use_labeler": True}),
        ("parameters", {"mass": {"train": [5], "tset": 5}}),
        ("multi_target", [{**OPTIONS["multi_target"][0], "sel_lable": "x"}]),
    ]:
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump({"data": {key: value}}))
        with pytest.raises(SystemExit):
            parser.parse_args(["--config", str(path)])


def test_namespaces_and_instances_read_the_same_batches(parsed, demo):
    parser, config = parsed
    data = config.data
    # what the early check does: the parsed (not instantiated) options straight into JetDataset
    early = JetDataset(
        demo["train"],
        variables=data.variables,
        labels=data.labels,
        batch_size=data.batch_size,
        label_classes=data.label_classes,
        non_finite_to_num=data.non_finite_to_num,
        selections=data.selections,
        labeller_config=data.labeller_config,
        label_maps=data.label_maps,
        multi_target=data.multi_target,
        parameters=data.parameters,
        seed=11,
    )
    module = parser.instantiate(config).data
    module.setup("fit")
    dataset = module.datasets["train"]
    dataset.options.seed = 11
    index = BatchIndex(3, 2)
    assert_batches_equal([early[index]], [dataset[index]])
    batch = dataset[index]
    assert set(batch["inputs"]) == {"jets", "tracks", "parameters", "global"}
    assert set(batch["labels"]["jets"]) == {"flavour_label", "tau_pt"}
    module.teardown("fit")


def test_all_options_together_with_workers_or_without(parsed):
    parser, config = parsed
    epochs = []
    for workers in (0, 1):
        config.data.num_workers = workers
        module = parser.instantiate(config).data
        module.setup("fit")
        loader = module.train_dataloader()
        loader.sampler.set_epoch(1)
        epochs.append(list(loader))
        module.teardown("fit")
    config.data.num_workers = 0
    assert len(epochs[0]) == 12
    assert_batches_equal(epochs[0], epochs[1])
