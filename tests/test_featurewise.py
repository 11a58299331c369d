"""Parameterised networks: parameters joined to the inputs, or featurewise transforms (FiLM)."""

from __future__ import annotations

import pytest
import torch
import yaml

from salt.errors import SaltError
from salt.models import ClassificationTask, GlobalAttentionPooling, SaltModel, Transformer
from salt.models.featurewise import FeaturewiseTransform, parameter_norm
from salt.models.layout import Packed
from tests.test_models import random_valid
from tests.test_sync_free import packed, step

D = 16
VARIABLES = {"jets": ["pt", "eta"], "parameters": ["mass"], "tracks": ["a", "b", "c"]}
FILM = {
    "input": {"layer": "input", "dense_config_scale": {"hidden_layers": [4]},
              "dense_config_bias": {"hidden_layers": [4]}},
    "encoder": {"layer": "encoder", "apply_norm": True,
                "dense_config_scale": {"output_size": D, "hidden_layers": [8]},
                "dense_config_bias": {"output_size": D, "hidden_layers": [8]}},
    "global": {"layer": "global",
               "dense_config_scale": {"output_size": 8, "hidden_layers": [8],
                                      "final_activation": "Sigmoid"}},
}  # fmt: skip


def film_model(layers=(), registers=0, attention="packed", encoder=True):
    torch.manual_seed(6)
    tasks = [
        ClassificationTask(
            "jets_classification",
            "jets",
            "flavour_label",
            {"input_size": 8},
            class_names=["hbb", "top", "qcd"],
        ),
    ]
    if not encoder:  # DL1-like: the jet init net alone
        return SaltModel(
            init_nets=[{"input_name": "jets", "output_size": 8, "hidden_layers": [8]}],
            tasks=tasks,
            variables={k: v for k, v in VARIABLES.items() if k != "tracks"},
            featurewise_nets=[FILM[layer] for layer in layers] or None,
        )
    tasks.append(
        ClassificationTask(
            "track_origin", "tracks", "ftagTruthOriginLabel", {"input_size": 8, "context_size": 8}
        )
    )
    return SaltModel(
        init_nets=[{"input_name": "tracks", "output_size": D, "hidden_layers": [D]}],
        tasks=tasks,
        encoder=Transformer(D, 2, 4, out_dim=8, num_registers=registers),
        pool_net=GlobalAttentionPooling(8),
        variables=VARIABLES,
        attention=attention,
        featurewise_nets=[FILM[layer] for layer in layers] or None,
    ).eval()


def film_batch(n_jets=5, slots=6):
    torch.manual_seed(7)
    valid = {"tracks": random_valid(n_jets, slots, holes=True)}
    inputs = {
        "jets": torch.randn(n_jets, 2),
        "parameters": torch.tensor([[30.0], [55.0], [30.0], [80.0], [55.0]]),
        "tracks": torch.randn(n_jets, slots, 3),
    }
    n = int(valid["tracks"].sum())
    labels = {
        "jets": {"flavour_label": torch.randint(0, 3, (n_jets,))},
        "tracks": {"ftagTruthOriginLabel": torch.randint(0, 8, (n,))},
    }
    return inputs, valid, labels


def with_parameter(inputs, value):
    return {**inputs, "parameters": torch.full_like(inputs["parameters"], value)}


def test_parameters_join_every_init_net_by_default():
    model = film_model()
    assert model.concat_parameters
    assert model.init_nets["tracks"].input_size == 3 + 2 + 1
    inputs, valid, _ = film_batch()
    a, _ = model(packed(inputs, valid), valid)
    b, _ = model(packed(with_parameter(inputs, 30.0), valid), valid)
    # jets whose parameter changed (1, 3, 4) change; the others do not
    changed = ~torch.isclose(a["jets_classification"], b["jets_classification"]).all(1)
    assert changed.tolist() == [False, True, False, True, True]
    dl1 = film_model(encoder=False)
    assert dl1.init_nets["jets"].input_size == 2 + 1
    c, _ = dl1({"jets": inputs["jets"], "parameters": inputs["parameters"]})
    d, _ = dl1({"jets": inputs["jets"], "parameters": inputs["parameters"] + 5})
    assert not torch.allclose(c["jets_classification"], d["jets_classification"])


@pytest.mark.parametrize("layer", ["input", "encoder", "global"])
def test_each_featurewise_layer_conditions_the_outputs(layer):
    model = film_model([layer])
    # transforms at the inputs take the place of the concatenation; elsewhere both act
    assert model.concat_parameters == (layer != "input")
    assert model.init_nets["tracks"].input_size == 5 + (layer != "input")
    if layer != "input":  # silence the concatenated column: only the transform reads it now
        with torch.no_grad():
            model.init_nets["tracks"].net.net[0].weight[:, -1] = 0.0
    inputs, valid, _ = film_batch()
    a, _ = model(packed(inputs, valid), valid)
    b, _ = model(packed(with_parameter(inputs, 30.0), valid), valid)
    changed = ~torch.isclose(a["jets_classification"], b["jets_classification"]).all(1)
    assert changed.tolist() == [False, True, False, True, True]
    # and not through the silenced column: without the transform's networks, nothing moves
    for net in model.featurewise.modules():
        if isinstance(net, torch.nn.Linear):
            torch.nn.init.zeros_(net.weight)
    c, _ = model(packed(inputs, valid), valid)
    d, _ = model(packed(with_parameter(inputs, 30.0), valid), valid)
    torch.testing.assert_close(c["jets_classification"], d["jets_classification"])


def test_transform_is_scale_times_features_plus_bias():
    film = FeaturewiseTransform(
        2, 3, {"hidden_layers": [4], "final_activation": "Sigmoid"}, {"hidden_layers": []}
    )
    params = torch.randn(2, 2)
    x = torch.randn(2, 3)
    scale, bias = film.scale(params), film.bias(params)
    assert ((scale > 0) & (scale < 1)).all()  # Sigmoid after the scale network
    torch.testing.assert_close(film(params, x), scale * x + bias)
    valid = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    tokens = torch.randn(3, 3)
    expected = scale[[0, 0, 1]] * tokens + bias[[0, 0, 1]]
    torch.testing.assert_close(film(params, tokens, Packed(valid)), expected)
    normed = FeaturewiseTransform(2, 3, None, {"hidden_layers": [4]}, apply_norm=True)
    out = normed(params, x)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("registers", [0, 2])
def test_packed_padded_and_export_agree_with_every_transform(registers):
    model = film_model(["input", "encoder", "global"], registers=registers)
    inputs, valid, _ = film_batch()
    out, _ = model(packed(inputs, valid), valid)
    padded_model = film_model(["input", "encoder", "global"], registers, attention="padded")
    padded, _ = padded_model(inputs, valid)
    for task in ("jets_classification", "track_origin"):
        torch.testing.assert_close(padded[task], out[task], rtol=1e-4, atol=1e-5)
    start = 0
    for b in range(5):
        one = {
            "jets": inputs["jets"][b : b + 1],
            "parameters": inputs["parameters"][b : b + 1],
            "tracks": inputs["tracks"][b : b + 1, valid["tracks"][b]],
        }
        single, _ = model(one)
        torch.testing.assert_close(
            single["jets_classification"][0], out["jets_classification"][b], rtol=1e-4, atol=1e-5
        )
        n = int(valid["tracks"][b].sum())
        torch.testing.assert_close(
            single["track_origin"][0], out["track_origin"][start : start + n], rtol=1e-4, atol=1e-5
        )
        start += n


def test_gradient_reaches_featurewise_nets_without_syncs():
    model = film_model(["input", "encoder", "global"], registers=1)
    inputs, valid, labels = film_batch()
    assert step(model, packed(inputs, valid), valid, labels) == []
    for name, p in model.featurewise.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameters_are_normalised_where_the_norm_dict_has_them(tmp_path):
    path = tmp_path / "norm_dict.yaml"
    path.write_text(yaml.safe_dump({"jets": {"mass": {"mean": 50.0, "std": 20.0}}}))
    norm = parameter_norm(["mass", "mH"], str(path), "jets")
    torch.testing.assert_close(norm(torch.tensor([[90.0, 125.0]])), torch.tensor([[2.0, 125.0]]))
    path.write_text(yaml.safe_dump({"parameters": {"mH": {"mean": 100.0, "std": 25.0}}}))
    norm = parameter_norm(["mass", "mH"], str(path), "jets")
    torch.testing.assert_close(norm(torch.tensor([[90.0, 125.0]])), torch.tensor([[90.0, 1.0]]))
    torch.testing.assert_close(
        parameter_norm(["mass"], None, "jets")(torch.tensor([[7.0]])), torch.tensor([[7.0]])
    )


@pytest.mark.parametrize(
    ("variables", "nets", "encoder", "match"),
    [
        ({"jets": ["pt"], "tracks": ["a"]}, [FILM["global"]], True, r"no 'parameters'"),
        (VARIABLES, [{**FILM["encoder"], "layer": "decoder"}], True, r"layer 'decoder' is not"),
        (VARIABLES, [FILM["global"], FILM["global"]], True, r"a second featurewise net"),
        (
            VARIABLES,
            [{"layer": "input", "dense_config_bias": {"output_size": 17}}],
            True,
            r"init net 'tracks'\)\.dense_config_bias has output_size 17, but the features it "
            r"transforms number 5",
        ),
        (VARIABLES, [{"layer": "global"}], True, r"dense_config_scale, dense_config_bias or"),
        ({"jets": ["pt"], "parameters": ["m"]}, [FILM["encoder"]], False, r"needs an encoder"),
    ],
    ids=["no-parameters", "layer", "twice", "size", "no-nets", "no-encoder"],
)
def test_featurewise_errors(variables, nets, encoder, match):
    init = [{"input_name": "tracks" if encoder else "jets", "output_size": D}]
    kwargs = {}
    if encoder:
        kwargs = {"encoder": Transformer(D, 1, 2, out_dim=8), "pool_net": GlobalAttentionPooling(8)}
    with pytest.raises(SaltError, match=match):
        SaltModel(init_nets=init, tasks=[], variables=variables, featurewise_nets=nets, **kwargs)


def test_an_init_net_for_parameters_is_refused():
    with pytest.raises(SaltError, match="init net for 'parameters'"):
        SaltModel(
            init_nets=[{"input_name": "parameters", "output_size": D}],
            tasks=[],
            variables=VARIABLES,
        )
