"""Large-R jets for Xbb tagging: boosted H, W/Z and top decays, and QCD, with their subjets.

A jet is one to three *prongs* (subjets): H -> bb, cc or tautau and W/Z -> qq make two, hadronic
top (b + W -> qq, W -> cs half the time) three, QCD mostly one, sometimes two (gluon splitting,
g -> bb). Two prongs of a particle of mass m and momentum pt open up by about
m / (pt sqrt(z (1 - z))), so the jet mass peaks at 125 (H), 80-91 (W/Z) and 173 GeV (top) and
falls for QCD. Each prong fragments into tracks around its own axis (b and c prongs also decay
at a displaced vertex; taus give 1 or 3 tracks). Each track carries the index of the
variable-radius track jet it was clustered into (`trackjets`: from the measured track
directions, not from the prong it came from), leading subjet first, -1 for none. Labels follow
UPP: ``R10TruthLabel_R22v1`` and the ghost-associated B and C hadron counts (charm from B decays
not counted), as ftag's Xbb flavours cut on them.

Datasets: ``jets`` ``(N,)``, ``tracks`` ``(N, 100)`` and ``flow`` ``(N, 100)`` (GN2X's names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from salt.demo import decays, flows, trackjets
from salt.demo.classes import LIGHT, TAU, B, C, check_classes
from salt.demo.tracks import (
    FAKE,
    PILEUP,
    PRIMARY,
    empty_slots,
    measure,
    track_specs,
)
from salt.demo.writer import Arena, DatasetSpec, Split

NUM_SLOTS = 100  # track and flow slots (GN2X reads 100 of each)
CONE = 1.0  # large-R jet radius
H_MASS, TOP_MASS, W_MASS, Z_MASS = 125.1e3, 172.5e3, 80.4e3, 91.2e3  # MeV

JET_DTYPE = np.dtype(
    [
        ("pt", "<f4"),
        ("eta", "<f4"),
        ("mass", "<f4"),
        ("n_tracks", "<i4"),
        ("R10TruthLabel_R22v1", "<i4"),
        ("R10TruthLabel_R22v1_TruthJetPt", "<f4"),
        ("R10TruthLabel_R22v1_TruthJetMass", "<f4"),
        ("GhostBHadronsFinalCount", "<i4"),
        ("GhostCHadronsFinalCount", "<i4"),
        ("eventNumber", "<i8"),
        ("mcEventWeight", "<f4"),
        ("flavour_label", "<i4"),
    ]
)
JET_LABELS = (
    "flavour_label", "R10TruthLabel_R22v1", "GhostBHadronsFinalCount", "GhostCHadronsFinalCount",
)  # fmt: skip

# Slots: per prong its fragmentation, B vertex, cascade charm, charm vertex and tau; then wide
# radiation, pileup, fakes and three V0/material pairs.
_PRONGS = 3
_PER_PRONG = 5
_RADIATION, _PILEUP, _FAKE = 15, 16, 17
_V0_SLOTS = slice(18, 21)
_NUM_VERTEX_SLOTS = 21
_SECONDARY = [p * _PER_PRONG + k for p in range(_PRONGS) for k in range(1, 5)] + [18, 19, 20]
_DROP_ORDER = (_PILEUP, _FAKE, _RADIATION, 20, 19, 18, 10, 5, 0)  # too many tracks: first to go


@dataclass(frozen=True)
class XbbRecord:
    """One kind of large-R jet: its truth label, prong species, resonance mass, natural share."""

    r10: int  # R10TruthLabel_R22v1
    prongs: tuple[int, ...]  # species of each prong (B, C, LIGHT, TAU), leading decay first
    mass: float  # MeV; 0 for a QCD-like mass continuum
    share: float
    width: float = 0.01  # relative spread of the true mass (a b + q pair spans a wide range)


_H, _TOP, _QCD, _VB = 0.34, 0.25, 0.35, 0.06  # natural shares: Higgs, top, QCD, W/Z
_WCS = 0.5  # W -> cs (or cd): about half of the hadronic W decays carry a c quark
_TOP_RECORDS = (
    XbbRecord(1, (B, C, LIGHT), TOP_MASS, _TOP * 0.6 * _WCS),  # t -> bqq, contained
    XbbRecord(1, (B, LIGHT, LIGHT), TOP_MASS, _TOP * 0.6 * (1 - _WCS)),
    XbbRecord(6, (C, LIGHT), W_MASS, _TOP * 0.25 * _WCS),  # only the W's quarks in the jet
    XbbRecord(6, (LIGHT, LIGHT), W_MASS, _TOP * 0.25 * (1 - _WCS)),
    # partly contained: b + one W quark (the c of a cs pair half the time), whose mass spreads
    # below the m_bq endpoint (153 GeV), across the Higgs window
    XbbRecord(7, (B, C), 115e3, _TOP * 0.15 * _WCS / 2, width=0.22),
    XbbRecord(7, (B, LIGHT), 115e3, _TOP * 0.15 * (1 - _WCS / 2), width=0.22),
)
_QCD_RECORDS = {
    "ll": (
        XbbRecord(10, (LIGHT,), 0.0, _QCD * 0.65),
        XbbRecord(10, (LIGHT, LIGHT), 0.0, _QCD * 0.17),
    ),
    "cx": (XbbRecord(10, (C,), 0.0, _QCD * 0.07), XbbRecord(10, (C, LIGHT), 0.0, _QCD * 0.03)),
    "bx": (XbbRecord(10, (B,), 0.0, _QCD * 0.035), XbbRecord(10, (B, LIGHT), 0.0, _QCD * 0.015)),
    "bb": (XbbRecord(10, (B, B), 0.0, _QCD * 0.03),),
}
XBB_CLASSES: dict[str, tuple[XbbRecord, ...]] = {
    "hbb": (XbbRecord(11, (B, B), H_MASS, _H * 0.6),),
    "hcc": (XbbRecord(12, (C, C), H_MASS, _H * 0.25),),
    "htautauhad": (XbbRecord(16, (TAU, TAU), H_MASS, _H * 0.15),),
    "top": _TOP_RECORDS,
    "tqqb": _TOP_RECORDS[:2],
    "wqq_from_t": _TOP_RECORDS[2:4],
    "other_from_t": _TOP_RECORDS[4:],
    "qcd": tuple(r for recs in _QCD_RECORDS.values() for r in recs),
    "qcdbb": _QCD_RECORDS["bb"],
    "qcdbx": _QCD_RECORDS["bx"],
    "qcdcx": _QCD_RECORDS["cx"],
    "qcdll": _QCD_RECORDS["ll"],
    "qcdnonbb": _QCD_RECORDS["ll"] + _QCD_RECORDS["cx"] + _QCD_RECORDS["bx"],
    "Wqq": (
        XbbRecord(2, (C, LIGHT), W_MASS, _VB * 0.5 * _WCS),
        XbbRecord(2, (LIGHT, LIGHT), W_MASS, _VB * 0.5 * (1 - _WCS)),
    ),
    "Zbb": (XbbRecord(3, (B, B), Z_MASS, _VB * 0.15),),
    "Zcc": (XbbRecord(4, (C, C), Z_MASS, _VB * 0.1),),
    "Zqq": (XbbRecord(5, (LIGHT, LIGHT), Z_MASS, _VB * 0.25),),
}
XBB_DEFAULT = ("hbb", "hcc", "top", "qcd")


def xbb_labels(recs: list[XbbRecord]) -> np.ndarray:
    """The truth labels of Xbb records, a structured array ftag's cuts read."""
    out = np.zeros(len(recs), dtype=JET_DTYPE)
    out["R10TruthLabel_R22v1"] = [r.r10 for r in recs]
    out["GhostBHadronsFinalCount"] = [r.prongs.count(B) for r in recs]
    out["GhostCHadronsFinalCount"] = [r.prongs.count(C) for r in recs]
    return out


@dataclass(frozen=True)
class XbbTable:
    """The records of the chosen Xbb classes, flat, with their probabilities per split kind."""

    names: tuple[str, ...]
    r10: np.ndarray  # (R,)
    prongs: np.ndarray  # (R, 3) species per prong, -1 where absent
    mass: np.ndarray  # (R,)
    width: np.ndarray  # (R,) relative spread of the true mass
    label: np.ndarray  # (R,) flavour_label
    train_p: np.ndarray  # classes in equal parts
    natural_p: np.ndarray

    def fractions(self, natural: bool) -> np.ndarray:
        """Fraction of each class in a split, ``(num_classes,)``."""
        p = self.natural_p if natural else self.train_p
        return np.bincount(self.label, weights=p, minlength=len(self.names))


def class_table(classes: Sequence[str] | None) -> XbbTable:
    """Records of the chosen large-R classes, checked against ftag's cuts."""
    names = tuple(classes) if classes is not None else XBB_DEFAULT
    check_classes(names, XBB_CLASSES, "xbb", xbb_labels)
    rows = [(i, r) for i, name in enumerate(names) for r in XBB_CLASSES[name]]
    label = np.array([i for i, _ in rows])
    share = np.array([r.share for _, r in rows])
    within = share / np.bincount(label, weights=share)[label]
    prongs = np.full((len(rows), _PRONGS), -1)
    for k, (_, r) in enumerate(rows):
        prongs[k, : len(r.prongs)] = r.prongs
    return XbbTable(
        names=names,
        r10=np.array([r.r10 for _, r in rows]),
        prongs=prongs,
        mass=np.array([r.mass for _, r in rows]),
        width=np.array([r.width for _, r in rows]),
        label=label,
        train_p=within / len(names),
        natural_p=share / share.sum(),
    )


def specs() -> list[DatasetSpec]:
    """The datasets of an Xbb file and what the dicts describe of each."""
    return [
        DatasetSpec("jets", JET_DTYPE, None, ("pt", "eta", "mass"), JET_LABELS),
        track_specs(NUM_SLOTS, with_subjets=True)[0],
        flows.spec("flow", NUM_SLOTS, prefix="flow_"),
    ]


def generate(
    rng: np.random.Generator,
    n: int,
    split: Split,
    first_jet: int,
    arena: Arena | None = None,
    *,
    table: XbbTable,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``jets`` ``(n,)``, ``tracks`` and ``flow`` ``(n, 100)``, and each jet's UPP component."""
    p = table.natural_p if split.natural else table.train_p
    rec = rng.choice(len(p), size=n, p=p)
    jets = np.zeros(n, dtype=JET_DTYPE)
    prong_species = table.prongs[rec]
    if split.natural:
        pt = np.minimum(250e3 + rng.exponential(250e3, n), 3e6)
        event = 10 * (first_jet + np.arange(n)) + 9
    else:  # flat in log pt, as resampling to a common spectrum makes it
        pt = 250e3 * np.exp(rng.random(n) * np.log(12.0))
        index = first_jet + np.arange(n)
        event = 10 * (index // 8) + index % 8 if split.key == 0 else 10 * index + 8
    eta = rng.uniform(-2.0, 2.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    true_mass = _true_mass(rng, table.mass[rec], table.width[rec], pt, prong_species)
    geometry = _prongs(rng, pt, true_mass, prong_species)
    s, n_frag = _vertices(rng, pt, prong_species, geometry, table.r10[rec] == 10)

    visible = np.where((prong_species == TAU).any(axis=1), rng.uniform(0.5, 0.9, n), 1.0)
    jets["pt"] = pt
    jets["eta"] = eta
    # resolution, and radiation lost out of the cone for some jets (a low tail, as measured)
    lost = np.where(rng.random(n) < 0.15, rng.uniform(0.65, 0.95, n), 1.0)
    jets["mass"] = true_mass * visible * lost * rng.normal(1.0, 0.10, n)
    jets["R10TruthLabel_R22v1"] = table.r10[rec]
    jets["R10TruthLabel_R22v1_TruthJetPt"] = pt / np.clip(rng.normal(1.0, 0.05, n), 0.5, None)
    jets["R10TruthLabel_R22v1_TruthJetMass"] = true_mass
    jets["GhostBHadronsFinalCount"] = (prong_species == B).sum(axis=1)
    jets["GhostCHadronsFinalCount"] = (prong_species == C).sum(axis=1)
    jets["eventNumber"] = event
    jets["mcEventWeight"] = np.exp(0.1 * rng.standard_normal(n))
    jets["flavour_label"] = table.label[rec]
    jets["n_tracks"] = s["count"].sum(axis=1)

    trk = measure(rng, pt, eta, phi, s, arena, cone=CONE)
    t = trk.packed
    t["subjetIndex"] = trackjets.subjet_index(
        t["deta"], t["dphi"], t["pt"], trk.jet, geometry["eta"], geometry["phi"], geometry["pt"]
    )
    spec = {sp.name: sp for sp in specs()}
    neutral = 0.55 * n_frag + 0.8 * (prong_species == TAU).sum(axis=1)
    data = {
        "jets": jets,
        "tracks": trk.padded(n, NUM_SLOTS, spec["tracks"], False, arena),
        "flow": flows.flows(rng, trk, pt, eta, neutral, spec["flow"], arena, cone=CONE),
    }
    highpt = (pt > 1e6).astype(np.int64)
    return data, highpt * len(table.names) + table.label[rec]


def _true_mass(
    rng: np.random.Generator,
    peak: np.ndarray,
    width: np.ndarray,
    pt: np.ndarray,
    prongs: np.ndarray,
) -> np.ndarray:
    # resonances: their mass (narrow); QCD and partly contained tops: a falling continuum
    n = len(pt)
    continuum = np.clip(pt * 0.12 * np.exp(0.45 * rng.standard_normal(n)), 10e3, 0.5 * pt)
    two_prong = (prongs >= 0).sum(axis=1) >= 2
    continuum = np.where(two_prong, np.maximum(continuum, 25e3), continuum)
    resonance = np.clip(peak * rng.normal(1.0, width, n), 25e3, None)
    return np.where(peak > 0, resonance, continuum)


def _prongs(
    rng: np.random.Generator, pt: np.ndarray, mass: np.ndarray, species: np.ndarray
) -> dict[str, np.ndarray]:
    """Prong momenta (0: no prong) and directions ``(n, 3)`` relative to the jet axis."""
    n = len(pt)
    count = (species >= 0).sum(axis=1)
    out = {k: np.zeros((n, _PRONGS)) for k in ("pt", "eta", "phi")}

    def split(parent_pt, m, z_low, z_high):
        # momentum shares and opening angle of a two-body decay of mass m
        z = rng.uniform(z_low, z_high, n)
        dr = m / (parent_pt * np.sqrt(z * (1 - z)))
        angle = rng.uniform(0, 2 * np.pi, n)
        return z, dr * np.cos(angle), dr * np.sin(angle)

    # one prong: along the axis; two: a decay of the jet's mass; three: t -> b W, W -> q q
    z, d_eta, d_phi = split(pt, mass, 0.2, 0.8)
    two, three = count == 2, count == 3
    out["pt"][:, 0] = np.where(count == 1, pt, z * pt)
    out["pt"][:, 1] = np.where(two, (1 - z) * pt, 0.0)
    d_eta, d_phi = np.where(two, d_eta, 0.0), np.where(two, d_phi, 0.0)
    out["eta"][:, 0], out["phi"][:, 0] = (1 - z) * d_eta, (1 - z) * d_phi
    out["eta"][:, 1], out["phi"][:, 1] = -z * d_eta, -z * d_phi
    z_b, bw_eta, bw_phi = split(pt, mass, 0.25, 0.6)
    w_pt = (1 - z_b) * pt
    z_q, qq_eta, qq_phi = split(w_pt, W_MASS, 0.2, 0.8)
    w_eta, w_phi = -z_b * bw_eta, -z_b * bw_phi
    for k, (pt_k, eta_k, phi_k) in enumerate(
        (
            (z_b * pt, (1 - z_b) * bw_eta, (1 - z_b) * bw_phi),
            (z_q * w_pt, w_eta + (1 - z_q) * qq_eta, w_phi + (1 - z_q) * qq_phi),
            ((1 - z_q) * w_pt, w_eta - z_q * qq_eta, w_phi - z_q * qq_phi),
        )
    ):
        out["pt"][:, k] = np.where(three, pt_k, out["pt"][:, k])
        out["eta"][:, k] = np.where(three, eta_k, out["eta"][:, k])
        out["phi"][:, k] = np.where(three, phi_k, out["phi"][:, k])
    # decay products beyond the jet radius end up at its edge
    dr = np.hypot(out["eta"], out["phi"]) + 1e-9
    shrink = 0.9 * CONE * np.tanh(dr / (0.9 * CONE)) / dr
    out["eta"], out["phi"] = out["eta"] * shrink, out["phi"] * shrink
    out["pt"] = np.where(species >= 0, out["pt"], 0.0)
    return out


def _vertices(
    rng: np.random.Generator,
    pt: np.ndarray,
    species: np.ndarray,
    g: dict[str, np.ndarray],
    qcd: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Vertex slots ``(n, 21)`` of the jets, and their fragmentation track counts ``(n,)``."""
    n = len(pt)
    s = empty_slots(n, _NUM_VERTEX_SLOTS)
    barcode = rng.integers(10_001, 60_000, n)
    n_frag = np.zeros(n)
    for p in range(_PRONGS):
        frag_slot = p * _PER_PRONG
        sp = species[:, p]
        exists = sp >= 0
        prong_pt = np.maximum(g["pt"][:, p], 1.0)
        width = np.minimum(0.02 + 0.06 * np.sqrt(50e3 / prong_pt), 0.15)
        h = decays.labelling_hadron(
            rng, np.where(exists, sp, LIGHT), decays.draw_abs_pdg(rng, sp), prong_pt
        )
        # fragmentation: fewer tracks where a decay carries the leading momentum, more in the
        # gluon-like prongs of QCD jets, few around a tau
        factor = np.select(
            [(sp == B) | (sp == C), sp == TAU, qcd & (sp == LIGHT)], [0.6, 0.15, 1.3], 1.0
        )
        mu = np.where(exists, (3.0 + 3.2 * np.log(np.maximum(prong_pt, 10e3) / 10e3)) * factor, 0)
        s["count"][:, frag_slot] = rng.poisson(mu)
        n_frag += s["count"][:, frag_slot]
        s["origin"][:, frag_slot] = PRIMARY
        s["ptscale"][:, frag_slot] = 0.6 * (prong_pt - h["pt"]) / (mu + 2)
        for key, src in (("phi", "phi"), ("eta", "eta"), ("axis_phi", "phi"), ("axis_eta", "eta")):
            s[key][:, frag_slot : frag_slot + _PER_PRONG] = g[src][:, p, None]
        s["spread"][:, frag_slot] = width
        slots = decays.DecaySlots(*(frag_slot + k for k in range(1, 5)))
        decays.decay_vertices(
            rng, s, slots, np.where(exists, sp, LIGHT), h, g["phi"][:, p], g["eta"][:, p], width,
            barcode + 60_000 * p,
        )  # fmt: skip

    # soft wide-angle radiation (outside the subjets), pileup and fakes over the whole jet
    log_pt = np.log(pt / 250e3)
    s["count"][:, _RADIATION] = rng.poisson((2.5 + 1.5 * log_pt) * np.where(qcd, 1.4, 1.0))
    s["count"][:, _PILEUP] = rng.poisson(1.5, n)
    s["count"][:, _FAKE] = rng.poisson(0.5, n)
    s["origin"][:, [_RADIATION, _PILEUP, _FAKE]] = [PRIMARY, PILEUP, FAKE]
    s["spread"][:, [_RADIATION, _PILEUP, _FAKE]] = [0.5, 0.6, 0.5]
    s["ptscale"][:, [_RADIATION, _PILEUP, _FAKE]] = [1500.0, 800.0, 1500.0]
    s["pattern"][:, _SECONDARY] = True
    decays.v0_pairs(
        rng, s, _V0_SLOTS, np.full(n, 0.1), g["phi"][:, 0], g["eta"][:, 0], np.full(n, 0.1),
        np.zeros(n, dtype=bool),
    )  # fmt: skip
    s["axis_phi"][:, _V0_SLOTS], s["axis_eta"][:, _V0_SLOTS] = g["phi"][:, :1], g["eta"][:, :1]

    # at most NUM_SLOTS tracks: drop the least informative first
    excess = np.maximum(s["count"].sum(axis=1) - NUM_SLOTS, 0)
    for slot in _DROP_ORDER:
        drop = np.minimum(s["count"][:, slot], excess)
        s["count"][:, slot] -= drop
        excess -= drop
    s["count"][s["count"].sum(axis=1) == 0, _RADIATION] = 1  # every jet keeps a track

    # truth vertex index: 0 primary, -1 pileup/fake, 1, 2, ... for the secondary vertices present
    s["index"][:, [_PILEUP, _FAKE]] = -1
    s["index"][:, _SECONDARY] = np.cumsum(s["count"][:, _SECONDARY] > 0, axis=1)
    return s, n_frag
