"""MaskDecoder and MaskFormer loss: shapes, padding independence, losses, overfitting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from salt.errors import SaltError
from salt.evaluation.vertex_finding import (
    predicted_objects,
    vertex_finding_counts,
    vertex_finding_rates,
)
from salt.models import Dense, MaskDecoder
from salt.models.layout import Packed, Padded
from salt.models.maskformer_loss import MaskFormerLoss
from salt.models.object_targets import ObjectTargets

D = 16
LOSS_CONFIG = {
    "num_classes": 2,
    "loss_weights": {"object_class_ce": 2.0, "mask_ce": 10.0, "mask_dice": 2.0},
}


def make_decoder(num_objects=4, num_layers=2, aux_loss=False, seed=0, **md_config):
    torch.manual_seed(seed)
    return MaskDecoder(
        num_objects,
        D,
        num_layers,
        {"n_heads": 2, **md_config},
        Dense(D, 3),
        Dense(D, D),
        LOSS_CONFIG,
        aux_loss=aux_loss,
    )


class LinearRegression(nn.Module):
    """A minimal object regression: a linear map and an L1 loss over known targets."""

    def __init__(self, n_out: int = 2):
        super().__init__()
        self.net = nn.Linear(D, n_out)

    def predict(self, embed):
        return self.net(embed)

    def loss(self, pred, target):
        known = torch.isfinite(target)
        return F.l1_loss(pred[known], target[known])


def targets_for(layout: Packed, classes: list[list[int]], owner: torch.Tensor) -> ObjectTargets:
    """Targets from per-jet object classes (2 = null) and the (N,) owning slot of each track."""
    object_class = torch.tensor(classes)
    masks = owner[:, None] == torch.arange(object_class.shape[1])
    masks &= (object_class != 2)[layout.batch]
    return ObjectTargets(object_class, masks)


# ------------------------------------------------------------------------------------- shapes
def test_shapes_in_packed_layout_with_an_empty_jet():
    decoder = make_decoder(num_objects=5, num_layers=3, aux_loss=True)
    valid = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    layout = Packed(valid)
    out, losses = decoder(torch.randn(layout.n_tokens, D), layout)
    assert losses is None
    assert out.objects.class_logits.shape == (3, 5, 3)
    assert out.objects.mask_logits.shape == (6, 5)
    assert out.objects.embed.shape == (3, 5, D)
    assert out.tracks.shape == (6, D)
    assert len(out.layers) == 3
    assert all(p.mask_logits.shape == (6, 5) for p in out.layers)
    masks, mask_valid = out.padded_masks(layout)
    assert masks.shape == (3, 5, 3)
    assert mask_valid.tolist() == [[1, 1, 1], [0, 0, 0], [1, 1, 1]]
    torch.testing.assert_close(masks[2].T, out.objects.mask_logits[3:])
    assert torch.isfinite(out.objects.class_logits).all()


def test_no_tracks_in_the_whole_batch():
    decoder = make_decoder()
    layout = Packed(torch.zeros(2, 5, dtype=torch.bool))
    targets = ObjectTargets(torch.tensor([[0, 2], [2, 2]]), torch.zeros(0, 2, dtype=torch.bool))
    out, losses = decoder(torch.randn(0, D), layout, targets)
    assert out.objects.mask_logits.shape == (0, 4)
    assert torch.isfinite(out.objects.class_logits).all()
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in decoder.parameters())


# ------------------------------------------------------------------------ padding independence
@pytest.mark.parametrize(
    "md_config",
    [{}, {"mask_attention": False}, {"bidirectional_ca": False}, {"attn_backend": "math"}],
    ids=["default", "no_mask_attention", "one_way", "math"],
)
def test_padding_never_influences_outputs(md_config):
    decoder = make_decoder(aux_loss=True, **md_config).eval()
    gen = torch.Generator().manual_seed(1)
    jet = torch.randn(3, D, generator=gen) * 2
    alone, _ = decoder(jet, Packed(torch.ones(1, 3, dtype=torch.bool)))

    # the same jet, in slots with holes, among longer jets and a jet without tracks
    valid = torch.zeros(4, 12, dtype=torch.bool)
    valid[0, :11] = True
    valid[1, [0, 4, 7]] = True
    valid[3, :9] = True
    layout = Packed(valid)
    x = torch.randn(layout.n_tokens, D, generator=gen) * 2
    x[layout.batch == 1] = jet
    batched, _ = decoder(x, layout)

    mine = layout.batch == 1
    for a, b in zip([alone.objects, *alone.layers], [batched.objects, *batched.layers]):
        torch.testing.assert_close(b.class_logits[1:2], a.class_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(b.embed[1:2], a.embed, atol=1e-5, rtol=0)
        torch.testing.assert_close(b.mask_logits[mine], a.mask_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.tracks[mine], alone.tracks, atol=1e-5, rtol=0)

    # the jet without tracks gets the same objects as any other jet without tracks
    other, _ = decoder(torch.randn(0, D), Packed(torch.zeros(1, 2, dtype=torch.bool)))
    torch.testing.assert_close(batched.objects.class_logits[2:3], other.objects.class_logits)


def test_mask_attention_selects_some_tracks():
    """The padding test above only means something if the attention masks are not trivial."""
    decoder = make_decoder().eval()
    layout = Packed(torch.ones(8, 6, dtype=torch.bool))
    x = decoder.norm_tracks(torch.randn(layout.n_tokens, D) * 2)
    q = decoder.queries.expand(8, -1, -1)
    preds = decoder.heads(q, x, layout)
    allowed = decoder.layers[0]._allowed(preds.mask_logits, layout)
    partial = allowed.any(-1) & ~allowed.all(-1)
    assert partial.any()
    # a query whose mask selects no track reads every track of its jet
    selected = layout.pad(preds.mask_logits)[0].transpose(1, 2) > math.log(9)  # (B, Q, L)
    nothing = ~selected.any(-1)
    assert nothing.any()
    assert allowed[nothing].all()


def test_padded_layout_gives_the_packed_result():
    """The export path (one jet, every slot a track, no mask) computes the same numbers."""
    decoder = make_decoder(aux_loss=True).eval()
    jet = torch.randn(5, D)
    packed, _ = decoder(jet, Packed(torch.ones(1, 5, dtype=torch.bool)))
    padded, _ = decoder(jet[None], Padded(None))
    torch.testing.assert_close(padded.objects.class_logits, packed.objects.class_logits)
    torch.testing.assert_close(padded.objects.mask_logits[0], packed.objects.mask_logits)
    torch.testing.assert_close(padded.tracks[0], packed.tracks)


# ----------------------------------------------------------------------------------- losses
def perfect_predictions(targets: ObjectTargets, layout: Packed, n_queries: int, scale=30.0):
    """Class and mask logits that state the targets with certainty, object k on query k."""
    n_jets, n_slots = targets.object_class.shape
    class_logits = torch.full((n_jets, n_queries, 3), -scale)
    class_logits[:, :, 2] = scale  # every query null ...
    rows = torch.arange(n_jets)[:, None].expand(-1, n_slots)
    cols = torch.arange(n_slots).expand(n_jets, -1)
    class_logits[rows, cols] = -scale
    class_logits[rows, cols, targets.object_class] = scale  # ... but query k says object k
    masks = torch.full((layout.n_tokens, n_queries), -scale)
    masks[:, :n_slots] = torch.where(targets.masks, scale, -scale)
    return class_logits, masks


def test_losses_vanish_when_predictions_equal_targets():
    layout = Packed(torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]).bool())
    # jet 0: a b and a c hadron; jet 1: one b hadron owning no track; jet 2: nothing
    targets = targets_for(
        layout, [[0, 1, 2], [0, 2, 2], [2, 2, 2]], torch.tensor([0, 1, 0, 2, 5, 5])
    )
    regression = LinearRegression()
    targets.regression = torch.tensor(
        [
            [[1.0, -1.0], [0.5, float("nan")], [0.0, 0.0]],
            [[2.0, 1.0], [0.0, 0.0], [0.0, 0.0]],
            [[0.0, 0.0]] * 3,
        ]
    )
    class_logits, masks = perfect_predictions(targets, layout, n_queries=4)
    # a regression that returns the targets on the matched queries
    embed = torch.zeros(3, 4, D)
    regression.predict = lambda e: torch.nan_to_num(
        torch.cat([targets.regression, torch.zeros(3, 1, 2)], 1)
    )
    weights = {**LOSS_CONFIG["loss_weights"], "mask_focal": 1.0, "regression": 1.0}
    loss = MaskFormerLoss(2, weights)
    losses, match = loss(class_logits, masks, embed, targets, layout, regression)
    assert set(losses) == {"object_class_ce", "mask_ce", "mask_dice", "mask_focal", "regression"}
    for name, value in losses.items():
        assert float(value) < 1e-6, name
    assert match.tolist() == [[0, 1, -1], [0, -1, -1], [-1, -1, -1]]


def test_losses_equal_hand_computation():
    layout = Packed(torch.tensor([[1, 1, 1, 0]]).bool())
    targets = targets_for(layout, [[1, 2]], torch.tensor([0, 0, 9]))  # a c hadron, 2 tracks
    class_logits = torch.tensor([[[0.1, 0.2, 0.3], [0.5, 2.0, -1.0]]])  # query 1 says "c"
    masks = torch.tensor([[0.5, 2.0], [-1.0, 1.5], [0.3, -2.0]])  # query 1 has the right mask
    loss = MaskFormerLoss(2, LOSS_CONFIG["loss_weights"], null_class_weight=0.25)
    losses, match = loss(class_logits, masks, torch.zeros(1, 2, D), targets, layout)
    assert match.tolist() == [[1, -1]]

    ce0 = -F.log_softmax(class_logits[0, 0], -1)[2]  # unmatched: null, weight 0.25
    ce1 = -F.log_softmax(class_logits[0, 1], -1)[1]  # matched: c, weight 1
    expected_ce = (0.25 * ce0 + ce1) / 1.25
    truth = torch.tensor([1.0, 1.0, 0.0])
    bce = F.binary_cross_entropy_with_logits(masks[:, 1], truth)
    p = masks[:, 1].sigmoid()
    dice = 1 - (2 * (p * truth).sum() + 1) / (p.sum() + truth.sum() + 1)
    assert float(losses["object_class_ce"]) == pytest.approx(2.0 * float(expected_ce), rel=1e-5)
    assert float(losses["mask_ce"]) == pytest.approx(10.0 * float(bce), rel=1e-5)
    assert float(losses["mask_dice"]) == pytest.approx(2.0 * float(dice), rel=1e-5)


def test_regression_cost_decides_between_otherwise_equal_queries():
    layout = Packed(torch.ones(1, 2, dtype=torch.bool))
    targets = targets_for(layout, [[0]], torch.tensor([0, 0]))
    targets.regression = torch.tensor([[[3.0, 3.0]]])
    class_logits = torch.zeros(1, 2, 3)
    masks = torch.zeros(2, 2)
    regression = LinearRegression()
    # query 1 predicts the target's properties, query 0 does not
    regression.predict = lambda e: torch.tensor([[[0.0, 0.0], [3.0, 3.1]]])
    weights = {**LOSS_CONFIG["loss_weights"], "regression": 1.0}
    _, match = MaskFormerLoss(2, weights)(
        class_logits, masks, torch.zeros(1, 2, D), targets, layout, regression
    )
    assert match.tolist() == [[1]]
    # without a regression weight, the first of two equal queries wins
    _, match = MaskFormerLoss(2, LOSS_CONFIG["loss_weights"])(
        class_logits, masks, torch.zeros(1, 2, D), targets, layout, regression
    )
    assert match.tolist() == [[0]]


def test_aux_losses_per_layer_and_gradients():
    decoder = make_decoder(num_layers=3, aux_loss=True)
    layout = Packed(torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).bool())
    targets = targets_for(layout, [[0, 1], [1, 2]], torch.tensor([0, 1, 1, 5, 0, 5]))
    regression = LinearRegression()
    targets.regression = torch.randn(2, 2, 2)
    out, losses = decoder(torch.randn(layout.n_tokens, D), layout, targets, regression)
    terms = ["object_class_ce", "mask_ce", "mask_dice"]
    assert set(losses) == set(terms) | {f"{t}_layer{i}" for t in terms for i in range(3)}
    assert out.query_for_target.shape == (2, 2)
    sum(losses.values()).backward()
    assert decoder.queries.grad is not None and decoder.queries.grad.abs().sum() > 0
    assert decoder.class_net.net[0].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"class_net": Dense(D, 4)}, "class_net.*output_size 4.*needs 16 and 3"),
        ({"mask_net": Dense(D, 8)}, "mask_net.*needs 16 and 16"),
        (
            {"md_config": {"n_heads": 2, "mask_atention": True}},
            "unknown keys \\['mask_atention'\\]",
        ),
        (
            {"loss_config": {"num_classes": 2, "loss_weights": {"mask_bce": 1.0}}},
            "unknown terms \\['mask_bce'\\].*Did you mean: mask_ce",
        ),
        ({"loss_config": {"loss_weights": {"mask_ce": 1.0}}}, "needs num_classes"),
        ({"md_config": {"n_heads": 3}}, "not divisible by n_heads 3"),
    ],
)
def test_config_errors(change, message):
    args = {
        "num_objects": 3,
        "embed_dim": D,
        "num_layers": 1,
        "md_config": {"n_heads": 2},
        "class_net": Dense(D, 3),
        "mask_net": Dense(D, D),
        "loss_config": LOSS_CONFIG,
        **change,
    }
    with pytest.raises(SaltError, match=message):
        MaskDecoder(**args)


# ---------------------------------------------------------------------------------- overfit
def synthetic_vertices(n_jets: int, seed: int):
    """Jets whose tracks carry their vertex's direction: tracks of one hadron look alike.

    Returns packed track features (N, D), the layout and the targets (classes b=0, c=1).
    """
    gen = torch.Generator().manual_seed(seed)
    valid = torch.zeros(n_jets, 10, dtype=torch.bool)
    classes, owners, features = [], [], []
    for b in range(n_jets):
        n_obj = b % 3  # 0, 1 or 2 hadrons
        cls = [int(c) for c in torch.randint(0, 2, (n_obj,), generator=gen)]
        sizes = [int(s) for s in torch.randint(2, 4, (n_obj,), generator=gen)]
        n_primary = int(torch.randint(1, 4, (1,), generator=gen))
        valid[b, : sum(sizes) + n_primary] = True
        for k, (c, size) in enumerate(zip(cls, sizes)):
            direction = F.normalize(torch.randn(D, generator=gen), dim=0) * 4
            direction[c] += 3  # the class shows in the tracks
            features.append(direction + 0.1 * torch.randn(size, D, generator=gen))
            owners += [k] * size
        features.append(torch.randn(n_primary, D, generator=gen))
        owners += [9] * n_primary
        classes.append(cls + [2] * (2 - n_obj))
    layout = Packed(valid)
    return torch.cat(features), layout, targets_for(layout, classes, torch.tensor(owners))


def test_tiny_decoder_overfits_and_finds_the_vertices():
    x, layout, targets = synthetic_vertices(6, seed=2)
    decoder = make_decoder(num_objects=3, num_layers=2, aux_loss=True, seed=3)
    opt = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    for _ in range(120):
        opt.zero_grad()
        _, losses = decoder(x, layout, targets)
        sum(losses.values()).backward()
        opt.step()

    decoder.eval()
    with torch.no_grad():
        out, losses = decoder(x, layout, targets)
    assert float(losses["mask_dice"]) < 0.05

    masks, valid = out.padded_masks(layout)
    pred_class, pred_masks = predicted_objects(
        out.objects.class_logits.numpy(), masks.numpy(), valid.numpy()
    )
    true_masks = layout.pad(targets.masks)[0].transpose(1, 2).numpy()
    counts = vertex_finding_counts(
        pred_class, pred_masks, targets.object_class.numpy(), true_masks, ["b", "c", "null"]
    )
    rates = vertex_finding_rates(counts, ["b", "c", "null"])
    assert counts["b_true"] + counts["c_true"] == 6
    assert rates["all_eff"] == 1.0 and rates["all_fake_rate"] == 0.0
    # the masks are recovered exactly, and each found object has its true class
    match = out.query_for_target
    for b, k in zip(*np.nonzero(targets.object_class.numpy() != 2)):
        q = int(match[b, k])
        assert (pred_masks[b, q] == true_masks[b, k]).all()
        assert pred_class[b, q] == targets.object_class[b, k]
