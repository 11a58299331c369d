"""The demo datasets agree with each other, and their physics is learnable by a simple cut."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (LZ4)
import numpy as np
import pytest

import salt.demo as demo

CLASSES = ["ghostbjets", "ghostcjets", "ghostsjets", "ghostudjets", "ghostgjets", "ghosttaujets"]
B, C, S, UD, G, TAU = range(6)
PILEUP, FAKE, PRIMARY, FROM_B, FROM_BC, FROM_C, FROM_TAU, OTHER_SECONDARY = range(8)
GHOST_TYPE = {0: 0, 1: 1, 2: 2, 3: 3, 5: 4, 6: 5}  # |tracks_ghost type| -> tracks type


def auc(signal: np.ndarray, background: np.ndarray) -> float:
    """Probability that a random signal entry scores above a random background one (ties 1/2)."""
    scores = np.concatenate([signal, background]).astype(np.float64)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts  # entries with a lower score
    ranks = (below + (counts + 1) / 2)[inverse]
    n_s, n_b = len(signal), len(background)
    return (ranks[:n_s].sum() - n_s * (n_s + 1) / 2) / (n_s * n_b)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("physics")
    paths = demo.write_demo_dataset(out, num_jets=8000, seed=11, classes=",".join(CLASSES))
    with h5py.File(paths["train"], "r") as f:
        return {k: f[k][:] for k in f}


def test_truth_hadrons_match_tracks(data):
    jets, tracks, had = data["jets"], data["tracks"], data["truth_hadrons"]
    label, valid = jets["flavour_label"], had["valid"]
    # b jets: the B and its cascade charm; c jets: the charm hadron; others: none
    np.testing.assert_array_equal(valid.sum(axis=1), np.select([label == B, label == C], [2, 1]))
    np.testing.assert_array_equal(had["flavour"][label == B][:, :2], [[5, 4]] * (label == B).sum())
    assert np.all(had["flavour"][label == C][:, 0] == 4)
    assert np.all(had["barcode"][~valid] == -1)
    assert np.all(np.isnan(had["pt"][~valid]))
    heavy = (label == B) | (label == C)
    np.testing.assert_allclose(had["pt"][heavy, 0], jets["HadronConeExclTruthLabelPt"][heavy])
    np.testing.assert_allclose(had["Lxy"][heavy, 0], jets["HadronConeExclTruthLabelLxy"][heavy])
    mass = had["mass"][valid]
    assert np.all(((mass > 5000) & (mass < 5700)) | ((mass > 1800) & (mass < 2300)))
    # the cascade charm decays downstream of its B
    b_jets = label == B
    assert np.all(had["Lxy"][b_jets, 1] >= 0)
    assert np.mean(had["Lxy"][b_jets, 1] > had["Lxy"][b_jets, 0]) > 0.8

    for trk in (tracks, data["tracks_ghost"]):
        ok = trk["valid"]
        origin, parent = trk["ftagTruthOriginLabel"], trk["ftagTruthParentBarcode"]
        vertex = trk["ftagTruthVertexIndex"]
        from_hadron = ok & ((origin == FROM_B) | (origin == FROM_BC) | (origin == FROM_C))
        assert np.all(parent[from_hadron] > 0)
        assert np.all(parent[ok & ~from_hadron] == -1)
        # each track's parent is a hadron of its jet, of the flavour its origin says
        match = parent[:, :, None] == np.where(valid, had["barcode"], -2)[:, None, :]
        assert np.all(match.sum(axis=2)[from_hadron] == 1)
        flavour = (match * had["flavour"][:, None, :]).sum(axis=2)
        assert np.all(flavour[ok & (origin == FROM_B)] == 5)
        assert np.all(flavour[ok & ((origin == FROM_BC) | (origin == FROM_C))] == 4)
        # the tracks of one hadron share one vertex index, different hadrons different ones
        for j in np.flatnonzero(from_hadron.any(axis=1))[:500]:
            sel = from_hadron[j]
            pairs = set(zip(parent[j][sel].tolist(), vertex[j][sel].tolist()))
            assert len(pairs) == len({p for p, _ in pairs}) == len({v for _, v in pairs})


def test_tracks_ghost_extends_tracks(data):
    jets, tracks, ghost = data["jets"], data["tracks"], data["tracks_ghost"]
    n_ghost = ghost["valid"].sum(axis=1)
    assert np.all(n_ghost >= jets["n_tracks"])
    assert n_ghost.mean() > jets["n_tracks"].mean() + 0.5
    same = ["d0", "z0SinTheta", "pt", "ftagTruthOriginLabel", "ftagTruthVertexIndex"]
    for j in range(300):
        tight = {tuple(r) for r in tracks[j][tracks[j]["valid"]][same].tolist()}
        loose = {tuple(r) for r in ghost[j][ghost[j]["valid"]][same].tolist()}
        assert tight <= loose
        assert {r[3] for r in loose - tight} <= {PILEUP, FAKE}  # extras: pileup and fakes
    # GN3 type convention: signed like the PDG id, |value| a type of the tracks' convention
    t_type = tracks["ftagTruthTypeLabel"][tracks["valid"]]
    g_type = ghost["ftagTruthTypeLabel"][ghost["valid"]]
    assert set(np.unique(t_type)) == set(range(6))
    assert set(np.unique(g_type)) == {-6, -5, -3, -2, 0, 1, 2, 3, 5, 6}
    ok = ghost["valid"]
    charge = np.sign(ghost["qOverP"])
    lepton = ok & (np.abs(ghost["leptonID"]) > 0) & (np.abs(ghost["ftagTruthTypeLabel"]) >= 5)
    np.testing.assert_array_equal(np.sign(ghost["ftagTruthTypeLabel"][lepton]), -charge[lepton])
    hadron = (
        ok & (np.abs(ghost["ftagTruthTypeLabel"]) >= 2) & (np.abs(ghost["ftagTruthTypeLabel"]) <= 3)
    )
    np.testing.assert_array_equal(np.sign(ghost["ftagTruthTypeLabel"][hadron]), charge[hadron])


def test_track_variables(data):
    tracks = data["tracks"]
    ok = tracks["valid"]
    assert np.all(tracks["subjetIndex"] == -1)  # small-R jets have no subjets
    for name in ("numberOfPixelHoles", "numberOfSCTHoles"):
        holes = tracks[name][ok]
        assert 0.9 < (holes == 0).mean() < 1.0, name
    fake = ok & (tracks["ftagTruthOriginLabel"] == FAKE)
    assert tracks["numberOfSCTHoles"][fake].mean() > 3 * tracks["numberOfSCTHoles"][ok].mean()
    # absolute kinematics agree with the relative ones and qOverP
    p = tracks["pt"][ok] * np.cosh(tracks["eta"][ok])
    np.testing.assert_allclose(np.abs(tracks["qOverP"][ok]), 1 / p, rtol=1e-4)
    assert np.all(np.abs(tracks["phi"][ok]) <= np.pi)
    lt, ip3d = tracks["lifetimeSignedD0Significance"][ok], tracks["IP3D_signed_d0_significance"][ok]
    assert np.corrcoef(lt, ip3d)[0, 1] > 0.8
    assert (np.sign(lt) == np.sign(ip3d)).mean() > 0.9
    # muon variables: a fixed default off muons, a spectrometer match on identified muons
    muon = ok & (np.abs(tracks["leptonID"]) == 13)
    assert muon.sum() > 100
    assert np.all(tracks["muon_quality"][ok & ~muon] == -1)
    assert set(np.unique(tracks["muon_quality"][muon])) == {0, 1, 2}
    for name in ("muon_qOverPratio", "muon_momentumBalanceSignificance"):
        assert np.all(tracks[name][ok & ~muon] == 0)
    real = muon & (tracks["ftagTruthTypeLabel"] == 5)
    assert abs(np.median(tracks["muon_qOverPratio"][real]) - 1) < 0.02
    assert np.all(tracks["pt"][muon] > 3000)


def test_soft_muon(data):
    jets, tracks = data["jets"], data["tracks"]
    muon = tracks["valid"] & (np.abs(tracks["leptonID"]) == 13)
    has = muon.any(axis=1)
    np.testing.assert_array_equal(np.isfinite(jets["softMuon_pt"]), has)
    for name in [n for n in jets.dtype.names if n.startswith("softMuon_")]:
        assert np.all(np.isnan(jets[name][~has])), name
        assert np.all(np.isfinite(jets[name][has])), name
    hardest = np.where(muon, tracks["pt"], -1).max(axis=1)
    np.testing.assert_array_equal(jets["softMuon_pt"][has], hardest[has])
    label = jets["flavour_label"]
    rate = {k: has[label == k].mean() for k in (B, C, UD)}
    assert rate[B] > 3 * rate[UD]
    assert rate[C] > 2 * rate[UD]
    assert (jets["softMuon_pTrel"][has] <= jets["softMuon_pt"][has]).all()
    # the neutrino of a semileptonic decay is missing from the reconstructed jet
    ratio = jets["ptFromTruthDressedWZJet"] / jets["pt_btagJes"]
    assert ratio[has & (label == B)].mean() > ratio[~has & (label == B)].mean() + 0.04
    assert np.all(jets["ptFromTruthDressedWZJet"] > 0)


def test_electrons(data):
    jets, tracks, el = data["jets"], data["tracks"], data["electrons"]
    ok = el["valid"]
    assert ok.sum() > 500
    assert np.all(np.diff(np.where(ok, el["pt"], -1.0), axis=1)[ok[:, 1:]] <= 0)  # by pt
    # every electron is one of its jet's tracks, with that track's truth labels
    real, fake = [], []
    for j in np.flatnonzero(ok.any(axis=1))[:1000]:
        trk = tracks[j][tracks[j]["valid"]]
        for e in el[j][ok[j]]:
            match = trk[trk["pt"] == e["pt"]]
            assert len(match) == 1
            assert match["ftagTruthOriginLabel"][0] == e["ftagTruthOriginLabel"]
            assert match["ftagTruthVertexIndex"][0] == e["ftagTruthVertexIndex"]
            (real if match["ftagTruthTypeLabel"][0] == 4 else fake).append(e)
    # real electrons look like electrons, hadrons faking them do not
    real, fake = np.array(real), np.array(fake)
    assert min(len(real), len(fake)) > 50
    assert auc(real["eProbabilityHT"], fake["eProbabilityHT"]) > 0.9
    assert auc(-real["Rhad"], -fake["Rhad"]) > 0.9
    origin = el["ftagTruthOriginLabel"][ok]
    for source in (PRIMARY, FROM_B, FROM_BC, FROM_C, OTHER_SECONDARY):
        assert (origin == source).sum() > 10, source
    # conversions come in pairs that share a vertex
    conv = ok & (el["ftagTruthOriginLabel"] == OTHER_SECONDARY)
    shared = [
        np.bincount(el["ftagTruthVertexIndex"][j][conv[j]]).max()
        for j in np.flatnonzero(conv.sum(1) > 1)
    ]
    assert max(shared) == 2
    assert np.all(np.isnan(el["pt"][~ok]))
    assert np.all(el["ftagTruthOriginLabel"][~ok] == -1)
    assert (ok.sum(axis=1)[jets["flavour_label"] == B]).mean() > ok.sum(axis=1).mean()


def test_flows(data):
    jets, tracks, flows = data["jets"], data["tracks"], data["flows"]
    ok = flows["valid"]
    charged = ok & (flows["isCharged"] == 1)
    neutral = ok & (flows["isCharged"] == 0)
    not_pileup = tracks["valid"] & (tracks["ftagTruthOriginLabel"] != PILEUP)
    full = ok.sum(axis=1) < 40
    np.testing.assert_array_equal(charged.sum(axis=1)[full], not_pileup.sum(axis=1)[full])
    assert neutral.sum(axis=1).mean() > 3
    assert np.all(flows["energy"][ok] >= flows["pt"][ok] * np.cosh(0) * 0.999)
    assert np.all(np.diff(np.where(ok, flows["pt"], -1.0), axis=1)[ok[:, 1:]] <= 0)
    assert set(np.unique(flows["isCharged"][~ok])) == {-1}
    total = np.where(ok, flows["pt"], 0).sum(axis=1) / jets["pt_btagJes"]
    assert 0.7 < np.median(total) < 1.3
    label = jets["flavour_label"]
    assert neutral.sum(axis=1)[label == G].mean() > neutral.sum(axis=1)[label == UD].mean()


def test_learnable_physics(data):
    jets, tracks = data["jets"], data["tracks"]
    ok, label = tracks["valid"], jets["flavour_label"]
    light = (label == S) | (label == UD) | (label == G)
    displaced = (ok & (tracks["IP3D_signed_d0_significance"] > 3)).sum(axis=1)
    assert auc(displaced[label == B], displaced[light]) > 0.8
    # s jets: K0s/Lambda pairs (one vertex index per pair) and kaons
    origin, vertex = tracks["ftagTruthOriginLabel"], tracks["ftagTruthVertexIndex"]
    v0 = ok & (origin == OTHER_SECONDARY)
    v0_count = np.array([len(np.unique(vertex[j][v0[j]])) for j in range(len(jets))])
    assert auc(v0_count[label == S], v0_count[label == UD]) > 0.6
    kaons = (ok & (tracks["ftagTruthTypeLabel"] == 3)).sum(axis=1)
    assert auc(kaons[label == S], kaons[label == UD]) > 0.7
    # g jets: more tracks, wider
    n = jets["n_tracks"]
    assert auc(n[label == G], n[label == UD]) > 0.65
    width = np.nanmean(np.where(ok, np.hypot(tracks["deta"], tracks["dphi"]), np.nan), axis=1)
    assert auc(width[label == G], width[label == UD]) > 0.6
    # the charge of the B-decay tracks tells b from anti-b (jets_charge)
    pdg = jets["HadronGhostInitialTruthLabelPdgId"]
    anti_b = np.where(np.abs(pdg) > 1000, pdg < 0, pdg > 0)
    from_b = ok & ((origin == FROM_B) | (origin == FROM_BC))
    charge = np.where(from_b, np.sign(tracks["qOverP"]), 0).sum(axis=1)
    b = label == B
    assert auc(charge[b & anti_b], charge[b & ~anti_b]) > 0.65
    # tau jets: 1 or 3 prongs with the tau's charge
    tau = ok & (origin == FROM_TAU)
    prongs = tau.sum(axis=1)[label == TAU]
    assert set(np.unique(prongs)) <= {0, 1, 2, 3}
    tau_charge = np.where(tau, np.sign(tracks["qOverP"]), 0).sum(axis=1)
    one_prong = (label == TAU) & (tau.sum(axis=1) == 1)
    np.testing.assert_array_equal(tau_charge[one_prong], -np.sign(pdg[one_prong]))


def test_b_quark_sign_follows_the_pdg_id(tmp_path: Path):
    # B+ (521) holds an anti-b: its decay tracks add up to +1 when none is lost
    paths = demo.write_demo_dataset(tmp_path, num_jets=4000, seed=4, classes="Bplusmeson,ujets")
    with h5py.File(paths["train"], "r") as f:
        jets, tracks = f["jets"][:], f["tracks"][:]
    b = jets["flavour_label"] == 0
    origin = tracks["ftagTruthOriginLabel"]
    from_b = tracks["valid"] & ((origin == FROM_B) | (origin == FROM_BC))
    charge = np.where(from_b, np.sign(tracks["qOverP"]), 0).sum(axis=1)
    pdg = jets["HadronConeExclTruthLabelPdgId"]
    assert set(np.unique(np.abs(pdg[b]))) == {521}
    agree = (np.sign(charge[b]) == np.sign(pdg[b])).mean()
    disagree = (np.sign(charge[b]) == -np.sign(pdg[b])).mean()
    assert agree > 0.5 > disagree
