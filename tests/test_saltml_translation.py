"""The salt-ml schema is recognised and translated; keys without equivalent stop early."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from salt.errors import SaltError
from salt.saltml import is_saltml, translate, translate_config_args
from tests.conftest import CONFIGS

SALTML = textwrap.dedent(
    """
    name: tagger
    model:
      lrs_config: {initial: 1e-7, max: 5e-4, end: 1e-5, pct_start: 0.01, weight_decay: 1e-5,
                   last_epoch: -1}
      optimizer: lion
      loss_mode: GLS
      model:
        class_path: salt.models.SaltModel
        init_args:
          init_nets:
            - input_name: tracks
              dense_config: &init {output_size: &dim 32, hidden_layers: [32], activation: SiLU}
            - input_name: flows
              dense_config:
                <<: *init
          encoder:
            class_path: salt.models.Transformer
            init_args:
              num_layers: 2
              embed_dim: *dim
              out_dim: &out 16
              attn_type: flash-varlen
              norm: RMSNorm
              norm_type: hybrid
              dense_kwargs: {activation: SiLU, gated: true, dropout: 0.1}
              attn_kwargs: {num_heads: 4, dropout: 0.05}
              num_registers: 4
          pool_net:
            class_path: salt.models.GlobalAttentionPooling
            init_args: {input_size: *out}
          tasks:
            class_path: torch.nn.ModuleList
            init_args:
              modules:
                - class_path: salt.models.ClassificationTask
                  init_args:
                    name: flavour
                    input_name: jets
                    label: HadronConeExclTruthLabelID
                    label_map: {0: 0, 4: 1, 5: 2}
                    class_names: [ujets, cjets, bjets]
                    loss:
                      class_path: torch.nn.CrossEntropyLoss
                      init_args: {label_smoothing: 0.1}
                    dense_config: &head {input_size: 18, output_size: 3, hidden_layers: [16]}
                - class_path: salt.models.VertexingTask
                  init_args:
                    name: vertexing
                    input_name: tracks
                    label: ftagTruthVertexIndex
                    weight: 1.5
                    loss:
                      class_path: torch.nn.BCEWithLogitsLoss
                      init_args: {reduction: none}
                    dense_config:
                      <<: *head
                      input_size: 32
                      output_size: 1
                      context_size: 18
                - class_path: salt.models.RegressionTask
                  init_args:
                    name: pt
                    input_name: jets
                    targets: ptFromTruthDressedWZJet
                    target_denominators: pt_btagJes
                    loss: {class_path: torch.nn.L1Loss, init_args: {reduction: none}}
                    dense_config: {<<: *head, output_size: 1}
                - class_path: salt.models.GaussianRegressionTask
                  init_args:
                    name: lxy
                    input_name: jets
                    targets: [HadronConeExclTruthLabelLxy]
                    norm_params: {mean: 10.0, std: 20.0}
                    loss: GaussianNLLLoss
                    dense_config: {<<: *head, output_size: 2}
    data:
      input_map: {global: global, tracks: tracks_ghost}
      variables:
        global: [pt_btagJes, eta_btagJes]
        tracks: [d0, z0SinTheta]
        flows: [pt, energy]
      train_vds_path: /somewhere/vds.h5
      batch_size: 100
    trainer:
      accelerator: gpu
      callbacks:
        - class_path: salt.callbacks.Checkpoint
          init_args: {monitor_loss: val/flavour_loss}
        - class_path: lightning.pytorch.callbacks.TQDMProgressBar
          init_args: {refresh_rate: 50}
        - class_path: lightning.pytorch.callbacks.LearningRateMonitor
    """
)


def saltml_config() -> dict:
    return yaml.safe_load(SALTML)


def test_translation_of_every_section():
    out, notes = translate(saltml_config(), "tagger.yaml")
    model = out["model"]
    assert model["lrs_config"]["initial"] == pytest.approx(1e-7)  # a number, not "1e-7"
    assert "last_epoch" not in model["lrs_config"]
    assert (model["optimizer"], model["loss_mode"]) == ("lion", "GLS")
    args = model["model"]["init_args"]
    assert args["init_nets"][1] == {
        "input_name": "flows",
        "output_size": 32,
        "hidden_layers": [32],
        "activation": "SiLU",
    }
    encoder = args["encoder"]["init_args"]
    assert encoder == {
        "embed_dim": 32,
        "num_layers": 2,
        "norm": "RMSNorm",
        "norm_type": "hybrid",
        "final_norm": True,
        "num_registers": 4,
        "drop_registers": False,
        "out_dim": 16,
        "attn_backend": "auto",
        "num_heads": 4,
        "attn_dropout": 0.05,
        "activation": "SiLU",
        "gated": True,
        "dropout": 0.1,
    }
    flavour, vertexing, pt, lxy = (t["init_args"] for t in args["tasks"])
    assert flavour["label_map"] == {0: 0, 4: 1, 5: 2} and flavour["label_smoothing"] == 0.1
    assert "loss" not in flavour and "weight" not in flavour
    # salt-ml's vertexing head reads a pair: twice the token features
    assert vertexing["dense_config"]["input_size"] == 16
    assert vertexing["dense_config"]["context_size"] == 18
    assert vertexing["loss_weight"] == 1.5 and "output_size" not in vertexing["dense_config"]
    assert pt["targets"] == ["ptFromTruthDressedWZJet"]
    assert pt["target_denominators"] == ["pt_btagJes"]
    assert (pt["loss"], pt["scales"]) == ("l1", {"ptFromTruthDressedWZJet": [0.0, 1.0]})
    assert lxy["scales"] == {"HadronConeExclTruthLabelLxy": [10.0, 20.0]}
    assert out["data"]["input_map"] == {"tracks": "tracks_ghost"}
    assert "train_vds_path" not in out["data"] and "train_vds_path" in notes[0]
    callbacks = [c["class_path"] for c in out["trainer"]["callbacks"]]
    assert callbacks == [
        "salt.callbacks.Checkpoint",
        "salt.callbacks.ProgressBar",
        "lightning.pytorch.callbacks.LearningRateMonitor",
        "salt.callbacks.Interruption",
    ]
    assert out["trainer"]["callbacks"][0]["init_args"] == {"monitor": "val/flavour_loss"}
    assert out["trainer"]["callbacks"][1]["init_args"] == {"refresh_rate": 50}


def test_salt_schema_is_not_taken_for_salt_ml():
    for path in CONFIGS.glob("*.yaml"):
        assert not is_saltml(yaml.safe_load(path.read_text()) or {}), path.name
    assert is_saltml(saltml_config())
    out, _ = translate(saltml_config())
    assert not is_saltml(out)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["model"].update(mup_config={"shape_path": "x"}), r"model\.mup_config: no eq"),
        (
            lambda c: c["model"]["model"]["init_args"]["encoder"]["init_args"].update(num_layer=3),
            r"encoder\.init_args\.num_layer: .*Did you mean: num_layers",
        ),
        (
            lambda c: c["model"]["model"]["init_args"]["tasks"]["init_args"]["modules"][0][
                "init_args"
            ].update(sample_weight="w"),
            r"tasks\[0\]\.init_args\.sample_weight: no equivalent",
        ),
        (
            lambda c: c["model"]["model"]["init_args"]["tasks"]["init_args"]["modules"][2][
                "init_args"
            ].update(loss="torch.nn.PoissonNLLLoss"),
            r"tasks\[2\]\.init_args\.loss: 'PoissonNLLLoss' is not one of",
        ),
        (lambda c: c["data"].update(config_s3={"use_S3": True}), r"data\.config_s3: no equiv"),
        (
            lambda c: c["trainer"]["callbacks"].append({"class_path": "salt.callbacks.Foo"}),
            r"trainer\.callbacks\[3\]: 'salt\.callbacks\.Foo' has no equivalent",
        ),
        (
            lambda c: c["model"]["model"]["init_args"]["encoder"]["init_args"].update(
                attn_type="xformers"
            ),
            r"attn_type: 'xformers' is not one of",
        ),
    ],
    ids=["mup", "typo", "sample_weight", "loss", "s3", "callback", "attn_type"],
)
def test_keys_without_equivalent_stop_with_key_and_file(edit, match):
    config = saltml_config()
    edit(config)
    with pytest.raises(SaltError, match=match) as err:
        translate(config, "tagger.yaml")
    assert "salt-ml config 'tagger.yaml'" in str(err.value)


def test_config_args_are_replaced_by_translations(tmp_path, capsys):
    source = tmp_path / "tagger.yaml"
    source.write_text(SALTML)
    ours = CONFIGS / "GN2.yaml"
    work = tmp_path / "work"
    work.mkdir()
    argv = ["fit", "--config", str(source), f"--config={ours}", "--data.batch_size", "10"]
    out = translate_config_args(argv, work)
    assert out[0] == "fit" and out[3] == f"--config={ours}" and out[4:] == argv[4:]
    translated = Path(out[2])
    assert translated.parent == work
    assert not is_saltml(yaml.safe_load(translated.read_text()))
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and "is a salt-ml config" in said


# ---------------------------------------------------------------------------------- Xbb
SALTML_XBB = textwrap.dedent(
    """
    name: xbb
    model:
      lrs_config: {initial: 1e-7, max: 3e-4, end: 5e-5, pct_start: 0.01, weight_decay: 1e-5}
      model:
        class_path: salt.models.SaltModel
        init_args:
          init_nets:
            - input_name: tracks
              dense_config: {output_size: &dim 16, hidden_layers: [16], activation: SiLU}
          edge_init_nets:
            - input_name: tracks
              dense_config: {output_size: &edge 8}
          featurewise_nets:
            - layer: encoder
              apply_norm: true
              dense_config_scale: {output_size: *dim, hidden_layers: [4]}
              dense_config_bias: {output_size: *dim}
            - layer: global
              dense_config_scale: {output_size: &out 8, final_activation: Sigmoid}
          encoder:
            class_path: salt.models.Transformer
            init_args:
              num_layers: 2
              embed_dim: *dim
              out_dim: *out
              edge_embed_dim: *edge
              update_edges: true
              attn_kwargs: {num_heads: 2}
          pool_net:
            class_path: salt.models.GlobalAttentionPooling
            init_args: {input_size: *out}
          tasks:
            class_path: torch.nn.ModuleList
            init_args:
              modules:
                - class_path: salt.models.ClassificationTask
                  init_args:
                    name: jets_classification
                    input_name: jets
                    label: flavour_label
                    class_names: [hbb, top, qcd]
                    dense_config: {input_size: *out, output_size: 3}
    data:
      variables:
        jets: [pt, eta]
        parameters: [mass]
        tracks: [pt, eta, phi, energy, subjetIndex, d0]
      parameters:
        mass: {train: [50, 100], test: 75, prob: [0.3, 0.7]}
      edge_constructors:
        - input_name: tracks
          edge_features: [dR, z, kt, subjetIndex, isSelfLoop, mass]
    """
)


def _build(node):
    """Objects from a translated config's {class_path, init_args} nodes."""
    import importlib

    if isinstance(node, list):
        return [_build(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "class_path" not in node:
        return {k: _build(v) for k, v in node.items()}
    module, name = node["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**_build(node.get("init_args", {})))


def test_xbb_edges_and_featurewise_translate_and_build():
    import torch

    from salt.models import SaltModel

    out, _ = translate(yaml.safe_load(SALTML_XBB), "xbb.yaml")
    args = out["model"]["model"]["init_args"]
    # an edge init net's input is the number of edge features: salt-ml's default hidden layer
    # is twice that; dense keys are flat as for init nets
    assert args["edge_init_nets"] == [
        {"input_name": "tracks", "output_size": 8, "activation": "ReLU", "hidden_layers": [12]}
    ]
    scale = args["featurewise_nets"][0]["dense_config_scale"]
    bias = args["featurewise_nets"][0]["dense_config_bias"]
    assert scale == {"output_size": 16, "hidden_layers": [4], "activation": "ReLU"}
    assert bias == {"output_size": 16, "activation": "ReLU", "hidden_layers": [2]}
    assert args["featurewise_nets"][0]["apply_norm"] is True
    assert args["featurewise_nets"][1]["dense_config_scale"]["final_activation"] == "Sigmoid"
    encoder = args["encoder"]["init_args"]
    assert (encoder["edge_embed_dim"], encoder["update_edges"]) == (8, True)
    data = out["data"]
    assert data["edge_constructors"][0]["edge_features"][-1] == "mass"
    assert data["parameters"] == {"mass": {"train": [50, 100], "test": 75, "prob": [0.3, 0.7]}}
    # what `salt` derives, then the model: it trains on packed jets
    model = SaltModel(
        **_build(args),
        variables=data["variables"],
        edge_features={c["input_name"]: c["edge_features"] for c in data["edge_constructors"]},
    )
    valid = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    pt = 1e3 + 1e4 * torch.rand(6)
    eta, phi = torch.randn(6) * 0.3, torch.rand(6) * 6 - 3
    tracks = torch.stack([pt, eta, phi, pt * torch.cosh(eta), torch.zeros(6), torch.randn(6)], -1)
    inputs = {"jets": torch.randn(3, 2), "parameters": torch.tensor([[50.0], [100.0], [75.0]])}
    outputs, losses = model(
        {**inputs, "tracks": tracks},
        {"tracks": valid},
        {"jets": {"flavour_label": torch.tensor([0, 1, 2])}},
    )
    assert outputs["jets_classification"].shape == (3, 3)
    assert torch.isfinite(losses["jets_classification"])


def test_xbb_edge_init_net_without_edge_constructor_stops():
    config = yaml.safe_load(SALTML_XBB)
    config["data"]["edge_constructors"][0]["input_name"] = "flows"
    with pytest.raises(SaltError, match=r"edge_init_nets\[0\]\.input_name: 'tracks' has no edge"):
        translate(config, "xbb.yaml")
