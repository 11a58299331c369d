"""Leptons in jets: the jet's soft muon (``softMuon_*``) and the ``electrons`` dataset.

Both come from the jet's tracks. Most real leptons in a jet come from semileptonic b and c decays
(and, for electrons, photon conversions); hadrons that decay in flight, punch through to the muon
spectrometer or leave an electron-like shower fake the rest. Real and fake candidates differ the
way they do in ATLAS: the muon-spectrometer match, TRT high-threshold probability, shower shapes,
E/p and hadronic leakage.
"""

from __future__ import annotations

import numpy as np

from salt.demo.tracks import ELECTRON, OTHER_SECONDARY, Tracks
from salt.demo.writer import Arena, DatasetSpec, pack, pad

SOFT_MUON_VARS = (
    "softMuon_pt", "softMuon_dR", "softMuon_eta", "softMuon_phi", "softMuon_qOverPratio",
    "softMuon_momentumBalanceSignificance", "softMuon_scatteringNeighbourSignificance",
    "softMuon_pTrel", "softMuon_ip3dD0", "softMuon_ip3dZ0", "softMuon_ip3dD0Significance",
    "softMuon_ip3dZ0Significance", "softMuon_ip3dD0Uncertainty", "softMuon_ip3dZ0Uncertainty",
)  # fmt: skip

ELECTRON_INPUTS = (
    "pt", "ptfrac", "ptrel", "dr", "abs_eta", "eta", "phi", "ftag_et", "qOverP",
    "d0RelativeToBeamspot", "d0RelativeToBeamspotSignificance",
    "ftag_z0AlongBeamspotSignificance", "ftag_ptVarCone30OverPt", "numberOfPixelHits",
    "numberOfSCTHitsInclDead", "ftag_deltaPOverP", "eProbabilityHT", "deltaEta1",
    "deltaPhiRescaled2", "ftag_energyOverP", "Rhad", "Rhad1", "Eratio", "weta2", "Rphi", "Reta",
    "wtots1", "f1", "f3",
)  # fmt: skip
_ELECTRON_INTS = ("numberOfPixelHits", "numberOfSCTHitsInclDead")
ELECTRON_DTYPE = np.dtype(
    [
        *[(n, "|u1" if n in _ELECTRON_INTS else "<f4") for n in ELECTRON_INPUTS],
        ("valid", "|b1"),
        ("ftagTruthOriginLabel", "<i4"),
        ("ftagTruthVertexIndex", "<i4"),
    ]
)
NUM_ELECTRON_SLOTS = 10
ELECTRON_SPEC = DatasetSpec(
    "electrons", ELECTRON_DTYPE, NUM_ELECTRON_SLOTS, ELECTRON_INPUTS, ("ftagTruthOriginLabel",)
)
ELECTRON_MIN_PT = 2000.0  # MeV
FAKE_ELECTRON_RATE = 0.015  # of hadron tracks above ELECTRON_MIN_PT
# (real, fake) means and widths of the calorimeter and TRT variables
_SHOWER = {
    "eProbabilityHT": ((0.75, 0.12), (0.12, 0.08)),
    "deltaEta1": ((0.0, 0.002), (0.0, 0.008)),
    "deltaPhiRescaled2": ((0.0, 0.004), (0.0, 0.015)),
    "Rhad": ((0.005, 0.01), (0.25, 0.15)),
    "Eratio": ((0.9, 0.05), (0.5, 0.25)),
    "weta2": ((0.0100, 0.0008), (0.0125, 0.0018)),
    "Rphi": ((0.95, 0.02), (0.80, 0.08)),
    "Reta": ((0.95, 0.02), (0.85, 0.06)),
    "wtots1": ((2.0, 0.5), (3.2, 1.0)),
    "f1": ((0.25, 0.08), (0.20, 0.12)),
    "f3": ((0.01, 0.01), (0.04, 0.04)),
}


def soft_muons(jets: np.ndarray, trk: Tracks) -> None:
    """Fill ``softMuon_*`` of ``jets`` from each jet's hardest identified muon; NaN if none."""
    t = trk.packed
    cand = np.flatnonzero(~trk.loose & (np.abs(t["leptonID"]) == 13))
    for name in SOFT_MUON_VARS:
        jets[name] = np.nan
    if len(cand) == 0:
        return
    # the hardest muon of each jet: sort by jet, then decreasing pt, take the first
    cand = cand[np.lexsort((-t["pt"][cand], trk.jet[cand]))]
    jet, first = np.unique(trk.jet[cand], return_index=True)
    mu = t[cand[first]]
    dr = np.hypot(mu["deta"], mu["dphi"])
    values = {
        "softMuon_pt": mu["pt"],
        "softMuon_dR": dr,
        "softMuon_eta": mu["eta"],
        "softMuon_phi": mu["phi"],
        "softMuon_qOverPratio": mu["muon_qOverPratio"],
        "softMuon_momentumBalanceSignificance": mu["muon_momentumBalanceSignificance"],
        "softMuon_scatteringNeighbourSignificance": mu["muon_scatteringNeighbourSignificance"],
        "softMuon_pTrel": mu["pt"] * np.sin(dr),
        "softMuon_ip3dD0": mu["d0"],
        "softMuon_ip3dZ0": mu["z0SinTheta"],
        "softMuon_ip3dD0Significance": mu["IP3D_signed_d0_significance"],
        "softMuon_ip3dZ0Significance": mu["IP3D_signed_z0_significance"],
        "softMuon_ip3dD0Uncertainty": trk.sigma_d0[cand[first]],
        "softMuon_ip3dZ0Uncertainty": trk.sigma_z0[cand[first]],
    }
    for name, v in values.items():
        jets[name][jet] = v


def electrons(
    rng: np.random.Generator, trk: Tracks, jet_pt: np.ndarray, arena: Arena | None = None
) -> np.ndarray:
    """The ``electrons`` dataset ``(n, 10)``: real electrons and fakes among the jet's tracks.

    Each electron carries its track's truth origin and vertex index (conversion pairs share one),
    so the electron origin and vertexing tasks are consistent with the tracks'.
    """
    t = trk.packed
    tight = ~trk.loose & (t["pt"] > ELECTRON_MIN_PT)
    real_e = trk.type_label == ELECTRON
    u = rng.random(len(t))
    # reconstruction: a real electron's cluster is found, a hadron's shower rarely looks like one
    conversion = t["ftagTruthOriginLabel"] == OTHER_SECONDARY
    take = tight & np.where(real_e, u < np.where(conversion, 0.6, 0.8), u < FAKE_ELECTRON_RATE)
    idx = np.flatnonzero(take)
    e, real, m = t[idx], real_e[idx], len(idx)
    normal = rng.standard_normal((len(_SHOWER) + 6, m))
    jet = trk.jet[idx]

    dr = np.hypot(e["deta"], e["dphi"])
    cols: dict[str, np.ndarray] = {
        "pt": e["pt"],
        "ptfrac": e["pt"] / jet_pt[jet],
        "ptrel": e["pt"] * np.sin(dr),
        "dr": dr,
        "abs_eta": np.abs(e["eta"]),
        "eta": e["eta"],
        "phi": e["phi"],
        # the cluster keeps a real electron's energy (brem included), a hadron deposits part
        "ftag_et": e["pt"]
        * np.where(real, 1 + 0.05 * normal[0], np.clip(0.55 + 0.25 * normal[0], 0.05, None)),
        "qOverP": e["qOverP"],
        "d0RelativeToBeamspot": e["d0"],
        "d0RelativeToBeamspotSignificance": e["d0"] / trk.sigma_d0[idx],
        "ftag_z0AlongBeamspotSignificance": e["z0SinTheta"] / trk.sigma_z0[idx],
        # in a jet the cone around the lepton holds much of the jet's charged energy
        "ftag_ptVarCone30OverPt": np.clip(0.45 * jet_pt[jet] - e["pt"], 0.0, None)
        / e["pt"]
        * np.exp(0.3 * normal[1]),
        "numberOfPixelHits": e["numberOfPixelHits"],
        "numberOfSCTHitsInclDead": e["numberOfSCTHits"] + (normal[2] > 1.3),
        "ftag_deltaPOverP": np.where(real, rng.beta(2, 5, m) * 0.8, np.abs(0.05 * normal[3])),
        "ftag_energyOverP": np.where(
            real,
            np.clip(1 + 0.15 * normal[4], 0.3, None),
            np.clip(0.5 + 0.3 * normal[4], 0.02, None),
        ),
    }
    for i, (name, ((mr, sr), (mf, sf))) in enumerate(_SHOWER.items()):
        cols[name] = np.where(real, mr + sr * normal[6 + i], mf + sf * normal[6 + i])
    cols["Rhad1"] = 0.8 * cols["Rhad"] + 0.005 * normal[5]
    cols["eProbabilityHT"] = np.clip(cols["eProbabilityHT"], 0.0, 1.0)
    cols["Eratio"] = np.clip(cols["Eratio"], 0.0, 1.0)
    cols["wtots1"] = np.clip(cols["wtots1"], 0.5, None)
    cols["f3"] = np.abs(cols["f3"])
    cols["valid"] = np.ones(m, dtype=bool)
    cols["ftagTruthOriginLabel"] = e["ftagTruthOriginLabel"]
    cols["ftagTruthVertexIndex"] = e["ftagTruthVertexIndex"]

    # the dumper lists a jet's electrons by decreasing pt
    order = np.argsort(jet + 0.5 / (1.0 + e["pt"] / 1e3), kind="stable")
    packed = pack(cols, order, ELECTRON_DTYPE)
    return pad(packed, jet[order], len(jet_pt), NUM_ELECTRON_SLOTS, ELECTRON_SPEC, arena)
