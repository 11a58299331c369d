"""The jet physics behind the demo data: vertices, decay lengths, tracks and hits, vectorised.

Every jet holds a primary vertex, pileup and fake tracks, a B-hadron decay vertex with a displaced
charm vertex downstream of it (b jets), a charm vertex (c jets), a tau vertex (tau jets) and a few
V0/material pairs (all flavours). Decay lengths follow the hadron lifetime and boost; each track's
impact parameter follows from its vertex position and direction, so tracks of one vertex are
correlated. `salt.data.demo` writes what `generate` returns into UPP-format files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLAVOURS = ("bjets", "cjets", "ujets", "taujets")
TRUTH_LABEL = np.array([5, 4, 0, 15], dtype=np.int32)  # HadronConeExclTruthLabelID per class

JET_DTYPE = np.dtype(
    [
        *[(n, "<f4") for n in ("pt", "eta", "mass", "pt_btagJes", "eta_btagJes")],
        ("n_tracks", "<i4"),
        ("HadronConeExclTruthLabelID", "<i4"),
        ("HadronConeExclTruthLabelPt", "<f4"),
        ("n_truth_promptLepton", "<i4"),
        *[(f"MockTagger_{p}", "<f4") for p in ("pu", "pc", "pb", "ptau")],
        ("absEta_btagJes", "<f4"),
        ("eventNumber", "<i8"),
        ("jetFoldHash", "<i4"),
        ("HadronConeExclExtendedTruthLabelID", "<i4"),
        ("HadronConeExclTruthLabelLxy", "<f4"),
        ("flavour_label", "<i4"),
    ]
)
_TRACK_FLOATS = (
    "d0", "z0SinTheta", "dphi", "deta", "qOverP", "IP3D_signed_d0_significance",
    "IP3D_signed_z0_significance", "phiUncertainty", "thetaUncertainty", "qOverPUncertainty",
)  # fmt: skip
_TRACK_HITS = (
    "numberOfPixelHits", "numberOfSCTHits", "numberOfInnermostPixelLayerHits",
    "numberOfNextToInnermostPixelLayerHits", "numberOfInnermostPixelLayerSharedHits",
    "numberOfInnermostPixelLayerSplitHits", "numberOfPixelSharedHits", "numberOfPixelSplitHits",
    "numberOfSCTSharedHits",
)  # fmt: skip
TRACK_DTYPE = np.dtype(
    [
        *[(n, "<f4") for n in _TRACK_FLOATS],
        *[(n, "|u1") for n in _TRACK_HITS],
        ("leptonID", "|i1"),
        ("valid", "|b1"),
        *[
            (n, "<i4")
            for n in ("ftagTruthOriginLabel", "ftagTruthTypeLabel", "ftagTruthVertexIndex")
        ],
    ]
)
JET_INPUTS = (
    "pt_btagJes", "eta_btagJes", "MockTagger_pb", "MockTagger_pc", "MockTagger_pu",
    "MockTagger_ptau",
)  # fmt: skip
TRACK_INPUTS = (*_TRACK_FLOATS, *_TRACK_HITS, "leptonID")
JET_CLASS_LABELS = (
    "flavour_label", "HadronConeExclTruthLabelID", "HadronConeExclExtendedTruthLabelID",
    "n_tracks", "n_truth_promptLepton",
)  # fmt: skip
TRACK_CLASS_LABELS = ("ftagTruthOriginLabel", "ftagTruthTypeLabel")

PILEUP, FAKE, PRIMARY, FROM_B, FROM_BC, FROM_C, FROM_TAU, OTHER_SECONDARY = range(8)
NO_TRUTH, OTHER, PION, KAON, ELECTRON, MUON = range(6)

# Each jet has these vertex slots; a slot emits tracks of one origin, and the tracks of one
# secondary slot share a truth vertex. Three V0/material slots so a jet can hold several pairs.
SLOT_ORIGIN = np.array(
    [PRIMARY, PILEUP, FAKE, FROM_B, FROM_BC, FROM_C, FROM_TAU, *[OTHER_SECONDARY] * 3]
)
_V0_SLOTS = slice(7, 10)
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
_TYPE_CDF = np.cumsum(_TYPE_PROBS, axis=1)[:, :-1]
PIXEL_RADII = np.array([33.25, 50.5, 88.5, 122.5])  # mm: IBL, B-layer, layer 1, layer 2
HADRON_MASS = np.array([5279.0, 1870.0, 1.0, 1777.0])  # MeV, per class (light: unused)
HADRON_CTAU = np.array([0.455, 0.17, 0.0, 0.087])  # mm, per class
CHARM_MASS, CHARM_CTAU = 1870.0, 0.17
# Tracks whose impact parameter comes from a 3x wider non-Gaussian tail (material, mis-measured
# hits), and the rate of displaced V0/material pairs: the V0 rate mostly sets how hard light jets
# are to reject (0.06 gives a best-track light rejection of ~20 at 70% b efficiency on ttbar).
IP_TAIL_FRACTION, IP_TAIL_SCALE = 0.06, 3.0
V0_RATE = 0.06  # per slot, so about 0.18 V0/material pairs per jet

# Jets are generated in blocks of this size, each from its own seed, so the output of a seed does
# not depend on how many blocks are in memory; changing it changes every dataset.
GEN_BLOCK = 20_000  # a multiple of the (100, T) chunks; larger blocks run slower
TRAIN_FRACTIONS = (0.3, 0.3, 0.3, 0.1)
TTBAR_FRACTIONS = (0.28, 0.14, 0.50, 0.08)


@dataclass(frozen=True)
class Split:
    name: str
    key: int  # enters the seed, keeps splits independent
    filename: str
    num_jets: int
    fractions: tuple[float, ...]
    natural: bool  # test: ttbar-like spectrum; train/val: resampled-like ttbar + Z' mix


def generate(
    rng: np.random.Generator, n: int, split: Split, num_tracks: int, first_jet: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return jets ``(n,)``, tracks ``(n, num_tracks)`` and a component id per jet."""
    jets, flav, pt, highpt, had_pt = _jets(rng, n, split, first_jet)
    slots = _vertices(rng, flav, pt, had_pt, jets["HadronConeExclTruthLabelLxy"], num_tracks)
    jets["n_tracks"] = slots["count"].sum(axis=1)
    tracks = _tracks(rng, jets, pt, slots, num_tracks)
    return jets, tracks, highpt * len(FLAVOURS) + flav


def _truncated_exponential(
    rng: np.random.Generator, scale: np.ndarray | float, upper: float, n: int
) -> np.ndarray:
    return -scale * np.log1p(-rng.random(n) * -np.expm1(-upper / scale))


def _jets(rng: np.random.Generator, n: int, split: Split, first_jet: int) -> tuple[np.ndarray, ...]:
    jets = np.zeros(n, dtype=JET_DTYPE)
    flav = rng.choice(len(FLAVOURS), size=n, p=split.fractions)
    if split.natural:
        # ttbar: falling spectrum up to ~1 TeV, heavy flavour a little harder, central eta
        scale = np.array([60e3, 50e3, 45e3, 45e3])[flav]
        pt = 20e3 + _truncated_exponential(rng, scale, 980e3, n)
        eta = 2.5 * (2 * rng.beta(1.6, 1.6, n) - 1)
        highpt = (pt > 250e3).astype(np.int64)
        event = 10 * (first_jet + np.arange(n)) + 9
    else:
        # resampled-like: the same pt shape for every flavour, ttbar-like below 250 GeV and a
        # log-uniform Z'-like part up to 5 TeV, split 60:40 as in the reference UPP config
        highpt = (rng.random(n) < 0.4).astype(np.int64)
        low = 20e3 + _truncated_exponential(rng, 60e3, 230e3, n)
        high = 250e3 * np.exp(rng.random(n) * np.log(20.0))
        pt = np.where(highpt == 1, high, low)
        eta = rng.uniform(-2.5, 2.5, n)
        index = first_jet + np.arange(n)
        # UPP splits by eventNumber % 10: <= 7 train, 8 val, 9 test
        event = 10 * (index // 8) + index % 8 if split.key == 0 else 10 * index + 8

    is_light = flav == 2
    # hadron momentum fraction: b fragmentation is hard, charm and visible tau softer
    z = 0.5 + 0.4 * np.where(flav == 0, rng.beta(3, 2, n), rng.beta(2, 2, n))
    had_pt = np.where(is_light, 0.0, z * pt)
    lxy = rng.standard_exponential(n) * had_pt / HADRON_MASS[flav] * HADRON_CTAU[flav]

    u = rng.random(n)
    extended = TRUTH_LABEL[flav].copy()
    extended[(flav == 0) & (u > 0.6)] = 54
    extended[(flav == 0) & (u > 0.93)] = 55
    extended[(flav == 1) & (u > 0.9)] = 44

    # a noisy DL1-like tagger: true class favoured, b and c (and tau and c) confused
    logits = rng.normal(0.0, 1.0, (n, 4))
    logits[np.arange(n), flav] += 1.6
    logits[flav == 0, 1] += 0.6
    logits[flav == 1, 0] += 0.6
    logits[flav == 3, 1] += 0.4
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)

    jets["pt_btagJes"] = pt
    jets["pt"] = pt * rng.normal(1.0, 0.03, n)
    jets["eta"] = jets["eta_btagJes"] = eta
    jets["absEta_btagJes"] = np.abs(eta)
    jets["mass"] = pt * rng.uniform(0.05, 0.2, n) * np.where(flav == 0, 1.15, 1.0)
    jets["HadronConeExclTruthLabelID"] = TRUTH_LABEL[flav]
    jets["HadronConeExclTruthLabelPt"] = had_pt
    jets["HadronConeExclTruthLabelLxy"] = lxy
    jets["HadronConeExclExtendedTruthLabelID"] = extended
    jets["n_truth_promptLepton"] = rng.random(n) < np.where(highpt == 1, 0.005, 0.02)
    for i, p in enumerate(("pb", "pc", "pu", "ptau")):
        jets[f"MockTagger_{p}"] = prob[:, i]
    jets["eventNumber"] = event
    jets["jetFoldHash"] = rng.integers(0, 2**31 - 1, n)
    jets["flavour_label"] = flav
    return jets, flav, pt, highpt, had_pt


def _vertices(
    rng: np.random.Generator,
    flav: np.ndarray,
    pt: np.ndarray,
    had_pt: np.ndarray,
    lxy: np.ndarray,
    num_tracks: int,
) -> dict[str, np.ndarray]:
    """Per jet and slot ``(n, slots)``: track count, vertex position and direction, track pt."""
    n, V = len(flav), len(SLOT_ORIGIN)
    s = {k: np.zeros((n, V)) for k in ("x", "y", "z", "phi", "eta", "spread", "ptscale")}
    s["count"] = np.zeros((n, V), dtype=np.int64)
    s["lepton"] = np.zeros((n, V), dtype=np.int64)  # 11/13: the vertex's first track is a lepton
    s["v0kind"] = np.zeros((n, V), dtype=np.int64)
    b, c, tau = flav == 0, flav == 1, flav == 3
    safe_had = np.maximum(had_pt, 1.0)
    frag = np.minimum(0.03 + 0.07 * np.sqrt(50e3 / pt), 0.2)  # core width of the jet

    log_pt = np.log(pt / 20e3)
    # fragmentation multiplicity rises slowly with pt; b and c jets share it with the decay
    offset, slope = np.array([6.5, 7.3, 8.0, 1.2])[flav], np.array([1.6, 1.6, 1.6, 0.6])[flav]
    mu_primary = offset + slope * log_pt
    s["count"][:, 0] = rng.poisson(mu_primary)
    s["count"][:, 1] = rng.poisson(0.45, n)
    s["count"][:, 2] = rng.poisson(0.3, n)
    s["spread"][:, :3] = np.stack([frag, np.full(n, 0.25), np.full(n, 0.2)], axis=1)
    s["ptscale"][:, :3] = np.stack(
        [0.6 * pt / (mu_primary + 3), np.full(n, 800.0), np.full(n, 1500.0)], axis=1
    )

    # The decay vertex direction follows the jet axis closely; decay products open up by ~m/p.
    hf_phi, hf_eta = rng.normal(0, 1, (2, n)) * 0.3 * frag
    hf_x = lxy * np.cos(hf_phi)
    hf_y, hf_z = lxy * np.sin(hf_phi), lxy * np.sin(hf_eta)
    hf_spread = np.minimum(0.8 * HADRON_MASS[flav] / safe_had, 0.3)
    # charged decay products (B -> C -> ..., C -> ..., 1- or 3-prong tau) before reconstruction;
    # displaced tracks are lost once the decay is beyond the inner pixel layers
    n_b, n_bc, n_c = (
        1 + rng.binomial(4, 0.45, n),
        rng.binomial(4, 0.5, n),
        1 + rng.binomial(3, 0.5, n),
    )
    n_tau = np.where(rng.random(n) < 0.75, 1, 3)
    eff = 0.92 * np.clip((200.0 - lxy) / 160.0, 0.0, 1.0)
    for slot, mask, n_true, share in (
        (3, b, n_b, 0.6 / (n_b + n_bc)),
        (5, c, n_c, 0.6 / n_c),
        (6, tau, n_tau, 0.8 / n_tau),
    ):
        s["count"][:, slot] = np.where(mask, rng.binomial(n_true, eff), 0)
        for key, val in (("x", hf_x), ("y", hf_y), ("z", hf_z), ("phi", hf_phi), ("eta", hf_eta)):
            s[key][:, slot] = val
        s["spread"][:, slot] = hf_spread
        s["ptscale"][:, slot] = share * had_pt

    # charm from the B decay flies on from the B vertex, carrying about 60% of its momentum
    charm_pt = safe_had * rng.uniform(0.4, 0.8, n)
    c_lxy = rng.standard_exponential(n) * charm_pt / CHARM_MASS * CHARM_CTAU
    c_phi = hf_phi + rng.normal(0, 0.5, n) * hf_spread
    c_eta = hf_eta + rng.normal(0, 0.5, n) * hf_spread
    c_x, c_y = hf_x + c_lxy * np.cos(c_phi), hf_y + c_lxy * np.sin(c_phi)
    c_eff = 0.92 * np.clip((200.0 - np.hypot(c_x, c_y)) / 160.0, 0.0, 1.0)
    s["count"][:, 4] = np.where(b, rng.binomial(n_bc, c_eff), 0)
    s["x"][:, 4], s["y"][:, 4], s["z"][:, 4] = c_x, c_y, hf_z + c_lxy * np.sin(c_eta)
    s["phi"][:, 4], s["eta"][:, 4] = c_phi, c_eta
    s["spread"][:, 4] = np.minimum(0.8 * CHARM_MASS / charm_pt, 0.3)
    s["ptscale"][:, 4] = 0.6 * charm_pt / np.maximum(n_bc, 1)

    # semileptonic decays: B -> l 21%, B -> C -> l 20%, C -> l (c jets) 16%, half e, half mu
    u = rng.random((n, 3))
    for col, slot, p in ((0, 3, 0.21), (1, 4, 0.20), (2, 5, 0.16)):
        s["lepton"][:, slot] = np.where(u[:, col] < p, np.where(u[:, col] < p / 2, 11, 13), 0)

    # V0 (K_S, Lambda), photon conversions and material interactions: displaced pairs
    v0 = rng.random((n, 3)) < V0_RATE
    s["count"][:, _V0_SLOTS] = v0 * (2 - (rng.random((n, 3)) < 0.15))
    v0_l = 1.0 + rng.exponential(8.0, (n, 3))
    v0_phi, v0_eta = rng.normal(0, 1, (2, n, 3)) * frag[:, None]
    s["x"][:, _V0_SLOTS], s["y"][:, _V0_SLOTS] = v0_l * np.cos(v0_phi), v0_l * np.sin(v0_phi)
    s["z"][:, _V0_SLOTS], s["phi"][:, _V0_SLOTS] = v0_l * np.sin(v0_eta), v0_phi
    s["eta"][:, _V0_SLOTS] = v0_eta
    s["spread"][:, _V0_SLOTS] = 0.06
    s["ptscale"][:, _V0_SLOTS] = 1500.0
    s["v0kind"][:, _V0_SLOTS] = np.searchsorted([0.5, 0.7, 0.9], rng.random((n, 3)))

    # At most num_tracks tracks: drop the least informative first (primary, pileup, fake, V0s).
    excess = np.maximum(s["count"].sum(axis=1) - num_tracks, 0)
    for slot in (0, 1, 2, 9, 8, 7, 6, 5, 4, 3):
        drop = np.minimum(s["count"][:, slot], excess)
        s["count"][:, slot] -= drop
        excess -= drop
    s["count"][s["count"].sum(axis=1) == 0, 0] = 1  # every jet keeps at least one track

    # truth vertex index: 0 primary, -1 pileup/fake, 1, 2, ... for the secondary vertices present
    s["index"] = np.zeros((n, V), dtype=np.int64)
    s["index"][:, 1:3] = -1
    s["index"][:, 3:] = np.cumsum(s["count"][:, 3:] > 0, axis=1)
    return s


def _small_count(u: np.ndarray, lam: np.ndarray) -> np.ndarray:
    # Poisson-like 0/1/2/3 counts from one uniform, much cheaper than rng.binomial on arrays.
    return (u < lam).astype(np.uint8) + (u < lam**2 / 2) + (u < lam**3 / 6)


def _tracks(
    rng: np.random.Generator,
    jets: np.ndarray,
    pt: np.ndarray,
    s: dict[str, np.ndarray],
    num_tracks: int,
) -> np.ndarray:
    """Tracks ``(n, num_tracks)``, generated packed (valid tracks only), sorted, then padded."""
    n, V = s["count"].shape
    flat_count = s["count"].ravel()
    vid = np.repeat(np.arange(n * V), flat_count)  # flat (jet, slot) vertex id per track
    M = len(vid)
    jet, origin = vid // V, SLOT_ORIGIN[vid % V]
    first_in_vertex = np.arange(M) == (np.cumsum(flat_count) - flat_count)[vid]

    def vtx(key: str) -> np.ndarray:
        return s[key].ravel()[vid]

    normal = rng.standard_normal((6, M))
    uniform = rng.random((14, M))
    spread = vtx("spread")
    dphi = 0.45 * np.tanh((vtx("phi") + spread * normal[0]) / 0.45)  # stay inside the jet cone
    deta = 0.45 * np.tanh((vtx("eta") + spread * normal[1]) / 0.45)
    trk_pt = np.minimum(500.0 + vtx("ptscale") * rng.standard_exponential(M), pt[jet])
    charge = np.where(uniform[0] < 0.5, -1, 1)
    eta = jets["eta"][jet] + deta
    sin_theta = 1.0 / np.cosh(eta)
    qoverp = charge * sin_theta / trk_pt

    # hits: a layer can only be hit if it lies outside the production vertex
    x, y = vtx("x"), vtx("y")
    radius = np.hypot(x, y)
    fake = origin == FAKE
    hit_eff = np.where(fake, 0.8, 0.97)
    layer_hit = (radius < PIXEL_RADII[:, None]) & (uniform[1:5] < hit_eff)
    ibl, blayer = layer_hit[0].astype(np.uint8), layer_hit[1].astype(np.uint8)
    pixel = layer_hit.sum(axis=0) + ((uniform[5] < 0.15) & layer_hit[3])
    sct = 8 - (uniform[6] < np.where(fake, 0.4, 0.05)) - (uniform[6] < 0.01) + (uniform[7] < 0.2)
    # hit sharing grows with jet pt (denser cores), for collimated decay products and for fakes
    p_shared = 0.015 + 0.04 * np.clip(np.log10(pt[jet] / 50e3), 0.0, 2.0)
    p_shared = p_shared * np.where(fake, 3.0, 1.0) * np.where(spread < 0.01, 2.0, 1.0)

    # impact parameters: geometric d0 of a straight track through the vertex, measured with a
    # pt-dependent resolution (worse without an IBL hit) and a small non-Gaussian tail
    pt_gev = trk_pt / 1e3
    res = np.where(ibl > 0, 1.0, 1.8) / (pt_gev * np.sqrt(sin_theta))
    sigma_d0 = np.hypot(0.010, 0.075 * res)
    sigma_z0 = np.hypot(0.020, 0.090 * res)
    tail = np.where(uniform[8] < IP_TAIL_FRACTION, IP_TAIL_SCALE, 1.0) * np.where(fake, 4.0, 1.0)
    d0 = x * np.sin(dphi) - y * np.cos(dphi) + sigma_d0 * tail * normal[2]
    z0_true = 0.8 * (x * np.sin(deta) - vtx("z") * np.cos(deta))
    z0_true = np.where(origin == PILEUP, np.clip(1.2 * normal[4], -3.0, 3.0), z0_true)
    z0 = z0_true + sigma_z0 * tail * normal[3]
    # lifetime sign: positive when the track crosses the jet axis in front of the primary vertex
    d0_sig = np.where(d0 * dphi >= 0, 1.0, -1.0) * np.abs(d0) / sigma_d0
    z0_sig = np.where(z0 * deta >= 0, 1.0, -1.0) * np.abs(z0) / sigma_z0
    jitter = np.exp(0.1 * normal[5])

    # truth type and lepton identification
    ttype = (uniform[9][:, None] > _TYPE_CDF[origin]).sum(axis=1)
    lepton = vtx("lepton")
    ttype = np.where(first_in_vertex & (lepton == 11), ELECTRON, ttype)
    ttype = np.where(first_in_vertex & (lepton == 13), MUON, ttype)
    kind = vtx("v0kind")
    v0 = origin == OTHER_SECONDARY
    v0_type = np.select([kind == 0, kind == 2, first_in_vertex], [PION, ELECTRON, OTHER], PION)
    ttype = np.where(v0 & (kind != 3), v0_type, ttype)
    electron = ttype == ELECTRON
    id_eff = np.select([ttype == MUON, v0 & electron, electron], [0.9, 0.3, 0.7], 0.002)
    pdg = np.where(ttype == MUON, 13, 11)
    lepton_id = np.where(uniform[10] < id_eff, -pdg * charge, 0)

    fields = {
        "d0": d0,
        "z0SinTheta": z0,
        "dphi": dphi,
        "deta": deta,
        "qOverP": qoverp,
        "IP3D_signed_d0_significance": d0_sig,
        "IP3D_signed_z0_significance": z0_sig,
        "phiUncertainty": np.hypot(7e-5, 1e-3 / pt_gev) * jitter,
        "thetaUncertainty": np.hypot(2e-4, 1.2e-3 / pt_gev) * sin_theta * jitter,
        "qOverPUncertainty": np.abs(qoverp) * np.hypot(0.01, 4e-4 * pt_gev) * jitter,
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
        "ftagTruthTypeLabel": ttype,
        "ftagTruthVertexIndex": vtx("index"),
    }

    # TDD sorts tracks by decreasing |d0 significance|; the key keeps jets contiguous.
    order = np.argsort(jet + 0.5 / (1.0 + np.abs(d0_sig)))
    packed = np.empty(M, dtype=TRACK_DTYPE)
    for name, values in fields.items():
        packed[name] = values[order] if isinstance(values, np.ndarray) else values
    n_tracks = s["count"].sum(axis=1)
    jet_sorted = jet[order]
    position = np.arange(M) - (np.cumsum(n_tracks) - n_tracks)[jet_sorted]

    # tiling one padded row is several times faster than filling the padding field by field
    tracks = np.tile(_padding_record(num_tracks), n)
    tracks[jet_sorted * num_tracks + position] = packed
    return tracks.reshape(n, num_tracks)


def _padding_record(num_tracks: int) -> np.ndarray:
    # ftag's TrackSelector convention: floats NaN, signed ints -1, unsigned ints 0, valid False
    pad = np.zeros(num_tracks, dtype=TRACK_DTYPE)
    for name in TRACK_DTYPE.names:
        kind = TRACK_DTYPE[name].kind
        pad[name] = np.nan if kind == "f" else -1 if kind == "i" else 0
    return pad
