"""GN3-era model options: norms, gated units, registers, several constituent types, global
variables, task context, regression scaling and denominators, GLS and Lion."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from salt.errors import SaltError
from salt.models import (
    ClassificationTask,
    GlobalAttentionPooling,
    RegressionTask,
    SaltModel,
    Transformer,
    VertexingTask,
)
from salt.models.layout import Packed, Padded
from salt.models.tasks import TargetScaler
from salt.modelwrapper import ModelWrapper
from tests.test_models import random_valid

D = 16
VARIABLES = {
    "jets": ["pt", "eta"],
    "global": ["pt", "m1", "m2"],
    "tracks": ["a", "b", "c"],
    "flows": ["f1", "f2"],
    "electrons": ["e1", "e2", "e3", "e4"],
}
TYPES = ("tracks", "flows", "electrons")


@pytest.mark.parametrize(
    "options",
    [
        {"norm": "RMSNorm"},
        {"norm_type": "post"},
        {"norm_type": "hybrid", "norm": "RMSNorm"},
        {"gated": True},
        {"norm_type": "hybrid", "gated": True, "final_norm": False},
    ],
    ids=["rmsnorm", "post", "hybrid", "gated", "hybrid-gated-nofinal"],
)
def test_encoder_options_packed_equals_padded(options):
    torch.manual_seed(0)
    encoder = Transformer(D, 3, 4, out_dim=8, **options).eval()
    valid = random_valid(7, 9, empty=4, holes=True)
    x = torch.randn(7, 9, D)
    packed = encoder(x[valid], Packed(valid))
    padded = encoder(x, Padded(valid))[valid]
    torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-5)


def test_norm_options_change_the_layers():
    hybrid = Transformer(D, 2, 4, norm="RMSNorm", norm_type="hybrid")
    first, second = hybrid.layers
    # hybrid: the first layer is pre-norm, later ones normalise q, k, v instead of the input
    assert first.mode == "pre" and second.mode == "hybrid"
    assert second.attn.q_norm is not None and first.attn.q_norm is None
    assert isinstance(second.norm1, torch.nn.Identity)
    assert isinstance(hybrid.final_norm, torch.nn.RMSNorm)
    gated = Transformer(D, 1, 4, ff_dim=24, gated=True)
    assert gated.layers[0].ff.inp.out_features == 48  # two halves of the hidden width
    with pytest.raises(ValueError, match="norm_type"):
        Transformer(D, 1, 4, norm_type="sandwich")


def test_attention_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    encoder = Transformer(D, 1, 4, attn_dropout=0.5)
    valid = random_valid(4, 6)
    x = torch.randn(int(valid.sum()), D)
    layout = Packed(valid)
    encoder.train()
    assert not torch.allclose(encoder(x, layout), encoder(x, layout))
    encoder.eval()
    torch.testing.assert_close(encoder(x, layout), encoder(x, layout))


# ---------------------------------------------------------------------------------- GN3 model
def gn3_model(registers=2, drop_registers=False, attention="packed", with_global=True, layers=2):
    torch.manual_seed(2)
    variables = {k: v for k, v in VARIABLES.items() if with_global or k != "global"}
    jet_size = 8 + (3 if with_global else 0)
    tasks = [
        ClassificationTask(
            "jets_classification",
            "jets",
            "flavour_label",
            {"input_size": jet_size},
            class_names=["bjets", "cjets", "ujets"],
        ),
        ClassificationTask(
            "track_origin",
            "tracks",
            "ftagTruthOriginLabel",
            {"input_size": 8, "context_size": jet_size, "hidden_layers": [8]},
        ),
        VertexingTask(
            "track_vertexing",
            "tracks",
            {"input_size": 8, "hidden_layers": [8], "context_size": jet_size},
        ),
        RegressionTask(
            "jet_pt",
            "jets",
            ["truth_pt"],
            {"input_size": jet_size},
            scales={"truth_pt": [1.0, 0.5]},
            target_denominators=["pt"],
            loss="l1",
        ),
    ]
    return SaltModel(
        init_nets=[{"input_name": t, "output_size": D, "hidden_layers": [D]} for t in TYPES],
        tasks=tasks,
        encoder=Transformer(
            D,
            layers,
            4,
            out_dim=8,
            norm="RMSNorm",
            norm_type="hybrid",
            gated=True,
            num_registers=registers,
            drop_registers=drop_registers,
        ),
        pool_net=GlobalAttentionPooling(8),
        variables=variables,
        attention=attention,
    ).eval()


def gn3_batch(n_jets=6, slots=7):
    torch.manual_seed(3)
    inputs = {"jets": torch.randn(n_jets, 2) + 3.0, "global": torch.randn(n_jets, 3)}
    valid = {}
    for name in TYPES:
        valid[name] = random_valid(n_jets, slots, holes=True)
        inputs[name] = torch.randn(n_jets, slots, len(VARIABLES[name]))
    valid["electrons"][1] = False  # a jet without electrons
    valid["tracks"][4] = False  # and one without tracks
    n = int(valid["tracks"].sum())
    labels = {
        "jets": {
            "flavour_label": torch.randint(0, 3, (n_jets,)),
            "truth_pt": inputs["jets"][:, 0] * 1.1,
            "pt": inputs["jets"][:, 0],
        },
        "tracks": {
            "ftagTruthOriginLabel": torch.randint(0, 8, (n,)),
            "ftagTruthVertexIndex": torch.randint(-1, 3, (n,)),
        },
    }
    return inputs, valid, labels


@pytest.mark.parametrize("drop_registers", [False, True])
def test_gn3_packed_padded_and_one_jet_at_a_time_agree(drop_registers):
    model = gn3_model(drop_registers=drop_registers)
    inputs, valid, labels = gn3_batch()
    packed, losses = model(inputs, valid, labels)
    assert set(losses) == {"jets_classification", "track_origin", "track_vertexing", "jet_pt"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert packed["track_origin"].shape == (int(valid["tracks"].sum()), 8)
    padded_model = gn3_model(drop_registers=drop_registers, attention="padded")
    padded, _ = padded_model(inputs, valid)
    for task in ("jets_classification", "track_origin", "jet_pt"):
        torch.testing.assert_close(padded[task], packed[task], rtol=1e-4, atol=1e-5)
    # the export path: one jet, every slot a constituent, registers appended by the model
    start = 0
    for b in range(6):
        one = {"jets": inputs["jets"][b : b + 1], "global": inputs["global"][b : b + 1]}
        for name in TYPES:
            one[name] = inputs[name][b : b + 1, valid[name][b]]
        single, _ = model(one)
        torch.testing.assert_close(
            single["jets_classification"][0],
            packed["jets_classification"][b],
            rtol=1e-4,
            atol=1e-5,
        )
        n = int(valid["tracks"][b].sum())
        torch.testing.assert_close(
            single["track_origin"][0],
            packed["track_origin"][start : start + n],
            rtol=1e-4,
            atol=1e-5,
        )
        start += n


def test_registers_global_and_context_are_used():
    inputs, valid, _ = gn3_batch()
    model = gn3_model(registers=2)
    base, _ = model(inputs, valid)
    # the registers are parameters the jets see
    with torch.no_grad():
        model.encoder.registers.add_(1.0)
    moved, _ = model(inputs, valid)
    assert not torch.allclose(moved["jets_classification"], base["jets_classification"])
    # a jet without tracks still attends to its registers and electrons: finite outputs
    assert torch.isfinite(base["jets_classification"][4]).all()
    # global variables reach the jet tasks only after pooling: tokens do not change
    model = gn3_model(registers=2)
    shifted = {**inputs, "global": inputs["global"] + 1.0}
    other, _ = model(shifted, valid)
    assert not torch.allclose(other["jets_classification"], base["jets_classification"])
    # ... and the track tasks through their context
    assert not torch.allclose(other["track_origin"], base["track_origin"])
    no_context = gn3_model(registers=2)
    no_context.tasks[1].context_size = 0  # run without the context: other features
    with pytest.raises(RuntimeError):  # the head was built for token + context features
        no_context(inputs, valid)


def test_types_and_registers_share_each_jet_only():
    """Changing one jet's electrons changes that jet's outputs and no other's."""
    model = gn3_model()
    inputs, valid, _ = gn3_batch()
    base, _ = model(inputs, valid)
    changed = {**inputs, "electrons": inputs["electrons"].clone()}
    changed["electrons"][3] += 2.0
    after, _ = model(changed, valid)
    differs = ~torch.isclose(after["jets_classification"], base["jets_classification"]).all(1)
    assert differs.tolist() == [
        False,
        False,
        False,
        bool(valid["electrons"][3].any()),
        False,
        False,
    ]


def test_model_size_errors_name_global_and_context():
    with pytest.raises(SaltError, match="plus 3 global variables"):
        SaltModel(
            init_nets=[{"input_name": "tracks", "output_size": D}],
            tasks=[ClassificationTask("j", "jets", "l", {"input_size": 8}, class_names=["a"])],
            encoder=Transformer(D, 1, 2, out_dim=8),
            pool_net=GlobalAttentionPooling(8),
            variables={"jets": ["pt"], "global": ["a", "b", "c"], "tracks": ["a"]},
        )
    with pytest.raises(SaltError, match=r"context_size 5.*11 features"):
        SaltModel(
            init_nets=[{"input_name": "tracks", "output_size": D}],
            tasks=[
                ClassificationTask(
                    "t", "tracks", "ftagTruthOriginLabel", {"input_size": 8, "context_size": 5}
                )
            ],
            encoder=Transformer(D, 1, 2, out_dim=8),
            pool_net=GlobalAttentionPooling(8),
            variables={"jets": ["pt"], "global": ["a", "b", "c"], "tracks": ["a"]},
        )
    with pytest.raises(SaltError, match="init net for 'global'"):
        SaltModel(
            init_nets=[{"input_name": "global", "output_size": D}],
            tasks=[],
            variables={"jets": ["pt"], "global": ["a"]},
        )


def test_model_without_encoder_pools_the_embeddings():
    """DIPS as salt-ml writes it: init net, pooling, heads."""
    model = SaltModel(
        init_nets=[{"input_name": "tracks", "output_size": 8, "hidden_layers": [8]}],
        tasks=[
            ClassificationTask(
                "j", "jets", "flavour_label", {"input_size": 8}, class_names=["u", "c", "b"]
            )
        ],
        pool_net=GlobalAttentionPooling(8),
        variables={"jets": ["pt", "eta"], "tracks": ["a", "b", "c"]},
    ).eval()
    inputs, valid, _ = gn3_batch()
    out, _ = model(
        {"jets": inputs["jets"], "tracks": inputs["tracks"]}, {"tracks": valid["tracks"]}
    )
    assert out["j"].shape == (6, 3) and torch.isfinite(out["j"]).all()


# ---------------------------------------------------------------------------------- tasks
def test_regression_denominator_scaler_and_l1():
    task = RegressionTask(
        "r",
        "jets",
        "y",
        {"input_size": 2},
        scales={"y": [1.0, 0.5]},
        target_denominators="d",
        loss="l1",
        custom_output_names=["ratio"],
    )
    x = torch.randn(4, 2)
    labels = {"y": torch.tensor([2.0, 3.0, math.nan, 8.0]), "d": torch.tensor([2.0, 2.0, 1, 4.0])}
    out, loss = task(x, None, labels)
    scaled = (torch.tensor([1.0, 1.5, 2.0]) - 1.0) / 0.5
    torch.testing.assert_close(loss, F.l1_loss(out[[0, 1, 3], 0], scaled))
    values = task.predictions(out, None, labels["d"][:, None])["values"]
    torch.testing.assert_close(values, (out * 0.5 + 1.0) * labels["d"][:, None])
    assert task.label_fields == ["y", "d"] and task.custom_output_names == ["ratio"]
    with pytest.raises(SaltError, match="target_denominators has 2 entries for 1"):
        RegressionTask(
            "r",
            "jets",
            ["y"],
            {"input_size": 2},
            scales={"y": [0, 1]},
            target_denominators=["a", "b"],
        )


def test_target_scaler_round_trip_and_errors():
    scaler = TargetScaler(
        {
            "pt": {"op": "log", "op_scale": 0.2},
            "Lxy": {"op": "log", "x_off": 1},
            "deta": {"op": "linear", "x_off": 1, "op_scale": 10},
        },
        ["pt", "Lxy", "deta", "mass"],
    )
    x = torch.tensor([[50e3, 3.0, -0.1, 5.0], [8e3, 0.0, 0.2, 1.9]])
    y = scaler(x)
    torch.testing.assert_close(y[0, 0], torch.log(torch.tensor(50e3)) * 0.2)
    torch.testing.assert_close(y[:, 3], x[:, 3])  # not named: unchanged
    torch.testing.assert_close(scaler.inverse(y), x, rtol=1e-5, atol=1e-3)
    with pytest.raises(SaltError, match="scaler of 'pt'"):
        TargetScaler({"pt": {"op": "sqrt"}}, ["pt"])
    with pytest.raises(SaltError, match="not its targets"):
        TargetScaler({"eta": {"op": "log"}}, ["pt"])


def test_label_map_needs_class_names():
    with pytest.raises(SaltError, match="label_map needs class_names"):
        ClassificationTask("c", "jets", "pdg", {"input_size": 2}, label_map={5: 0})


# ---------------------------------------------------------------------------------- wrapper
def lrs():
    return {"initial": 1e-4, "max": 1e-3, "end": 1e-5, "pct_start": 0.1, "weight_decay": 1e-5}


def test_gls_is_the_geometric_mean_of_weighted_losses():
    model = gn3_model()
    wrapper = ModelWrapper(model, lrs(), loss_mode="GLS")
    model.tasks[1].loss_weight = 0.5
    losses = {
        "jets_classification": torch.tensor(2.0),
        "track_origin": torch.tensor(0.5),
        "track_vertexing": torch.tensor(0.25),
        "jet_pt": torch.tensor(4.0),
    }
    expected = (2.0 * 0.25 * 0.25 * 4.0) ** 0.25
    torch.testing.assert_close(wrapper.total_loss(losses), torch.tensor(expected))
    wsum = ModelWrapper(model, lrs())
    torch.testing.assert_close(wsum.total_loss(losses), torch.tensor(2.0 + 0.25 + 0.25 + 4.0))
    with pytest.raises(SaltError, match="loss_mode 'mean'"):
        ModelWrapper(model, lrs(), loss_mode="mean")
    with pytest.raises(SaltError, match="optimizer 'sgd'"):
        ModelWrapper(model, lrs(), optimizer="sgd")


def test_lion_optimizer_takes_steps():
    from lion_pytorch import Lion

    model = gn3_model()
    wrapper = ModelWrapper(model, lrs(), optimizer="lion")
    config = wrapper.configure_optimizers()
    assert isinstance(config["optimizer"], Lion)
    inputs, valid, labels = gn3_batch()
    model.train()
    before = model.encoder.registers.detach().clone()
    _, losses = model(inputs, valid, labels)
    wrapper.total_loss(losses).backward()
    for group in config["optimizer"].param_groups:
        group["lr"] = 1e-2
    config["optimizer"].step()
    # Lion moves every parameter by +-lr (sign of the update): registers get exactly that
    step = (model.encoder.registers.detach() - before).abs()
    assert torch.allclose(step[step > 0], torch.full_like(step[step > 0], 1e-2), rtol=1e-2)
