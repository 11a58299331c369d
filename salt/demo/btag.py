"""Small-R jets for b-tagging: kinematics, truth labels and the vertices their tracks come from.

Every jet holds a primary vertex, pileup and fake tracks, a B-hadron decay vertex with the
displaced charm vertex of its cascade downstream (b jets), a charm vertex (c jets), a 1- or
3-prong tau vertex (tau jets) and a few V0/conversion/material pairs (all flavours). Decay lengths
follow each hadron's lifetime and boost. Light jets come from u/d quarks (the baseline), s quarks
(more kaons and K0s/Lambda pairs) and gluons (more, softer tracks in a wider jet). The tracks,
leptons, flows and truth hadrons of these vertices are made by the sibling modules.
"""

from __future__ import annotations

import numpy as np

from salt.demo import decays, flows, hadrons, leptons
from salt.demo.classes import LIGHT, TAU, B, C, ClassTable
from salt.demo.hadrons import HADRON_DTYPE, NUM_HADRON_SLOTS
from salt.demo.tracks import (
    FAKE,
    FROM_B,
    FROM_BC,
    FROM_C,
    FROM_TAU,
    OTHER_SECONDARY,
    PILEUP,
    PRIMARY,
    empty_slots,
    measure,
    track_specs,
)
from salt.demo.writer import Arena, DatasetSpec, Split

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
        ("HadronGhostTruthLabelID", "<i4"),
        ("PartonTruthLabelID", "<i4"),
        ("HadronConeExclTruthLabelPdgId", "<i4"),
        ("HadronGhostInitialTruthLabelPdgId", "<i4"),
        ("ptFromTruthDressedWZJet", "<f4"),
        ("mcEventWeight", "<f4"),
        *[(n, "<f4") for n in leptons.SOFT_MUON_VARS],
        ("flavour_label", "<i4"),
    ]
)
JET_INPUTS = (
    "pt_btagJes", "eta_btagJes", "MockTagger_pb", "MockTagger_pc", "MockTagger_pu",
    "MockTagger_ptau", "pt", "eta", "mass", "absEta_btagJes", *leptons.SOFT_MUON_VARS,
)  # fmt: skip
JET_LABELS = (
    "flavour_label", "HadronConeExclTruthLabelID", "HadronConeExclExtendedTruthLabelID",
    "n_tracks", "n_truth_promptLepton", "HadronGhostTruthLabelID", "PartonTruthLabelID",
    "HadronConeExclTruthLabelPdgId", "HadronGhostInitialTruthLabelPdgId",
)  # fmt: skip

# Vertex slots of a jet; the tracks of one secondary slot share a truth vertex. Three
# V0/material slots so a jet can hold several pairs; the last two hold tracks_ghost's extras.
SLOT_ORIGIN = np.array(
    [PRIMARY, PILEUP, FAKE, FROM_B, FROM_BC, FROM_C, FROM_TAU, *[OTHER_SECONDARY] * 3, PILEUP, FAKE]
)
_V0_SLOTS = slice(7, 10)
_LOOSE_SLOTS = slice(10, 12)
_DROP_ORDER = (0, 1, 2, 9, 8, 7, 6, 5, 4, 3)  # too many tracks: the least informative go first
_DECAY_SLOTS = decays.DecaySlots(b=3, bc=4, c=5, tau=6)
# The V0 rate mostly sets how hard light jets are to reject (0.06 per slot gives a best-track
# light rejection of ~20 at 70% b efficiency on ttbar); s jets make K0s and Lambdas ~3x as often.
V0_RATE, V0_RATE_S, V0_RATE_G = 0.06, 0.20, 0.08
S_KAON = 0.2  # extra chance that a fragmentation track of an s jet is a kaon
GLUON_WIDTH, GLUON_MULTIPLICITY = 1.4, 1.35  # relative to quark jets
TTBAR_SPECTRUM = np.array([60e3, 50e3, 45e3, 45e3])  # exponential pt scale per species (MeV)


def specs(num_tracks: int) -> list[DatasetSpec]:
    """The datasets of a b-tagging file and what the dicts describe of each."""
    return [
        DatasetSpec("jets", JET_DTYPE, None, JET_INPUTS, JET_LABELS),
        *track_specs(num_tracks, with_subjets=False),
        flows.spec("flows", num_tracks, prefix=""),
        leptons.ELECTRON_SPEC,
        DatasetSpec("truth_hadrons", HADRON_DTYPE, NUM_HADRON_SLOTS, (), ("flavour",)),
    ]


def generate(
    rng: np.random.Generator,
    n: int,
    split: Split,
    first_jet: int,
    arena: Arena | None = None,
    *,
    table: ClassTable,
    num_tracks: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every dataset of ``n`` jets (``jets`` ``(n,)``, constituents ``(n, slots)``).

    Also returns each jet's UPP component (pt region and class), ``(n,)``.
    """
    jets, t = _jets(rng, n, split, table, first_jet)
    s, had = _vertices(rng, t, num_tracks)
    jets["n_tracks"] = np.where(s["loose"], 0, s["count"]).sum(axis=1)
    semileptonic = (s["lepton"][:, 3:6] != 0).any(axis=1)
    _truth_pt(rng, jets, semileptonic)

    trk = measure(rng, t["pt"], t["eta"], t["phi"], s, arena)
    spec = {sp.name: sp for sp in specs(num_tracks)}
    data = {
        "jets": jets,
        "tracks": trk.padded(n, num_tracks, spec["tracks"], False, arena),
        "tracks_ghost": trk.padded(n, num_tracks, spec["tracks_ghost"], True, arena),
    }
    leptons.soft_muons(jets, trk)
    data["electrons"] = leptons.electrons(rng, trk, t["pt"], arena)
    # pi0 photons come with the charged pions of fragmentation and decays (taus: tau -> pi pi0)
    neutral = 0.55 * s["count"][:, 0] + 0.3 * s["count"][:, 3:7].sum(axis=1)
    neutral = neutral + 0.8 * (t["species"] == TAU)
    data["flows"] = flows.flows(rng, trk, t["pt"], t["eta"], neutral, spec["flows"], arena)
    data["truth_hadrons"] = hadrons.truth_hadrons(n, **had)
    return data, t["highpt"] * len(table.names) + t["label"]


def _truncated_exponential(
    rng: np.random.Generator, scale: np.ndarray | float, upper: float, n: int
) -> np.ndarray:
    return -scale * np.log1p(-rng.random(n) * -np.expm1(-upper / scale))


def _jets(
    rng: np.random.Generator, n: int, split: Split, table: ClassTable, first_jet: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Jets ``(n,)`` with kinematics and labels, and per-jet truth the vertices need."""
    jets = np.zeros(n, dtype=JET_DTYPE)
    p = table.natural_p if split.natural else table.train_p
    rec = rng.choice(len(p), size=n, p=p)
    species, parton, label = table.species[rec], table.parton[rec], table.label[rec]
    light = species == LIGHT
    if split.natural:
        # ttbar: falling spectrum up to ~1 TeV, heavy flavour a little harder, central eta
        pt = 20e3 + _truncated_exponential(rng, TTBAR_SPECTRUM[species], 980e3, n)
        eta = 2.5 * (2 * rng.beta(1.6, 1.6, n) - 1)
        highpt = (pt > 250e3).astype(np.int64)
        event = 10 * (first_jet + np.arange(n)) + 9
    else:
        # resampled-like: the same pt shape for every class, ttbar-like below 250 GeV and a
        # log-uniform Z'-like part up to 5 TeV, split 60:40 as in the reference UPP config
        highpt = (rng.random(n) < 0.4).astype(np.int64)
        low = 20e3 + _truncated_exponential(rng, 60e3, 230e3, n)
        high = 250e3 * np.exp(rng.random(n) * np.log(20.0))
        pt = np.where(highpt == 1, high, low)
        eta = rng.uniform(-2.5, 2.5, n)
        index = first_jet + np.arange(n)
        # UPP splits by eventNumber % 10: <= 7 train, 8 val, 9 test
        event = 10 * (index // 8) + index % 8 if split.key == 0 else 10 * index + 8
    phi = rng.uniform(-np.pi, np.pi, n)

    # the labelling hadron (or tau): its signed id, mass, momentum and decay length
    b, c, tau = species == B, species == C, species == TAU
    h = decays.labelling_hadron(rng, species, table.hadron[rec], pt)
    pdg, had_pt, lxy = h["pdg"], h["pt"], h["lxy"]

    u = rng.random(n)
    truth = np.array([5, 4, 0, 15], dtype=np.int32)[species]
    extended = truth.copy()
    extended[b & (u > 0.6)] = 54
    extended[b & (u > 0.93)] = 55
    extended[c & (u > 0.9)] = 44

    # a noisy DL1-like tagger: true class favoured, b and c (and tau and c) confused
    logits = rng.normal(0.0, 1.0, (n, 4))
    logits[np.arange(n), species] += 1.6
    logits[b, 1] += 0.6
    logits[c, 0] += 0.6
    logits[tau, 1] += 0.4
    prob = np.exp(logits - logits.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)

    gluon = light & (parton == 21)
    jets["pt_btagJes"] = pt
    jets["pt"] = pt * rng.normal(1.0, 0.03, n)
    jets["eta"] = jets["eta_btagJes"] = eta
    jets["absEta_btagJes"] = np.abs(eta)
    jets["mass"] = pt * rng.uniform(0.05, 0.2, n) * np.where(b | gluon, 1.15, 1.0)
    jets["HadronConeExclTruthLabelID"] = jets["HadronGhostTruthLabelID"] = truth
    jets["PartonTruthLabelID"] = parton
    jets["HadronConeExclTruthLabelPdgId"] = jets["HadronGhostInitialTruthLabelPdgId"] = pdg
    jets["HadronConeExclTruthLabelPt"] = had_pt
    jets["HadronConeExclTruthLabelLxy"] = lxy
    jets["HadronConeExclExtendedTruthLabelID"] = extended
    jets["n_truth_promptLepton"] = rng.random(n) < np.where(highpt == 1, 0.005, 0.02)
    for i, name in enumerate(("pb", "pc", "pu", "ptau")):
        jets[f"MockTagger_{name}"] = prob[:, i]
    jets["eventNumber"] = event
    jets["jetFoldHash"] = rng.integers(0, 2**31 - 1, n)
    jets["mcEventWeight"] = np.exp(0.1 * rng.standard_normal(n)) * np.where(u < 0.02, -1, 1)
    jets["flavour_label"] = label
    frag = np.minimum(0.03 + 0.07 * np.sqrt(50e3 / pt), 0.2)  # core width of the jet
    t = {
        "species": species, "parton": parton, "label": label, "pt": pt, "eta": eta, "phi": phi,
        "highpt": highpt, "hadron": h, "frag": frag * np.where(gluon, GLUON_WIDTH, 1.0),
    }  # fmt: skip
    return jets, t


def _truth_pt(rng: np.random.Generator, jets: np.ndarray, semileptonic: np.ndarray) -> None:
    # reco = truth x response: resolution falls with pt; a semileptonic decay's neutrino is lost
    pt = jets["pt_btagJes"].astype(np.float64)
    sigma = np.hypot(0.6 / np.sqrt(pt / 1e3), 0.04)
    response = np.clip(1.0 + sigma * rng.standard_normal(len(pt)), 0.3, None)
    response *= np.where(semileptonic, 0.92, 1.0)
    jets["ptFromTruthDressedWZJet"] = pt / response


def _vertices(
    rng: np.random.Generator, t: dict[str, np.ndarray], num_tracks: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Vertex slots ``(n, V)`` of the jets and their truth-hadron columns ``(n, 2)``."""
    species, pt = t["species"], t["pt"]
    n, V = len(species), len(SLOT_ORIGIN)
    s = empty_slots(n, V)
    s["origin"][:] = SLOT_ORIGIN
    s["loose"][:, _LOOSE_SLOTS] = True
    light = species == LIGHT
    strange, gluon = light & (t["parton"] == 3), light & (t["parton"] == 21)
    frag = t["frag"]

    log_pt = np.log(pt / 20e3)
    # fragmentation multiplicity rises slowly with pt; b and c jets share it with the decay
    offset = np.array([6.5, 7.3, 7.4, 1.2])[species] * np.where(gluon, GLUON_MULTIPLICITY, 1.0)
    slope = np.array([1.6, 1.6, 1.6, 0.6])[species] * np.where(gluon, GLUON_MULTIPLICITY, 1.0)
    mu_primary = offset + slope * log_pt
    s["count"][:, 0] = rng.poisson(mu_primary)
    s["count"][:, 1] = rng.poisson(0.45, n)
    s["count"][:, 2] = rng.poisson(0.3, n)
    s["count"][:, 10] = rng.poisson(0.6, n)  # tracks_ghost: pileup from farther along z
    s["count"][:, 11] = rng.poisson(0.25, n)  # ... and fakes of a looser selection
    s["spread"][:, [0, 1, 2, 10, 11]] = np.stack(
        [frag, np.full(n, 0.25), np.full(n, 0.2), np.full(n, 0.3), np.full(n, 0.25)], axis=1
    )
    s["ptscale"][:, [0, 1, 2, 10, 11]] = np.stack(
        [0.6 * pt / (mu_primary + 3), *np.full((4, n), [[800.0], [1500.0], [700.0], [1200.0]])],
        axis=1,
    )
    s["kaon"][:, 0] = np.where(strange, S_KAON, 0.0)

    # the B (b jets), the charm hadron (c jets) or the tau flies along the jet axis
    axis = np.zeros(n)
    barcode = rng.integers(10_001, 190_000, n)
    had = decays.decay_vertices(
        rng, s, _DECAY_SLOTS, species, t["hadron"], axis, axis, frag, barcode
    )
    s["pattern"][:, 3:10] = True

    # V0 (K0s, Lambda), photon conversions and material interactions: displaced pairs
    rate = np.where(strange, V0_RATE_S, np.where(gluon, V0_RATE_G, V0_RATE))
    decays.v0_pairs(rng, s, _V0_SLOTS, rate, axis, axis, frag, strange)

    # at most num_tracks tracks in each collection: drop the least informative first
    excess = np.maximum(s["count"][:, :10].sum(axis=1) - num_tracks, 0)
    for slot in _DROP_ORDER:
        drop = np.minimum(s["count"][:, slot], excess)
        s["count"][:, slot] -= drop
        excess -= drop
    s["count"][s["count"][:, :10].sum(axis=1) == 0, 0] = 1  # every jet keeps at least one track
    room = num_tracks - s["count"][:, :10].sum(axis=1)
    s["count"][:, 10] = np.minimum(s["count"][:, 10], room)
    s["count"][:, 11] = np.minimum(s["count"][:, 11], room - s["count"][:, 10])

    # truth vertex index: 0 primary, -1 pileup/fake, 1, 2, ... for the secondary vertices present
    s["index"][:, [1, 2, 10, 11]] = -1
    s["index"][:, 3:10] = np.cumsum(s["count"][:, 3:10] > 0, axis=1)
    return s, had
