"""A SaltModel with a mask decoder, on demo batches: layouts, losses, empty jets, predictions.

The model has the MaskFormer config's parts at small size: a transformer encoder, a jet
classification, a track-origin task with the jet as context, and the mask decoder with an
object regression of the hadrons' properties through salt-ml-style target scaling.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salt.data.dataset import JetDataset
from salt.errors import SaltError
from salt.evaluation.vertex_finding import predicted_objects
from salt.models import (
    ClassificationTask,
    Dense,
    GlobalAttentionPooling,
    MaskDecoder,
    RegressionTask,
    SaltModel,
    Transformer,
)
from salt.modelwrapper import ModelWrapper
from tests.conftest import DEMO_MF_CONFIG as MF_CONFIG

D = 16
TRACKS = ["d0", "z0SinTheta", "dphi", "deta", "qOverP", "IP3D_signed_d0_significance",
          "IP3D_signed_z0_significance", "numberOfPixelHits"]  # fmt: skip
VARIABLES = {"jets": ["pt_btagJes", "eta_btagJes"], "tracks": TRACKS}
TARGETS = ["pt", "Lxy", "deta", "dphi", "mass"]
SCALER = {
    "pt": {"op": "log", "op_scale": 0.2},
    "Lxy": {"op": "log", "x_off": 1},
    "deta": {"op": "linear", "x_off": 1, "op_scale": 10},
    "dphi": {"op": "linear", "x_off": 1, "op_scale": 10},
    "mass": {"op": "log", "op_scale": 0.1},
}
LOSS_WEIGHTS = {"object_class_ce": 2.0, "mask_ce": 10.0, "mask_dice": 2.0, "regression": 2.0}
JET_CLASSES = ["bjets", "cjets", "ujets", "taujets"]


def decoder(num_layers=2, aux_loss=False, num_classes=2, loss_weights=None, seed=0):
    torch.manual_seed(seed)
    return MaskDecoder(
        num_objects=5,
        embed_dim=D,
        num_layers=num_layers,
        md_config={"n_heads": 2},
        class_net=Dense(D, num_classes + 1, [D]),
        mask_net=Dense(D, D, [D]),
        loss_config={"num_classes": num_classes, "loss_weights": loss_weights or LOSS_WEIGHTS},
        aux_loss=aux_loss,
    )


def tasks(regression=True, regression_weight=0.5):
    out = [
        ClassificationTask("jets_classification", "jets", "flavour_label",
                           {"input_size": D, "hidden_layers": [D]}, class_names=JET_CLASSES),
        ClassificationTask("track_origin", "tracks", "ftagTruthOriginLabel",
                           {"input_size": D, "hidden_layers": [D], "context_size": D},
                           loss_weight=0.5),
    ]  # fmt: skip
    if regression:
        out.append(
            RegressionTask("regression", "objects", TARGETS,
                           {"input_size": D, "hidden_layers": [D]},
                           scales={t: [0.0, 1.0] for t in TARGETS}, loss="l1",
                           loss_weight=regression_weight, scaler=SCALER)
        )  # fmt: skip
    return out


def make_model(norm_dict, mask_decoder=None, task_list=None, mf_config=MF_CONFIG, seed=0):
    mask_decoder = decoder() if mask_decoder is None else mask_decoder
    torch.manual_seed(seed)
    return SaltModel(
        init_nets=[{"input_name": "tracks", "output_size": D, "hidden_layers": [D]}],
        tasks=tasks() if task_list is None else task_list,
        encoder=Transformer(D, 2, 2, out_dim=D, dropout=0.0),
        pool_net=GlobalAttentionPooling(D),
        variables=VARIABLES,
        norm_dict=str(norm_dict),
        mask_decoder=mask_decoder,
        mf_config=mf_config,
    )


@pytest.fixture(scope="module")
def batch(demo):
    """One demo training batch of 300 jets with every label the model reads."""
    dataset = JetDataset(
        demo["train"],
        variables=VARIABLES,
        labels={"jets": ["flavour_label"], "tracks": ["ftagTruthOriginLabel"], "objects": TARGETS},
        batch_size=300,
        label_classes={"jets": {"flavour_label": 4}, "tracks": {"ftagTruthOriginLabel": 8}},
        mf_config=MF_CONFIG,
    )
    out = dataset[0]
    return {
        "inputs": {k: torch.as_tensor(v) for k, v in out["inputs"].items()},
        "valid": {k: torch.as_tensor(v) for k, v in out["valid"].items()},
        "labels": {o: {k: torch.as_tensor(v) for k, v in d.items()}
                   for o, d in out["labels"].items()},
    }  # fmt: skip


def without_tracks(batch, drop):
    """`batch` with the tracks of the jets where `drop` (B,) is True removed."""
    valid = batch["valid"]["tracks"]
    new = valid & ~drop[:, None]
    kept = new[valid]  # which of the packed tracks stay
    tracks = batch["inputs"]["tracks"]
    labels = {k: dict(v) for k, v in batch["labels"].items()}
    labels["tracks"] = {k: v[kept] for k, v in labels["tracks"].items()}
    return {
        "inputs": {**batch["inputs"], "tracks": tracks[kept] if tracks.dim() == 2 else tracks},
        "valid": {"tracks": new},
        "labels": labels,
    }


def padded_tracks(batch):
    """Tracks (B, T, F) in their slots: the dataloader delivers them packed."""
    valid = batch["valid"]["tracks"]
    x = batch["inputs"]["tracks"]
    if x.dim() == 2:
        full = x.new_zeros((*valid.shape, x.shape[-1]))
        full[valid] = x
        x = full
    return x


# ---------------------------------------------------------------------------------- layouts
def test_packed_and_one_jet_padded_paths_agree(batch, demo):
    """The training path (packed) and the export path (one jet, every slot a track) give the
    same objects, regressions and per-track object indices, for jets of 0 to many tracks."""
    model = make_model(demo["norm_dict"]).eval()
    drop = torch.zeros(len(batch["valid"]["tracks"]), dtype=torch.bool)
    drop[[0, 7]] = True
    batch = without_tracks(batch, drop)
    with torch.no_grad():
        outputs, _, layouts = model.run(batch["inputs"], batch["valid"])
        packed = model.task_predictions(outputs, layouts, batch["inputs"])
    valid = batch["valid"]["tracks"]
    tracks = padded_tracks(batch)
    counts = valid.sum(1)
    assert (counts == 0).any(), "the demo batch should hold a jet without tracks"
    picked = [int(torch.nonzero(counts == 0)[0]), *torch.argsort(counts)[-3:].tolist(), 1, 2]
    start = torch.nn.functional.pad(counts.cumsum(0), (1, 0))
    for jet in picked:
        n = int(counts[jet])
        one = {"jets": batch["inputs"]["jets"][jet : jet + 1],
               "tracks": tracks[jet : jet + 1][:, valid[jet]][:, :n]}  # fmt: skip
        with torch.no_grad():
            padded = model.predict(one)
        torch.testing.assert_close(padded["objects"]["probs"][0], packed["objects"]["probs"][jet],
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
        torch.testing.assert_close(
            padded["regression"]["values"][0],
            packed["regression"]["values"][jet],
            atol=1e-4,
            rtol=1e-5,
        )
        rows = slice(int(start[jet]), int(start[jet] + n))
        assert padded["objects"]["track_index"].shape == (1, n)
        index = packed["objects"]["track_index"][rows]
        assert torch.equal(padded["objects"]["track_index"][0], index)


def test_padding_never_reaches_the_objects(batch, demo):
    """Padded inputs with garbage in the invalid slots give what the clean ones give: no
    padding enters any attention or any mask."""
    model = make_model(demo["norm_dict"]).eval()
    valid = batch["valid"]["tracks"]
    clean = padded_tracks(batch)
    dirty = torch.where(valid[..., None], clean, torch.full_like(clean, 1e4))
    with torch.no_grad():
        a = model.predict({**batch["inputs"], "tracks": clean}, batch["valid"])
        b = model.predict({**batch["inputs"], "tracks": dirty}, batch["valid"])
        outputs, _, _ = model.run(batch["inputs"], batch["valid"])
    assert outputs["objects"].objects.mask_logits.shape == (int(valid.sum()), 5)
    for key in ("probs", "track_index"):
        assert torch.equal(a["objects"][key], b["objects"][key])
    assert torch.equal(a["regression"]["values"], b["regression"]["values"])


# ---------------------------------------------------------------------------------- losses
def test_losses_are_finite_and_fall_with_training(batch, demo):
    model = make_model(demo["norm_dict"], decoder(aux_loss=False))
    wrapper = ModelWrapper(model, {"initial": 1e-3, "max": 1e-3, "end": 1e-3, "pct_start": 0.1,
                                   "weight_decay": 0.0})  # fmt: skip
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
    history = []
    for _ in range(15):
        _, losses = model(batch["inputs"], batch["valid"], batch["labels"])
        total = wrapper.total_loss(losses)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        history.append({k: v.item() for k, v in losses.items()} | {"total": total.item()})
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    first, last = history[0], history[-1]
    assert set(first) == {"jets_classification", "track_origin", "regression", "object_class_ce",
                          "mask_ce", "mask_dice", "total"}  # fmt: skip
    assert last["total"] < 0.85 * first["total"], (first, last)
    for key in ("object_class_ce", "mask_ce", "mask_dice", "regression"):
        assert last[key] < 0.9 * first[key], (key, first[key], last[key])


def test_total_loss_weights_tasks_and_decoder_terms(batch, demo):
    model = make_model(demo["norm_dict"], task_list=tasks(regression_weight=0.25))
    wrapper = ModelWrapper(model, {"initial": 1e-3, "max": 1e-3, "end": 1e-3, "pct_start": 0.1,
                                   "weight_decay": 0.0})  # fmt: skip
    with torch.no_grad():
        _, losses = model(batch["inputs"], batch["valid"], batch["labels"])
    expected = (
        losses["jets_classification"] + 0.5 * losses["track_origin"] + 0.25 * losses["regression"]
        + losses["object_class_ce"] + losses["mask_ce"] + losses["mask_dice"]
    )  # fmt: skip
    torch.testing.assert_close(wrapper.total_loss(losses), expected)


def test_aux_loss_adds_every_term_per_layer(batch, demo):
    model = make_model(demo["norm_dict"], decoder(num_layers=3, aux_loss=True))
    _, losses = model(batch["inputs"], batch["valid"], batch["labels"])
    terms = ("object_class_ce", "mask_ce", "mask_dice", "regression")
    aux = [k for k in losses if "_layer" in k]
    assert sorted(aux) == sorted(f"{t}_layer{i}" for t in terms for i in range(3))
    assert all(torch.isfinite(losses[k]) for k in aux)
    wrapper = ModelWrapper(model, {"initial": 1e-3, "max": 1e-3, "end": 1e-3, "pct_start": 0.1,
                                   "weight_decay": 0.0})  # fmt: skip
    # an auxiliary regression term takes its task's weight, like the final one
    assert model.loss_weight("regression_layer2") == 0.5
    wrapper.total_loss(losses).backward()
    assert model.mask_decoder.queries.grad is not None


def test_jets_without_tracks(batch, demo):
    """A batch where most jets have no track: losses finite, predictions well formed."""
    model = make_model(demo["norm_dict"], decoder(aux_loss=True))
    drop = torch.ones(len(batch["valid"]["tracks"]), dtype=torch.bool)
    drop[:3] = False
    batch = without_tracks(batch, drop)
    inputs, valid, labels = batch["inputs"], batch["valid"]["tracks"], batch["labels"]
    _, losses = model(inputs, {"tracks": valid}, labels)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    with torch.no_grad():
        predictions = model.predict(inputs, {"tracks": valid})
    probs = predictions["objects"]["probs"]
    assert probs.shape == (len(valid), 5, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(valid), 5))
    assert predictions["objects"]["track_index"].shape == (int(valid.sum()),)


def test_track_index_follows_the_predicted_objects(batch, demo):
    """A track's object index points at a non-null object whose mask holds it; a track outside
    every such mask has -1 (the vertex-finding metrics' objects, made exclusive)."""
    model = make_model(demo["norm_dict"]).eval()
    with torch.no_grad():
        outputs, _, layouts = model.run(batch["inputs"], batch["valid"])
    out, layout = outputs["objects"], layouts["objects"]
    index = model.task_predictions(outputs, layouts, batch["inputs"])["objects"]["track_index"]
    masks, valid = out.padded_masks(layout)
    pred_class, pred_masks = predicted_objects(
        out.objects.class_logits.numpy(), masks.numpy(), valid.numpy()
    )
    index_padded = layout.pad(index[:, None] + 1)[0][..., 0].numpy() - 1  # (B, L), -1 padding
    jets, slots = np.nonzero(valid.numpy())
    owned = index_padded[jets, slots]
    in_any = pred_masks[jets, :, slots].any(-1)
    assert np.array_equal(owned >= 0, in_any)
    held = owned >= 0
    assert pred_masks[jets[held], owned[held], slots[held]].all()
    assert (pred_class[jets[held], owned[held]] != 2).all()


# ---------------------------------------------------------------------------------- config
def test_config_errors_name_the_fix(demo):
    norm = demo["norm_dict"]
    with pytest.raises(SaltError, match=r"num_classes is 3 .* 2 real classes"):
        make_model(norm, decoder(num_classes=3))
    with pytest.raises(SaltError, match=r"needs data\.mf_config"):
        make_model(norm, mf_config=None)
    no_reg = {k: v for k, v in LOSS_WEIGHTS.items() if k != "regression"}
    with pytest.raises(SaltError, match="no 'regression' weight"):
        make_model(norm, decoder(loss_weights=no_reg))
    with pytest.raises(SaltError, match="no task regresses objects"):
        make_model(norm, task_list=tasks(regression=False))
    with pytest.raises(SaltError, match="only a mask_decoder predicts"):
        SaltModel(
            init_nets=[{"input_name": "tracks", "output_size": D, "hidden_layers": [D]}],
            tasks=tasks(),
            encoder=Transformer(D, 1, 2, out_dim=D),
            pool_net=GlobalAttentionPooling(D),
            variables=VARIABLES,
            norm_dict=str(norm),
        )
