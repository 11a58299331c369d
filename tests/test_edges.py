"""Edge features: values, pairs within jets only, the edge-aware encoder in every layout."""

from __future__ import annotations

import math

import pytest
import torch

from salt.errors import SaltError
from salt.models import ClassificationTask, GlobalAttentionPooling, SaltModel, Transformer
from salt.models.edges import EdgeNorm, pair_features
from salt.models.layout import Packed, Padded
from tests.test_models import random_valid
from tests.test_sync_free import packed, step

D, E = 16, 8
TRACKS = ["pt", "eta", "phi", "energy", "subjetIndex", "d0"]
FEATURES = ["dR", "kt", "z", "isSelfLoop", "subjetIndex", "mass"]
VARIABLES = {"jets": ["pt", "eta"], "tracks": TRACKS, "flows": ["f1", "f2"]}


# ---------------------------------------------------------------------------------- values
def test_features_match_hand_computation():
    # one jet of three tracks: (pt, eta, phi, energy, subjet)
    tracks = [(10.0, 0.0, 3.0, 12.0, 0), (30.0, 0.5, -3.0, 40.0, 0), (20.0, -0.2, 0.5, 25.0, -1)]
    x = torch.tensor([list(t) for t in tracks])
    layout = Packed(torch.ones(1, 3, dtype=torch.bool))
    i, j = layout.ordered_pairs()
    columns = {"pt": x[:, 0], "eta": x[:, 1], "phi": x[:, 2], "energy": x[:, 3]}
    columns["subjetIndex"] = x[:, 4]
    a = {k: v[i] for k, v in columns.items()}
    b = {k: v[j] for k, v in columns.items()}
    values = pair_features(a, b, i == j, FEATURES)
    assert values.shape == (9, len(FEATURES))

    def expected(p, q):
        (pt1, eta1, phi1, e1, s1), (pt2, eta2, phi2, e2, s2) = tracks[p], tracks[q]
        dphi = phi2 - phi1
        dphi -= 2 * math.pi * round(dphi / (2 * math.pi))  # the short way round
        dr = math.hypot(eta2 - eta1, dphi)
        px = pt1 * math.cos(phi1) + pt2 * math.cos(phi2)
        py = pt1 * math.sin(phi1) + pt2 * math.sin(phi2)
        pz = pt1 * math.sinh(eta1) + pt2 * math.sinh(eta2)
        m2 = max((e1 + e2) ** 2 - px**2 - py**2 - pz**2, 1e-8)
        return [
            math.log(dr) if dr else -math.inf,
            math.log(min(pt1, pt2) * dr) if dr else -math.inf,
            math.log(min(pt1, pt2) / (pt1 + pt2)),
            float(p == q),
            float(s1 == s2 and s1 >= 0),
            0.5 * math.log(m2),
        ]

    for row, (p, q) in enumerate(zip(i.tolist(), j.tolist())):
        torch.testing.assert_close(
            values[row].double(), torch.tensor(expected(p, q), dtype=torch.float64), rtol=1e-5,
            atol=1e-5,
        )  # fmt: skip
    # across the phi = +-pi seam the tracks are close: dphi 2 pi - 6, not -6
    assert values[1, 0] == pytest.approx(0.5 * math.log(0.25 + (2 * math.pi - 6) ** 2), rel=1e-5)
    assert values[1, 4] == 1.0 and values[2, 4] == 0.0 and values[8, 4] == 0.0
    # symmetric features are symmetric
    swap = torch.tensor([0, 3, 6, 1, 4, 7, 2, 5, 8])
    torch.testing.assert_close(values[swap], values)


def test_edge_norm_standardises_continuous_features_once():
    norm = EdgeNorm(["dR", "isSelfLoop", "mass"])
    values = torch.tensor([[-1.0, 1.0, 2.0], [-3.0, 0.0, 4.0], [-math.inf, 0.0, 9.0]])
    valid = torch.tensor([True, True, False])
    norm.eval()
    untrained = norm(values, valid)  # before any training: unscaled, non-finite -> 0
    torch.testing.assert_close(untrained, torch.tensor([[-1.0, 1, 2], [-3, 0, 4], [0, 0, 9]]))
    norm.train()
    out = norm(values, valid)
    # dR: mean -2, std 1 over the valid finite rows; the binary feature passes as it is
    torch.testing.assert_close(norm.mean, torch.tensor([-2.0, 0.0, 3.0]))
    torch.testing.assert_close(norm.std, torch.tensor([1.0, 1.0, 1.0]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0, -1.0], [-1.0, 0.0, 1.0], [0, 0, 6]]))
    # frozen: a second training batch changes nothing, and a reload keeps the statistics
    norm(values * 5, None)
    torch.testing.assert_close(norm.mean, torch.tensor([-2.0, 0.0, 3.0]))
    fresh = EdgeNorm(["dR", "isSelfLoop", "mass"])
    fresh.load_state_dict(norm.state_dict())
    fresh.train()
    fresh(values * 5, None)
    torch.testing.assert_close(fresh.mean, norm.mean)


# ---------------------------------------------------------------------------------- pairs
def test_ordered_pairs_are_within_jets_row_by_row():
    valid = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    layout = Packed(valid, n_ordered_pairs=4 + 16)
    i, j = layout.ordered_pairs()
    # tokens: jet 0 -> 0, 1; jet 1 -> none; jet 2 -> 2..5
    jet0 = [(0, 0), (0, 1), (1, 0), (1, 1)]
    jet2 = [(a, b) for a in range(2, 6) for b in range(2, 6)]
    assert list(zip(i.tolist(), j.tolist())) == jet0 + jet2
    torch.testing.assert_close(layout.pair_index(i, j), torch.arange(20))
    length, jet, cell = layout.pair_slots()
    assert length == 4 and (jet[4].item(), cell[4].item()) == (2, 0)
    assert (jet[7].item(), cell[7].item()) == (2, 0 * 4 + 3)
    mask = Padded(valid).pair_mask()
    assert int(mask.sum()) == 20 and mask.shape == (3, 4, 4)


# ---------------------------------------------------------------------------------- model
def edge_model(types=("tracks",), registers=0, update=True, attention="packed", **encoder):
    torch.manual_seed(4)
    variables = {"jets": VARIABLES["jets"], **{t: VARIABLES[t] for t in types}}
    tasks = [
        ClassificationTask(
            "jets_classification",
            "jets",
            "flavour_label",
            {"input_size": 8},
            class_names=["hbb", "top", "qcd"],
        ),
        ClassificationTask(
            "track_origin",
            "tracks",
            "ftagTruthOriginLabel",
            {"input_size": 8, "context_size": 8, "hidden_layers": [8]},
        ),
    ]
    return SaltModel(
        init_nets=[{"input_name": t, "output_size": D, "hidden_layers": [D]} for t in types],
        tasks=tasks,
        encoder=Transformer(
            D,
            2,
            4,
            out_dim=8,
            edge_embed_dim=E,
            update_edges=update,
            num_registers=registers,
            **encoder,
        ),
        pool_net=GlobalAttentionPooling(8),
        variables=variables,
        attention=attention,
        edge_features={"tracks": FEATURES},
        edge_init_nets=[{"input_name": "tracks", "output_size": E, "hidden_layers": [E]}],
    )


def edge_batch(types=("tracks",), n_jets=6, slots=7):
    """Massless tracks with physical kinematics; holes in the slots, a jet without tracks."""
    torch.manual_seed(5)
    inputs = {"jets": torch.randn(n_jets, 2)}
    valid = {t: random_valid(n_jets, slots, holes=True) for t in types}
    valid["tracks"][3] = False
    pt = 1e3 * torch.exp(torch.randn(n_jets, slots))
    eta = 0.4 * torch.randn(n_jets, slots)
    phi = (torch.rand(n_jets, slots) * 2 - 1) * math.pi
    subjet = torch.randint(-1, 3, (n_jets, slots)).float()
    d0 = torch.randn(n_jets, slots)
    inputs["tracks"] = torch.stack([pt, eta, phi, pt * torch.cosh(eta), subjet, d0], -1)
    if "flows" in types:
        inputs["flows"] = torch.randn(n_jets, slots, 2)
    n = int(valid["tracks"].sum())
    labels = {
        "jets": {"flavour_label": torch.randint(0, 3, (n_jets,))},
        "tracks": {"ftagTruthOriginLabel": torch.randint(0, 8, (n,))},
    }
    return inputs, valid, labels


CASES = {
    "tracks": {"types": ("tracks",)},
    "tracks-registers": {"types": ("tracks",), "registers": 2},
    "two-types-registers": {"types": ("tracks", "flows"), "registers": 1},
    "fixed-edges-hybrid": {"types": ("tracks", "flows"), "update": False, "norm_type": "hybrid"},
}


@pytest.mark.parametrize("case", CASES)
def test_packed_padded_and_one_jet_at_a_time_agree(case):
    options = CASES[case]
    types = options["types"]
    model = edge_model(**options)
    inputs, valid, labels = edge_batch(types)
    model.train()
    model(packed(inputs, valid), valid, labels)  # the first training batch fixes the edge norm
    model.eval()
    out, _ = model(packed(inputs, valid), valid)
    assert torch.isfinite(out["jets_classification"]).all()
    padded_model = edge_model(**options, attention="padded")
    padded_model.load_state_dict(model.state_dict())
    padded_model.eval()
    padded, _ = padded_model(inputs, valid)
    for task in ("jets_classification", "track_origin"):
        torch.testing.assert_close(padded[task], out[task], rtol=1e-4, atol=1e-5)
    # the export path: one jet, every slot a real constituent
    start = 0
    for b in range(6):
        one = {"jets": inputs["jets"][b : b + 1]}
        for name in types:
            one[name] = inputs[name][b : b + 1, valid[name][b]]
        if not one["tracks"].shape[1] and not options.get("registers") and len(types) == 1:
            continue  # nothing to attend to: such a jet is not exported
        single, _ = model(one)
        torch.testing.assert_close(
            single["jets_classification"][0], out["jets_classification"][b], rtol=1e-4, atol=1e-5
        )
        n = int(valid["tracks"][b].sum())
        torch.testing.assert_close(
            single["track_origin"][0], out["track_origin"][start : start + n], rtol=1e-4, atol=1e-5
        )
        start += n


def test_edge_statistics_come_from_valid_pairs_in_both_layouts():
    inputs, valid, labels = edge_batch()
    models = {a: edge_model(attention=a).train() for a in ("packed", "padded")}
    models["packed"](packed(inputs, valid), valid, labels)
    models["padded"](inputs, valid, labels)
    norms = {a: m.edges.nets["tracks"].norm for a, m in models.items()}
    # by hand: every ordered pair of valid tracks of each jet
    rows = []
    for b in range(6):
        x = inputs["tracks"][b, valid["tracks"][b]]
        for p in range(len(x)):
            for q in range(len(x)):
                cols = lambda t: {v: t[TRACKS.index(v)] for v in ("pt", "eta", "phi", "energy")}  # noqa: E731
                a, c = cols(x[p]), cols(x[q])
                a["subjetIndex"], c["subjetIndex"] = x[p, 4], x[q, 4]
                rows.append(pair_features(a, c, torch.tensor(p == q), FEATURES))
    rows = torch.stack(rows)
    for k, name in enumerate(FEATURES):
        column = rows[:, k][torch.isfinite(rows[:, k])]
        scaled = name not in ("isSelfLoop", "subjetIndex")
        mean = column.mean() if scaled else torch.tensor(0.0)
        std = column.std(unbiased=False) if scaled else torch.tensor(1.0)
        for norm in norms.values():
            torch.testing.assert_close(norm.mean[k], mean, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(norm.std[k], std, rtol=1e-4, atol=1e-4)


def test_edges_are_sum_of_n_squared_and_registers_start_at_zero():
    model = edge_model(registers=2).eval()
    inputs, valid, _ = edge_batch()
    seen = []
    hook = model.encoder.layers[0].attn.edge_proj.register_forward_hook(
        lambda m, args, out: seen.append(args[0])
    )
    model(packed(inputs, valid), valid)
    hook.remove()
    n = valid["tracks"].sum(1)
    assert seen[0].shape == (int(((n + 2) ** 2).sum()), E)  # never B x T^2
    # the edges of a pair with a register start from zero; track pairs carry their embedding
    _, _, tokens, layouts, raw = model._embed(packed(inputs, valid), valid)
    _, merged, where, _, _ = model._merge(tokens, layouts, valid)
    edges = model.edges(raw, layouts, merged, where)
    i, j = merged.ordered_pairs()
    tracks = torch.zeros(merged.n_tokens, dtype=torch.bool)
    tracks[where["tracks"]] = True
    both = tracks[i] & tracks[j]
    assert torch.equal(edges[~both], torch.zeros_like(edges[~both]))
    own = model.edges.nets["tracks"].packed(raw["tracks"], layouts["tracks"])
    torch.testing.assert_close(edges[both], own)
    # registers see the tracks: a jet's register output moves with its tracks
    moved = {**inputs, "tracks": inputs["tracks"].clone()}
    moved["tracks"][0, :, 5] += 1.0
    a, _ = model(packed(inputs, valid), valid)
    b, _ = model(packed(moved, valid), valid)
    assert not torch.allclose(a["jets_classification"][0], b["jets_classification"][0])
    torch.testing.assert_close(a["jets_classification"][1:], b["jets_classification"][1:])


def test_gradient_reaches_the_edge_networks():
    model = edge_model(types=("tracks", "flows"), registers=1).train()
    inputs, valid, labels = edge_batch(("tracks", "flows"))
    _, losses = model(packed(inputs, valid), valid, labels)
    sum(losses.values()).backward()
    edge_params = dict(model.edges.named_parameters())
    for depth, layer in enumerate(model.encoder.layers):
        for name, p in layer.named_parameters():
            if name.startswith(("attn.edge_", "edge_norm")):
                edge_params[f"layer{depth}.{name}"] = p
    # the edge net's two layers; per layer the bias/gate projection and the norm, and the
    # update projection in all but the last layer (whose edges would go nowhere)
    assert len(edge_params) == 4 + 2 * 4 + 2
    assert model.encoder.layers[-1].attn.edge_out is None
    for name, p in edge_params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_edge_step_is_sync_free():
    inputs, valid, labels = edge_batch(("tracks", "flows"))
    model = edge_model(types=("tracks", "flows"), registers=2)
    assert step(model, packed(inputs, valid), valid, labels) == []
    for registers in (0, 1):  # one type alone, and with salt-ml's one register
        inputs, valid, labels = edge_batch()
        model = edge_model(registers=registers)
        assert step(model, packed(inputs, valid), valid, labels) == []


# ---------------------------------------------------------------------------------- errors
def build(edge_features=None, edge_init_nets=None, tracks=TRACKS, edge_dim=E):
    return SaltModel(
        init_nets=[{"input_name": "tracks", "output_size": D}],
        tasks=[],
        encoder=Transformer(D, 1, 2, out_dim=8, edge_embed_dim=edge_dim),
        pool_net=GlobalAttentionPooling(8),
        variables={"jets": ["pt"], "tracks": tracks},
        edge_features=edge_features,
        edge_init_nets=edge_init_nets,
    )


NET = [{"input_name": "tracks", "output_size": E}]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"edge_features": {"tracks": ["mass"]}, "edge_init_nets": NET,
             "tracks": ["pt", "eta", "phi"]},
            r"edge feature 'mass' needs tracks variable 'energy': add it to data\.variables\.tr",
        ),
        (
            {"edge_features": {"tracks": ["kt"]}, "edge_init_nets": NET, "tracks": ["pt", "d0"]},
            r"edge feature 'kt' needs tracks variables 'eta', 'phi'",
        ),
        (
            {"edge_features": {"tracks": ["angle"]}, "edge_init_nets": NET},
            r"edge feature 'angle' of 'tracks' is unknown; choose from dR, kt",
        ),
        ({"edge_init_nets": NET}, r"no edge features of 'tracks' are computed"),
        ({"edge_features": {"tracks": ["dR"]}}, r"have no edge init net"),
        ({}, r"edge_embed_dim 8 but the model has no edge init nets"),
        (
            {"edge_features": {"tracks": ["dR"]}, "edge_init_nets": NET, "edge_dim": 0},
            r"the encoder takes no edges",
        ),
        (
            {"edge_features": {"tracks": ["dR"]},
             "edge_init_nets": [{"input_name": "tracks", "output_size": 4}]},
            r"output_size 4 but the encoder's edge_embed_dim is 8",
        ),
    ],
    ids=["mass", "kt", "unknown", "no-features", "no-net", "no-edges", "no-dim", "size"],
)  # fmt: skip
def test_edge_configuration_errors(kwargs, match):
    with pytest.raises(SaltError, match=match):
        build(**kwargs)


def test_update_edges_needs_edges():
    with pytest.raises(ValueError, match="update_edges needs edges"):
        Transformer(D, 1, 2, update_edges=True)


# ---------------------------------------------------------------------------------- export
def test_edge_model_exports_to_onnx_with_parity_at_several_track_counts():
    import onnxruntime as ort

    from salt.export.outputs import output_plan
    from salt.export.to_onnx import export_bytes
    from salt.export.wrapper import ExportModel

    model = edge_model(registers=1)  # salt-ml's default register: a jet may have no track
    inputs, valid, labels = edge_batch(n_jets=8, slots=12)
    model.train()
    model(packed(inputs, valid), valid, labels)  # fixes the edge norm
    model.eval()
    reference, _ = model(packed(inputs, valid), valid)
    probs = torch.softmax(reference["jets_classification"], -1)
    export = ExportModel(model, output_plan(model, "GN2XE"))
    example = {
        "jet_features": inputs["jets"][:1].numpy(),
        "track_features": inputs["tracks"][0, valid["tracks"][0]].numpy(),
    }
    session = ort.InferenceSession(export_bytes(export, example))
    first = export.plan.names[:3]
    assert first == ["GN2XE_phbb", "GN2XE_ptop", "GN2XE_pqcd"]
    counts = set()
    for b in range(8):
        tracks = inputs["tracks"][b, valid["tracks"][b]].numpy()
        counts.add(len(tracks))
        out = session.run(first, {"jet_features": inputs["jets"][b : b + 1].numpy(),
                                  "track_features": tracks})  # fmt: skip
        torch.testing.assert_close(
            torch.tensor([o.item() for o in out]), probs[b], rtol=1e-4, atol=1e-5
        )
    assert 0 in counts and len(counts) >= 4
