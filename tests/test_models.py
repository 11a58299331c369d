"""Model building blocks: shapes, layouts, masks, empty jets, losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from salt.errors import SaltError
from salt.models import (
    ClassificationTask,
    DeepSets,
    GATv2,
    GaussianRegressionTask,
    GlobalAttentionPooling,
    InputNorm,
    MeanPooling,
    RegressionTask,
    SaltModel,
    SumPooling,
    Transformer,
    VertexingTask,
)
from salt.models.attention import attend
from salt.models.layout import Packed, Padded
from salt.models.tasks import vertex_index

torch.manual_seed(0)
D = 16


def random_valid(n_jets: int, slots: int, empty: int | None = None, holes: bool = False):
    """(B, T) masks with 1..T valid slots per jet; jet `empty` has none."""
    lengths = torch.randint(1, slots + 1, (n_jets,))
    valid = torch.arange(slots)[None, :] < lengths[:, None]
    if holes:  # a track selection can invalidate slots in place
        valid = valid & (torch.rand(n_jets, slots) > 0.2)
        valid[:, 0] = True
    if empty is not None:
        valid[empty] = False
    return valid


ENCODERS = {
    "transformer": lambda: Transformer(D, 2, 4, out_dim=8, ff_dim=32, dropout=0.0),
    "transformer_math": lambda: Transformer(D, 1, 2, out_dim=8, attn_backend="math"),
    "gatv2": lambda: GATv2(D, 2, 2, out_dim=8),
    "deepsets": lambda: DeepSets(D, [12], 8),
}
POOLINGS = {
    "attention": lambda d: GlobalAttentionPooling(d),
    "mean": lambda d: MeanPooling(d),
    "sum": lambda d: SumPooling(d),
}


# ---------------------------------------------------------------------------------- layouts
def test_packed_layout_round_trip_and_set_ops():
    valid = random_valid(5, 7, empty=2, holes=True)
    layout = Packed(valid)
    x = torch.randn(int(valid.sum()), 3)
    padded, mask = layout.pad(x)
    assert padded.shape == (5, layout.max_len, 3)
    assert torch.equal(layout.unpad(padded), x)
    assert torch.equal(mask.sum(1), valid.sum(1))
    assert torch.equal(layout.scatter(x)[valid], x)
    dense = torch.zeros(5, 7, 3)
    dense[valid] = x
    assert torch.allclose(layout.sum(x), dense.sum(1))
    scores = torch.randn(len(x), 2)
    weights = layout.softmax(scores)
    assert torch.allclose(layout.sum(weights)[valid.any(1)], torch.ones(4, 2))
    assert torch.equal(layout.sum(weights)[2], torch.zeros(2))


def test_pairs_are_all_unordered_pairs_within_jets():
    valid = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    i, j = Packed(valid).pairs()
    # tokens: jet 0 -> 0,1,2; jet 1 -> 3; jet 2 -> 4,5
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2), (1, 2), (4, 5)]


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_attention_backends_agree(backend):
    valid = random_valid(6, 9)
    q, k, v = (torch.randn(6, 2, 9, 4) for _ in range(3))
    reference = []
    for b in range(6):  # attention over each jet's valid slots alone
        n = int(valid[b].sum())
        scores = q[b, :, :n] @ k[b, :, :n].transpose(-1, -2) / 2.0
        reference.append(torch.softmax(scores, -1) @ v[b, :, :n])
    out = attend(q, k, v, valid, backend)
    for b in range(6):
        n = int(valid[b].sum())
        torch.testing.assert_close(out[b, :, :n], reference[b], rtol=1e-5, atol=1e-6)


def test_math_attention_is_finite_for_a_jet_without_tracks():
    q = k = v = torch.randn(2, 1, 3, 4)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert torch.isfinite(attend(q, k, v, mask, "math")).all()


# ---------------------------------------------------------------------------------- encoders
@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_packed_equals_padded(name):
    encoder = ENCODERS[name]().eval()
    valid = random_valid(8, 10, empty=3, holes=True)
    x = torch.randn(8, 10, D)
    packed_out = encoder(x[valid], Packed(valid))
    padded_out = encoder(x, Padded(valid))[valid]
    torch.testing.assert_close(packed_out, padded_out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_ignores_padded_slots(name):
    encoder = ENCODERS[name]().eval()
    valid = random_valid(8, 10, empty=5)
    x = torch.randn(8, 10, D)
    garbage = x.clone()
    garbage[~valid] = torch.randn(int((~valid).sum()), D) * 1e3
    out, out_garbage = encoder(x, Padded(valid)), encoder(garbage, Padded(valid))
    assert torch.equal(out[valid], out_garbage[valid])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", POOLINGS)
def test_pooling_ignores_padding_and_empty_jets(name):
    pool = POOLINGS[name](D)
    valid = random_valid(6, 5, empty=1)
    x = torch.randn(6, 5, D)
    garbage = x.clone()
    garbage[~valid] = 1e4
    padded = pool(x, Padded(valid))
    torch.testing.assert_close(pool(garbage, Padded(valid)), padded)
    torch.testing.assert_close(pool(x[valid], Packed(valid)), padded, rtol=1e-5, atol=1e-6)
    assert torch.equal(padded[1], torch.zeros(D))


# ---------------------------------------------------------------------------------- InputNorm
def test_input_norm_values_and_refusals():
    norm = InputNorm(["a", "b"], [1.0, -2.0], [2.0, 0.5], "tracks")
    torch.testing.assert_close(norm(torch.tensor([[3.0, -1.0]])), torch.tensor([[1.0, 2.0]]))
    assert {n for n, _ in norm.named_buffers()} == {"mean", "std"}
    with pytest.raises(SaltError, match=r"tracks\.b .*std 0"):
        InputNorm(["a", "b"], [0.0, 0.0], [1.0, 0.0], "tracks")
    with pytest.raises(SaltError, match=r"tracks\.a .*mean nan"):
        InputNorm(["a"], [math.nan], [1.0], "tracks")


# ---------------------------------------------------------------------------------- losses
def test_classification_loss_matches_hand_computation():
    task = ClassificationTask(
        "t", "tracks", "lab", {"input_size": 3}, class_names=["a", "b"], class_weights=[1.0, 3.0]
    )
    x = torch.randn(4, 3)
    labels = torch.tensor([0, 1, -1, 1])
    logits, loss = task(x, None, {"lab": labels})
    logp = torch.log_softmax(logits, -1)
    # weighted mean over the non-ignored entries
    picked = [(0, 0, 1.0), (1, 1, 3.0), (3, 1, 3.0)]
    expected = -sum(w * logp[r, c] for r, c, w in picked) / sum(w for *_, w in picked)
    torch.testing.assert_close(loss, expected)
    _, none_loss = task(x, None, {"lab": torch.full((4,), -1)})
    assert none_loss.item() == 0.0


def test_vertexing_targets_and_loss():
    task = VertexingTask("v", "tracks", {"input_size": 4, "hidden_layers": [5]})
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    layout = Packed(valid)
    x = torch.randn(6, 4)
    # jet 0: tracks 0,1 share vertex 2; track 2 has vertex 0 (primary); 3 has none (-1)
    # jet 1: both tracks have no truth vertex: never a positive pair
    vertex = torch.tensor([2, 2, 0, -1, -1, -1])
    logits, loss = task(x, layout, {"ftagTruthVertexIndex": vertex})
    i, j = layout.pairs()
    target = torch.tensor(
        [1.0 if (a, b) == (0, 1) else 0.0 for a, b in zip(i.tolist(), j.tolist())]
    )
    expected = F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(loss, expected)
    # the split first layer equals an MLP on [h_i, h_j]
    w = torch.cat([task.left.weight, task.right.weight], 1)
    hidden = task.act(torch.cat([x[i], x[j]], 1) @ w.T + task.left.bias)
    torch.testing.assert_close(task.rest(hidden).squeeze(-1), logits)
    # the padded (export) form is symmetric and agrees on the pairs
    full = task.pair_logits(x[None, :4], Padded(None))[0]
    torch.testing.assert_close(full, full.T)
    torch.testing.assert_close(full[0, 1], logits[0])


def test_vertex_index_is_the_first_track_of_each_component():
    valid = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    layout = Packed(valid)
    i, j = layout.pairs()
    linked = {(1, 3), (3, 4), (5, 7)}  # jet 0: {0}, {1,3,4}, {2}; jet 1: {0,2}, {1}
    logits = torch.tensor(
        [5.0 if (a, b) in linked else -5.0 for a, b in zip(i.tolist(), j.tolist())]
    )
    assert vertex_index(logits, layout).tolist() == [0, 1, 2, 1, 1, 0, 1, 0]


def test_regression_losses_are_scaled():
    task = RegressionTask("r", "jets", ["y"], {"input_size": 2}, scales={"y": [10.0, 2.0]})
    x = torch.randn(3, 2)
    y = torch.tensor([12.0, float("nan"), 6.0])
    out, loss = task(x, None, {"y": y})
    scaled = torch.tensor([1.0, -2.0])
    torch.testing.assert_close(loss, F.mse_loss(out[[0, 2], 0], scaled))
    torch.testing.assert_close(task.predictions(out, None)["values"], out * 2.0 + 10.0)
    huber = RegressionTask(
        "h", "jets", ["y"], {"input_size": 2}, scales={"y": [10.0, 2.0]}, loss="huber"
    )
    out, loss = huber(x, None, {"y": y})
    torch.testing.assert_close(loss, F.huber_loss(out[[0, 2], 0], scaled))


def test_gaussian_regression_nll():
    task = GaussianRegressionTask("g", "jets", ["y"], {"input_size": 2}, scales={"y": [0.0, 1.0]})
    x = torch.randn(4, 2)
    y = torch.randn(4)
    out, loss = task(x, None, {"y": y})
    mu, log_sigma = out[:, 0], out[:, 1]
    expected = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(y).neg().mean()
    torch.testing.assert_close(loss, expected)
    assert set(task.predictions(out, None)) == {"values", "stddev"}


# ---------------------------------------------------------------------------------- SaltModel
VARIABLES = {"jets": ["pt", "eta"], "tracks": ["a", "b", "c"], "hits": ["h1", "h2"]}


def make_model(encoder="transformer", constituents=("tracks",), attention="packed"):
    variables = {"jets": VARIABLES["jets"], **{c: VARIABLES[c] for c in constituents}}
    init = [{"input_name": c, "output_size": D, "hidden_layers": [D]} for c in constituents]
    torch.manual_seed(1)
    tasks = [
        ClassificationTask(
            "jets_classification",
            "jets",
            "flavour_label",
            {"input_size": 8},
            class_names=["bjets", "cjets", "ujets"],
        ),
        ClassificationTask("track_origin", "tracks", "ftagTruthOriginLabel", {"input_size": 8}),
        VertexingTask("track_vertexing", "tracks", {"input_size": 8, "hidden_layers": [8]}),
    ]
    return SaltModel(
        init_nets=init,
        tasks=tasks,
        encoder=ENCODERS[encoder](),
        pool_net=GlobalAttentionPooling(8),
        variables=variables,
        attention=attention,
    ).eval()


def make_batch(n_jets=6, slots=8, constituents=("tracks",), empty=2):
    inputs = {"jets": torch.randn(n_jets, 2)}
    valid = {}
    for c in constituents:
        valid[c] = random_valid(n_jets, slots, empty=empty)
        inputs[c] = torch.randn(n_jets, slots, len(VARIABLES[c]))
    n = int(valid["tracks"].sum())
    labels = {
        "jets": {"flavour_label": torch.randint(0, 3, (n_jets,))},
        "tracks": {
            "ftagTruthOriginLabel": torch.randint(0, 8, (n,)),
            "ftagTruthVertexIndex": torch.randint(-1, 3, (n,)),
        },
    }
    return inputs, valid, labels


@pytest.mark.parametrize("encoder", ["transformer", "gatv2", "deepsets"])
def test_saltmodel_masks_empty_jets_and_layouts(encoder):
    model = make_model(encoder)
    inputs, valid, labels = make_batch()
    outputs, losses = model(inputs, valid, labels)
    assert outputs["jets_classification"].shape == (6, 3)
    assert outputs["track_origin"].shape == (int(valid["tracks"].sum()), 8)
    assert set(losses) == {"jets_classification", "track_origin", "track_vertexing"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert torch.isfinite(outputs["jets_classification"][2]).all()  # the jet without tracks
    # padded slots never matter
    garbage = {**inputs, "tracks": inputs["tracks"].clone()}
    garbage["tracks"][~valid["tracks"]] = float("nan")
    again, _ = model(garbage, valid)
    assert torch.equal(again["jets_classification"], outputs["jets_classification"])
    # the padded-attention layout computes the same function
    padded_model = make_model(encoder, attention="padded")
    padded, _ = padded_model(inputs, valid)
    torch.testing.assert_close(
        padded["jets_classification"], outputs["jets_classification"], rtol=1e-4, atol=1e-5
    )


def test_export_path_equals_training_path_per_jet():
    model = make_model("transformer_math")
    inputs, valid, _ = make_batch(empty=None)
    packed, _ = model(inputs, valid)
    for b in range(6):
        n = valid["tracks"][b]
        one = {"jets": inputs["jets"][b : b + 1], "tracks": inputs["tracks"][b : b + 1, n]}
        single, _ = model(one)
        torch.testing.assert_close(
            single["jets_classification"][0], packed["jets_classification"][b], rtol=1e-4, atol=1e-5
        )


def test_two_constituent_types_are_encoded_together():
    model = make_model(constituents=("tracks", "hits"))
    inputs, valid, labels = make_batch(constituents=("tracks", "hits"))
    outputs, losses = model(inputs, valid, labels)
    assert set(losses) == {"jets_classification", "track_origin", "track_vertexing"}
    assert outputs["track_origin"].shape[0] == int(valid["tracks"].sum())
    padded, _ = make_model(constituents=("tracks", "hits"), attention="padded")(inputs, valid)
    torch.testing.assert_close(
        padded["jets_classification"], outputs["jets_classification"], rtol=1e-4, atol=1e-5
    )
    # hits change the jet output: they are really encoded with the tracks
    other = {**inputs, "hits": inputs["hits"] + 1.0}
    moved, _ = model(other, valid)
    assert not torch.allclose(moved["jets_classification"], outputs["jets_classification"])


def test_saltmodel_size_mismatch_is_a_clear_error():
    with pytest.raises(SaltError, match="embed_dim"):
        SaltModel(
            init_nets=[{"input_name": "tracks", "output_size": 32}],
            tasks=[],
            encoder=Transformer(D, 1, 2),
            pool_net=GlobalAttentionPooling(D),
            variables={"tracks": ["a"]},
        )
    with pytest.raises(SaltError, match="input_size 5"):
        SaltModel(
            init_nets=[{"input_name": "tracks", "output_size": D}],
            tasks=[ClassificationTask("j", "jets", "l", {"input_size": 5}, class_names=["a"])],
            encoder=Transformer(D, 1, 2),
            pool_net=GlobalAttentionPooling(D),
            variables={"tracks": ["a"]},
        )
