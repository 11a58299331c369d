"""Subjets of the Xbb demo: variable-radius track jets reconstructed from the tracks' directions."""

from __future__ import annotations

import h5py
import hdf5plugin  # noqa: F401  (LZ4)
import numpy as np
import pytest

import salt.demo as demo
from salt.demo import trackjets

HBB, TOP, QCD = range(3)
PILEUP, FROM_B, FROM_BC, FROM_C = 0, 3, 4, 5
GEV = 1e3


def _cluster(tracks: list[tuple[int, float, float, float]], seeds: list[list[tuple]]):
    """subjetIndex of tracks (jet, deta, dphi, pt GeV) around seeds (deta, dphi, pt GeV)."""
    jet, deta, dphi, pt = (np.array(c) for c in zip(*tracks, strict=True))
    shape = (len(seeds), 3)
    s_eta, s_phi, s_pt = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for j, jet_seeds in enumerate(seeds):
        for k, (e, p, q) in enumerate(jet_seeds):
            s_eta[j, k], s_phi[j, k], s_pt[j, k] = e, p, q * GEV
    return trackjets.subjet_index(deta, dphi, pt * GEV, jet, s_eta, s_phi, s_pt)


def test_radius():
    np.testing.assert_allclose(
        trackjets.vr_radius(np.array([30, 75, 300, 3000]) * GEV), [0.4, 0.4, 0.1, 0.02]
    )


def test_clustering_follows_geometry_not_origin():
    # jet 0: two 1 TeV prongs 0.03 apart, closer than the radius of either (0.05): one subjet
    close = [(0, 0.0, 0.0, 300.0), (0, 0.0, 0.005, 200.0), (0, 0.03, 0.0, 250.0)]
    close += [(0, 0.03, 0.004, 250.0)]
    # jet 1: a hard prong (120 GeV of tracks, R 0.25) and a softer one (50 GeV, R 0.4) 0.6 apart;
    # a track of the soft prong that strays within 0.2 of the hard one joins the hard subjet, a
    # wide-angle one outside both cones belongs to none
    apart = [(1, 0.0, 0.0, 60.0), (1, 0.01, 0.0, 60.0), (1, 0.6, 0.0, 25.0), (1, 0.61, 0.0, 20.0)]
    apart += [(1, 0.2, 0.0, 5.0), (1, -0.9, 0.9, 2.0)]
    # jet 2: one 3 GeV track pair: a track jet below 7 GeV is not kept
    soft = [(2, 0.0, 0.0, 1.5), (2, 0.01, 0.0, 1.5)]
    index = _cluster(
        close + apart + soft,
        [[(0.0, 0.0, 1000.0), (0.03, 0.0, 1000.0)], [(0.6, 0.0, 80.0), (0.0, 0.0, 200.0)],
         [(0.0, 0.0, 5.0)]],
    )  # fmt: skip
    np.testing.assert_array_equal(index[:4], [0, 0, 0, 0])
    # the hard prong (seeded second) leads: index 0; the stray soft-prong track joins it
    np.testing.assert_array_equal(index[4:10], [0, 0, 1, 1, 0, -1])
    np.testing.assert_array_equal(index[10:], [-1, -1])


def test_leftover_tracks_make_a_subjet():
    # a one-prong jet with a hard cluster of radiation 0.7 away: a second subjet, no prong needed
    tracks = [(0, 0.0, 0.0, 80.0), (0, 0.01, 0.0, 40.0), (0, 0.7, 0.0, 9.0), (0, 0.72, 0.0, 6.0)]
    index = _cluster(tracks, [[(0.0, 0.0, 200.0)]])
    np.testing.assert_array_equal(index, [0, 0, 1, 1])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("trackjets")
    paths = demo.write_demo_dataset(out, num_jets=8000, seed=4, classes="hbb,top,qcd", kind="xbb")
    with h5py.File(paths["train"], "r") as f:
        return {"jets": f["jets"][:], "tracks": f["tracks"][:]}


def test_subjets_are_reconstructed(data):
    jets, tracks = data["jets"], data["tracks"]
    ok, index, origin = tracks["valid"], tracks["subjetIndex"], tracks["ftagTruthOriginLabel"]
    label, high = jets["flavour_label"], jets["pt"] > 1.2e6
    subjets = np.stack([(ok & (index == k)).any(axis=1) for k in range(3)]).sum(axis=0)
    # not the prong count: H -> bb jets with one subjet (merged) or three (radiation)
    assert 0.02 < (subjets[label == HBB] == 3).mean() < 0.4
    assert (subjets[(label == HBB) & high] == 1).mean() > (
        subjets[(label == HBB) & ~high] == 1
    ).mean()
    assert (subjets[label == HBB] == 2).mean() > 0.6
    # collimated heavy-flavour decays nearly always land in a subjet; pileup and the wide
    # fragmentation of hard prongs often in none
    hf = ok & ((origin == FROM_B) | (origin == FROM_BC) | (origin == FROM_C))
    assert (index[hf] >= 0).mean() > 0.95
    assert (index[ok & (origin == PILEUP)] == -1).mean() > 0.7
    assert 0.1 < (index[ok] == -1).mean() < 0.5
    # heavy-flavour tracks of both b quarks of an H in one subjet: only where prongs overlap
    prong = np.where(hf, tracks["ftagTruthParentBarcode"] // 60_000, -1)
    both = np.zeros(len(jets), dtype=bool)
    for k in range(3):
        in_k = hf & (index == k)
        both |= (in_k & (prong == 0)).any(axis=1) & (in_k & (prong == 1)).any(axis=1)
    assert both[(label == HBB) & high].mean() > both[(label == HBB) & ~high].mean()


def test_charm_from_w_decays(data):
    jets, tracks = data["jets"], data["tracks"]
    top = jets["flavour_label"] == TOP
    with_c = jets["GhostCHadronsFinalCount"] == 1
    assert 0.4 < with_c[top].mean() < 0.6
    assert set(np.unique(jets["GhostCHadronsFinalCount"][top])) == {0, 1}
    # the c quark decays: charm tracks (not from a B) in those top jets only
    charm = (tracks["valid"] & (tracks["ftagTruthOriginLabel"] == FROM_C)).any(axis=1)
    assert charm[top & with_c].mean() > 0.5
    assert not charm[top & ~with_c].any()
