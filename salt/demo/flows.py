"""Particle-flow constituents: charged flows that follow the tracks, and neutral ones.

A charged flow object is a track from the hard scatter (pileup tracks are removed, as charged
hadron subtraction does), with the track's momentum and direction and a pion's energy. Neutral
flows are calorimeter clusters: photons from pi0 decays (most of them) and neutral hadrons (K0L,
neutrons), each close to a charged particle of the jet, with about its momentum. A jet lists its
flows by decreasing pt; those beyond the slots are dropped.
"""

from __future__ import annotations

import numpy as np

from salt.demo.tracks import PILEUP, Tracks, track_energy
from salt.demo.writer import Arena, DatasetSpec, pack, pad

NEUTRAL_HADRON_FRACTION = 0.2
NEUTRAL_HADRON_MASS = np.array([497.6, 939.6])  # MeV: K0L, neutron
NEUTRAL_MIN_PT = 500.0  # MeV
NEUTRAL_SPREAD = 0.05  # angle between a neutral flow and the charged one it travels with


def spec(name: str, slots: int, prefix: str) -> DatasetSpec:
    """``flows`` (GN3, ``prefix=""``) or ``flow`` (GN2X, ``prefix="flow_"``) with ``slots``."""
    floats = [f"{prefix}{v}" for v in ("pt", "energy", "deta", "dphi")]
    dtype = np.dtype(
        [*[(v, "<f4") for v in floats], (f"{prefix}isCharged", "|i1"), ("valid", "|b1")]
    )
    return DatasetSpec(name, dtype, slots, (*floats, f"{prefix}isCharged"))


def flows(
    rng: np.random.Generator,
    trk: Tracks,
    jet_pt: np.ndarray,
    jet_eta: np.ndarray,
    num_neutral: np.ndarray,
    out: DatasetSpec,
    arena: Arena | None = None,
    cone: float = 0.45,
) -> np.ndarray:
    """Flows ``(n, slots)`` of jets with pt and eta ``(n,)``; Poisson(``num_neutral``) neutrals.

    Charged flows come from the ``tracks`` (not ``tracks_ghost``) that are not pileup. Each
    neutral flow sits near a charged one of its jet (pi0 photons travel with the charged pions),
    so neutrals follow the jet's structure, subjets included; ``cone`` bounds their angles.
    """
    t = trk.packed
    charged = np.flatnonzero(~trk.loose & (t["ftagTruthOriginLabel"] != PILEUP))
    n = len(jet_pt)
    per_jet = np.bincount(trk.jet[charged], minlength=n)
    first = np.cumsum(per_jet) - per_jet
    count = np.where(per_jet > 0, rng.poisson(num_neutral), 0)
    jet = np.repeat(np.arange(n), count)
    m = len(jet)
    normal = rng.standard_normal((2, m))
    seed = charged[first[jet] + (rng.random(m) * per_jet[jet]).astype(np.int64)]
    pt = np.minimum(NEUTRAL_MIN_PT + t["pt"][seed] * rng.standard_exponential(m), jet_pt[jet])
    deta = t["deta"][seed] + NEUTRAL_SPREAD * normal[0]
    dphi = t["dphi"][seed] + NEUTRAL_SPREAD * normal[1]
    dr = np.hypot(deta, dphi) + 1e-9
    shrink = cone * np.tanh(dr / cone) / dr  # inside the jet, as the tracks
    deta, dphi = deta * shrink, dphi * shrink
    p = pt * np.cosh(jet_eta[jet] + deta)
    hadron = rng.random(m) < NEUTRAL_HADRON_FRACTION
    mass = np.where(hadron, NEUTRAL_HADRON_MASS[(rng.random(m) < 0.5).astype(int)], 0.0)

    pre = out.dtype.names[0][: -len("pt")]
    cols = {
        f"{pre}pt": np.concatenate([t["pt"][charged], pt]),
        f"{pre}energy": np.concatenate(
            [track_energy(t["pt"][charged], t["eta"][charged]), np.sqrt(p**2 + mass**2)]
        ),
        f"{pre}deta": np.concatenate([t["deta"][charged], deta]),
        f"{pre}dphi": np.concatenate([t["dphi"][charged], dphi]),
        f"{pre}isCharged": np.concatenate([np.ones(len(charged), np.int8), np.zeros(m, np.int8)]),
        "valid": True,
    }
    all_jets = np.concatenate([trk.jet[charged], jet])
    order = np.argsort(all_jets + 0.5 / (1.0 + cols[f"{pre}pt"] / 1e3), kind="stable")
    packed = pack(cols, order, out.dtype, arena, out.name)
    return pad(packed, all_jets[order], n, out.slots, out, arena)
