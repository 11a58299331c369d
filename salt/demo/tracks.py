"""Tracks from vertices: direction, charge, impact parameters, hits, truth and lepton labels.

The jet physics modules (`btag`, `xbb`) describe each jet as vertex *slots* ``(n, V)``: how many
tracks a vertex emits, where it sits, where its tracks point, their momentum scale, truth origin,
vertex index and parent hadron. `measure` turns them into tracks, generated packed (valid tracks
only, ``(M,)``), so every operation runs on real tracks; each track's impact parameter follows
from its vertex position and direction, so the tracks of one vertex are correlated.

Tracks of a ``loose`` slot belong to ``tracks_ghost`` only (GN3's looser collection); ``tracks``
holds the others. Both are sorted by decreasing |d0 significance|, as the dumper does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from salt.demo.writer import Arena, DatasetSpec, pack, pad

PILEUP, FAKE, PRIMARY, FROM_B, FROM_BC, FROM_C, FROM_TAU, OTHER_SECONDARY = range(8)
NO_TRUTH, OTHER, PION, KAON, ELECTRON, MUON = range(6)
# GN3-era ftagTruthTypeLabel of tracks_ghost: |value| per type above, signed like the PDG id
SIGNED_TYPE_CODE = np.array([0, 1, 2, 3, 5, 6])
# and back, from signed values -6..6 (padding -1 stays -1: no type has the code 1 negated)
_UNSIGNED_TYPE = np.array([5, 4, -1, 3, 2, -1, 0, 1, 2, 3, -1, 4, 5], dtype=np.int32)
K_SHORT, LAMBDA, CONVERSION, MATERIAL = range(4)  # kinds of displaced pairs (OTHER_SECONDARY)

# ftagTruthTypeLabel probabilities per origin (NoTruth, Other, Pion, Kaon, Electron, Muon);
# leptons from semileptonic decays and V0 daughters are assigned per vertex instead.
_TYPE_PROBS = np.array(
    [
        [0.0, 0.12, 0.735, 0.138, 0.005, 0.002],
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.10, 0.755, 0.138, 0.005, 0.002],
        [0.0, 0.10, 0.55, 0.35, 0.0, 0.0],
        [0.0, 0.08, 0.52, 0.40, 0.0, 0.0],
        [0.0, 0.08, 0.52, 0.40, 0.0, 0.0],
        [0.0, 0.03, 0.90, 0.07, 0.0, 0.0],
        [0.0, 0.50, 0.50, 0.0, 0.0, 0.0],
    ]
)
# type per origin and bin of a uniform number: one lookup instead of comparing with the CDF
_TYPE_BINS = 4096
_TYPE_TABLE = (
    (np.arange(_TYPE_BINS)[None, :, None] + 0.5) / _TYPE_BINS
    > np.cumsum(_TYPE_PROBS, axis=1)[:, None, :-1]
).sum(axis=2, dtype=np.int8)
PIXEL_RADII = np.array([33.25, 50.5, 88.5, 122.5])  # mm: IBL, B-layer, layer 1, layer 2
# Tracks whose impact parameter comes from a 3x wider non-Gaussian tail (material, mis-measured
# hits); the rate of displaced V0/material pairs is set by the jet physics modules.
IP_TAIL_FRACTION, IP_TAIL_SCALE = 0.06, 3.0
MUON_MIN_PT = 3000.0  # MeV: softer muons stop before the muon spectrometer
PION_MASS = 139.6  # MeV

_FLOATS = (
    "d0", "z0SinTheta", "dphi", "deta", "qOverP", "IP3D_signed_d0_significance",
    "IP3D_signed_z0_significance", "phiUncertainty", "thetaUncertainty", "qOverPUncertainty",
)  # fmt: skip
_HITS = (
    "numberOfPixelHits", "numberOfSCTHits", "numberOfInnermostPixelLayerHits",
    "numberOfNextToInnermostPixelLayerHits", "numberOfInnermostPixelLayerSharedHits",
    "numberOfInnermostPixelLayerSplitHits", "numberOfPixelSharedHits", "numberOfPixelSplitHits",
    "numberOfSCTSharedHits",
)  # fmt: skip
_MUON_FLOATS = (
    "muon_qOverPratio", "muon_momentumBalanceSignificance", "muon_scatteringNeighbourSignificance",
)  # fmt: skip
TRACK_DTYPE = np.dtype(
    [
        *[(n, "<f4") for n in _FLOATS],
        *[(n, "|u1") for n in _HITS],
        ("leptonID", "|i1"),
        ("valid", "|b1"),
        *[
            (n, "<i4")
            for n in ("ftagTruthOriginLabel", "ftagTruthTypeLabel", "ftagTruthVertexIndex")
        ],
        ("numberOfPixelHoles", "|u1"),
        ("numberOfSCTHoles", "|u1"),
        ("lifetimeSignedD0Significance", "<f4"),
        ("lifetimeSignedZ0SinThetaSignificance", "<f4"),
        ("pt", "<f4"),
        ("eta", "<f4"),
        ("phi", "<f4"),
        ("subjetIndex", "<i4"),
        ("muon_quality", "|i1"),
        *[(n, "<f4") for n in _MUON_FLOATS],
        ("ftagTruthParentBarcode", "<i4"),
    ]
)
TRACK_INPUTS = (
    *_FLOATS, *_HITS, "leptonID", "numberOfPixelHoles", "numberOfSCTHoles",
    "lifetimeSignedD0Significance", "lifetimeSignedZ0SinThetaSignificance", "pt", "eta", "phi",
    "muon_quality", *_MUON_FLOATS,
)  # fmt: skip
TRACK_LABELS = ("ftagTruthOriginLabel", "ftagTruthTypeLabel")


def track_specs(slots: int, with_subjets: bool) -> list[DatasetSpec]:
    """``tracks`` and ``tracks_ghost``; ``subjetIndex`` is an input only where it varies."""
    inputs = (*TRACK_INPUTS, "subjetIndex") if with_subjets else TRACK_INPUTS
    return [
        DatasetSpec(name, TRACK_DTYPE, slots, inputs, TRACK_LABELS)
        for name in ("tracks", "tracks_ghost")
    ]


# per-slot fields the jet physics fills, (n, V) each
SLOT_FLOATS = ("x", "y", "z", "phi", "eta", "spread", "ptscale", "kaon", "axis_phi", "axis_eta")
SLOT_INTS = (
    "count", "origin", "index", "lepton", "lepton_charge", "charge", "v0kind", "barcode",
)  # fmt: skip
SLOT_BOOLS = ("pattern", "loose")


def empty_slots(n: int, V: int) -> dict[str, np.ndarray]:
    """Slots ``(n, V)`` with no tracks: fill count, origin, positions etc. per vertex.

    ``pattern`` vertices give their tracks charges that add up to ``charge`` (the lepton, if the
    vertex has one, first with ``lepton_charge``); the others' charges are random. ``barcode`` is
    the parent hadron's (-1: none); ``kaon`` is the extra chance of a track being a kaon;
    ``axis_*`` the direction of the (sub)jet whose axis signs the impact parameters.
    """
    # float32 and int32: the precision of the files, half the memory traffic of 64 bits
    s = {k: np.zeros((n, V), dtype=np.float32) for k in SLOT_FLOATS}
    s.update({k: np.zeros((n, V), dtype=np.int32) for k in SLOT_INTS})
    s.update({k: np.zeros((n, V), dtype=bool) for k in SLOT_BOOLS})
    s["barcode"][:] = -1
    return s


@dataclass
class Tracks:
    """Packed tracks ``(M,)`` sorted by jet then |d0 significance|, and a few extra columns."""

    packed: np.ndarray  # TRACK_DTYPE with tracks_ghost's signed ftagTruthTypeLabel
    jet: np.ndarray  # jet index of each track
    loose: np.ndarray  # in tracks_ghost only
    type_label: np.ndarray  # tracks' ftagTruthTypeLabel (0..5)
    sigma_d0: np.ndarray  # mm
    sigma_z0: np.ndarray  # mm

    def padded(
        self, n: int, slots: int, spec: DatasetSpec, loose: bool, arena: Arena | None
    ) -> np.ndarray:
        """``tracks`` (``loose`` False) or ``tracks_ghost`` (True), ``(n, slots)``."""
        if loose:
            return pad(self.packed, self.jet, n, slots, spec, arena)
        out = pad(self.packed, self.jet, n, slots, spec, arena, mask=~self.loose)
        # back to the tracks' unsigned types; padding (-1) stays as it is
        out["ftagTruthTypeLabel"] = _UNSIGNED_TYPE[out["ftagTruthTypeLabel"] + 6]
        return out


def _small_count(u: np.ndarray, lam: np.ndarray) -> np.ndarray:
    # Poisson-like 0/1/2/3 counts from one uniform, much cheaper than rng.binomial on arrays.
    return (u < lam).astype(np.uint8) + (u < lam**2 / 2) + (u < lam**3 / 6)


def _pattern_charges(
    rng: np.random.Generator, s: dict[str, np.ndarray], vid: np.ndarray, pos: np.ndarray
) -> np.ndarray:
    """Charges whose sum over a vertex's tracks is its target when none is lost.

    The lepton (position 0) takes its own charge, the next |rest| tracks the sign of what is left
    to reach the target, the others alternate, starting with a random sign.
    """
    target = s["charge"].ravel()[vid]
    lep = s["lepton_charge"].ravel()[vid]
    sign = np.where(rng.random(s["count"].size, dtype=np.float32) < 0.5, -1, 1)[vid]
    first = np.where(lep != 0, lep, np.where(target != 0, np.sign(target), sign))
    rest = target - first
    after = pos - np.abs(rest) - 1
    later = np.where(after < 0, np.sign(rest), np.where(after % 2 == 0, -sign, sign))
    return np.where(pos == 0, first, later).astype(np.int8)


def _hypot(a: float, b: np.ndarray) -> np.ndarray:
    return np.sqrt(a * a + b * b)  # np.hypot is several times slower


def measure(
    rng: np.random.Generator,
    jet_pt: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    s: dict[str, np.ndarray],
    arena: Arena | None = None,
    cone: float = 0.45,
) -> Tracks:
    """Tracks of the vertex slots ``s`` (``(n, V)`` each) of jets with the given axis ``(n,)``.

    Tracks stay within ``cone`` of the jet axis. Computed in float32, the precision of the files:
    it halves the memory traffic, which is what limits the speed here.
    """
    f32 = np.float32
    n, V = s["count"].shape
    flat_count = s["count"].ravel()
    vid = np.repeat(np.arange(n * V), flat_count)  # flat (jet, slot) vertex id per track
    M = len(vid)
    jet = vid // V
    pos = np.arange(M) - (np.cumsum(flat_count) - flat_count)[vid]  # index within its vertex

    def vtx(key: str) -> np.ndarray:
        return s[key].ravel()[vid]

    origin, loose, pattern = vtx("origin"), vtx("loose"), vtx("pattern")
    fake, pileup = origin == FAKE, origin == PILEUP
    normal = rng.standard_normal((6, M), dtype=f32)
    uniform = rng.random((17, M), dtype=f32)
    spread = vtx("spread")
    # tracks stay inside the jet (Delta R < cone) and below its pt
    dphi = vtx("phi") + spread * normal[0]
    deta = vtx("eta") + spread * normal[1]
    dr = np.sqrt(dphi * dphi + deta * deta) + f32(1e-9)
    shrink = f32(cone) * np.tanh(dr / f32(cone)) / dr
    dphi *= shrink
    deta *= shrink
    pt = jet_pt.astype(f32)[jet]
    exp = rng.standard_exponential(M, dtype=f32)
    trk_pt = np.minimum(500.0 + vtx("ptscale") * exp, pt)
    charge = np.where(uniform[0] < 0.5, np.int8(-1), np.int8(1))
    sel = np.flatnonzero(pattern)
    charge[sel] = _pattern_charges(rng, s, vid[sel], pos[sel])
    eta = jet_eta.astype(f32)[jet] + deta
    sin_theta = 1.0 / np.cosh(eta)
    qoverp = charge * sin_theta / trk_pt

    # hits: a layer can only be hit if it lies outside the production vertex
    x, y = vtx("x"), vtx("y")
    radius = np.sqrt(x * x + y * y)
    hit_eff = np.where(fake, np.where(loose, f32(0.6), f32(0.8)), f32(0.97))
    layer_hit = (radius < PIXEL_RADII.astype(f32)[:, None]) & (uniform[1:5] < hit_eff)
    ibl, blayer = layer_hit[0].view(np.uint8), layer_hit[1].view(np.uint8)
    pixel = layer_hit.sum(axis=0, dtype=np.uint8) + ((uniform[5] < 0.15) & layer_hit[3])
    sct = 8 - (uniform[6] < np.where(fake, f32(0.4), f32(0.05))) - (uniform[6] < 0.01)
    sct = sct + (uniform[7] < 0.2)
    # a hole: a layer the track crossed without a hit (more often on fakes)
    pixel_holes = (uniform[14] < np.where(fake, f32(0.12), f32(0.02))).view(np.uint8)
    sct_holes = _small_count(uniform[15], np.where(fake, f32(0.25), f32(0.04)))
    # hit sharing grows with jet pt (denser cores), for collimated decay products and for fakes
    p_shared = 0.015 + 0.04 * np.clip(np.log10(pt / f32(50e3)), 0.0, 2.0)
    p_shared *= np.where(fake, f32(3.0), f32(1.0)) * np.where(spread < 0.01, f32(2.0), f32(1.0))

    # impact parameters: geometric d0 of a straight track through the vertex, measured with a
    # pt-dependent resolution (worse without an IBL hit) and a small non-Gaussian tail
    pt_gev = trk_pt / f32(1e3)
    res = np.where(ibl > 0, f32(1.0), f32(1.8)) / (pt_gev * np.sqrt(sin_theta))
    sigma_d0 = _hypot(f32(0.010), f32(0.075) * res)
    sigma_z0 = _hypot(f32(0.020), f32(0.090) * res)
    tail = np.where(uniform[8] < IP_TAIL_FRACTION, f32(IP_TAIL_SCALE), f32(1.0))
    tail *= np.where(fake, f32(4.0), f32(1.0))
    d0 = x * np.sin(dphi) - y * np.cos(dphi) + sigma_d0 * tail * normal[2]
    z0 = 0.8 * (x * np.sin(deta) - vtx("z") * np.cos(deta))
    pileup_width = np.where(loose, f32(4.0), f32(1.2))
    pileup_z0 = np.clip(pileup_width * normal[4], -2.5 * pileup_width, 2.5 * pileup_width)
    z0 = np.where(pileup, pileup_z0, z0) + sigma_z0 * tail * normal[3]
    # lifetime sign: positive when the track crosses the (sub)jet axis in front of the primary
    # vertex
    abs_d0, abs_z0 = np.abs(d0), np.abs(z0)
    rel_phi = dphi - vtx("axis_phi")
    rel_eta = deta - vtx("axis_eta")
    d0_sig = np.copysign(abs_d0 / sigma_d0, d0 * rel_phi)
    z0_sig = np.copysign(abs_z0 / sigma_z0, z0 * rel_eta)
    # the same with the beam-spot width in the error and the axis of the jet's tracks, which
    # scatters a little around the calorimeter axis
    axis = rng.standard_normal((2, n), dtype=f32) * f32(0.01)
    lt_d0_sig = np.copysign(abs_d0 / _hypot(f32(0.005), sigma_d0), d0 * (rel_phi - axis[0][jet]))
    lt_z0_sig = np.copysign(abs_z0 / _hypot(f32(0.01), sigma_z0), z0 * (rel_eta - axis[1][jet]))
    jitter = np.exp(0.1 * normal[5])

    # truth type: by origin; s-quark jets make more kaons; leptons and V0 daughters per vertex
    ttype = _TYPE_TABLE[origin, (uniform[9] * _TYPE_BINS).astype(np.int32)]
    ttype[(origin == PRIMARY) & (uniform[16] < vtx("kaon"))] = KAON
    first = pos == 0
    lepton = vtx("lepton")
    ttype[first & (lepton == 11)] = ELECTRON
    ttype[first & (lepton == 13)] = MUON
    kind = vtx("v0kind")
    v0 = origin == OTHER_SECONDARY
    v0_type = np.select(
        [kind == K_SHORT, kind == CONVERSION, first], [PION, ELECTRON, OTHER], PION
    )  # Lambda: proton (Other) then pion
    v0_decay = v0 & (kind != MATERIAL)
    ttype[v0_decay] = v0_type[v0_decay]

    # lepton identification: real leptons, and rarely a hadron (decay in flight, punch-through)
    muon, electron = ttype == MUON, ttype == ELECTRON
    hard = trk_pt > MUON_MIN_PT
    fake_id = ~muon & ~electron & (uniform[10] < 0.002)
    muon_id = (muon & hard & (uniform[10] < 0.9)) | (fake_id & hard & (uniform[10] < 0.001))
    el_eff = np.where(v0, f32(0.3), f32(0.7))
    electron_id = (electron & (uniform[10] < el_eff)) | (fake_id & ~muon_id)
    lepton_id = np.zeros(M, dtype=np.int8)
    lepton_id[muon_id] = -13 * charge[muon_id]
    lepton_id[electron_id] = -11 * charge[electron_id]

    # muon-spectrometer match of identified muons: real muons agree with their track, hadrons
    # that decayed or punched through do not
    real = muon & muon_id
    mu = np.flatnonzero(muon_id)
    u_q, g = rng.random(len(mu)), rng.standard_normal((3, len(mu)))
    r = real[mu]
    quality = np.full(M, -1, dtype=np.int8)
    quality[mu] = np.where(u_q < np.where(r, 0.6, 0.2), 0, np.where(u_q < 0.9, 1, 2))
    muon_vars = np.zeros((3, M), dtype=f32)
    muon_vars[0, mu] = np.where(r, 1.0 + 0.04 * g[0], 1.15 + 0.25 * g[0])
    muon_vars[1, mu] = np.where(r, g[1], 2.0 + 3.0 * np.abs(g[1]))
    muon_vars[2, mu] = np.where(r, g[2], 1.5 + 2.5 * np.abs(g[2]))
    lepton_type = (ttype == ELECTRON) | (ttype == MUON)
    pdg_sign = np.where(lepton_type, -charge, charge)  # e-, mu- have positive ids
    signed_type = SIGNED_TYPE_CODE.astype(np.int8)[ttype] * np.where(ttype > OTHER, pdg_sign, 1)
    phi = jet_phi.astype(f32)[jet] + dphi
    fields = {
        "d0": d0,
        "z0SinTheta": z0,
        "dphi": dphi,
        "deta": deta,
        "qOverP": qoverp,
        "IP3D_signed_d0_significance": d0_sig,
        "IP3D_signed_z0_significance": z0_sig,
        "phiUncertainty": _hypot(f32(7e-5), f32(1e-3) / pt_gev) * jitter,
        "thetaUncertainty": _hypot(f32(2e-4), f32(1.2e-3) / pt_gev) * sin_theta * jitter,
        "qOverPUncertainty": np.abs(qoverp) * _hypot(f32(0.01), f32(4e-4) * pt_gev) * jitter,
        "numberOfPixelHits": pixel,
        "numberOfSCTHits": sct,
        "numberOfInnermostPixelLayerHits": ibl,
        "numberOfNextToInnermostPixelLayerHits": blayer,
        "numberOfInnermostPixelLayerSharedHits": ibl & (uniform[11] < p_shared),
        "numberOfInnermostPixelLayerSplitHits": ibl & (uniform[11] < 0.8 * p_shared),
        "numberOfPixelSharedHits": _small_count(uniform[11], (pixel + 1) * p_shared / 2),
        "numberOfPixelSplitHits": _small_count(uniform[12], pixel * p_shared / 3),
        "numberOfSCTSharedHits": _small_count(uniform[13], sct * p_shared / 6),
        "leptonID": lepton_id,
        "valid": True,
        "ftagTruthOriginLabel": origin,
        "ftagTruthTypeLabel": signed_type,
        "ftagTruthVertexIndex": vtx("index"),
        "numberOfPixelHoles": pixel_holes,
        "numberOfSCTHoles": sct_holes,
        "lifetimeSignedD0Significance": lt_d0_sig,
        "lifetimeSignedZ0SinThetaSignificance": lt_z0_sig,
        "pt": trk_pt,
        "eta": eta,
        "phi": np.where(
            phi >= np.pi, phi - f32(2 * np.pi), np.where(phi < -np.pi, phi + f32(2 * np.pi), phi)
        ),
        "subjetIndex": -1,  # small-R jets have none; large-R ones are clustered afterwards
        "muon_quality": quality,
        "muon_qOverPratio": muon_vars[0],
        "muon_momentumBalanceSignificance": muon_vars[1],
        "muon_scatteringNeighbourSignificance": muon_vars[2],
        "ftagTruthParentBarcode": vtx("barcode"),
    }

    # the dumper sorts tracks by decreasing |d0 significance|; the key keeps jets contiguous
    order = np.argsort(jet + 0.5 / (1.0 + np.abs(d0_sig.astype(np.float64))), kind="stable")
    return Tracks(
        packed=pack(fields, order, TRACK_DTYPE, arena, "tracks"),
        jet=jet[order],
        loose=loose[order],
        type_label=ttype[order],
        sigma_d0=sigma_d0[order],
        sigma_z0=sigma_z0[order],
    )


def track_energy(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Energy of a charged pion of transverse momentum ``pt`` at pseudorapidity ``eta`` (MeV)."""
    return np.sqrt(np.square(pt * np.cosh(eta)) + PION_MASS**2)
