"""Decays into vertex slots (b, c, tau, V0s), shared by small-R jets and large-R subjets.

A b-hadron flies along its (sub)jet, decays at a distance set by its lifetime and boost, and makes
a charm hadron that flies on and decays further out (the b -> c cascade); a charm hadron or a tau
decays once. The decay products open up by about m/p. The charges of each vertex's tracks add up
to what the hadron's charge leaves there, and the lepton of a semileptonic decay has the charge of
its quark, so both b vs c vs light and b vs anti-b are learnable from the tracks. K0s, Lambdas,
photon conversions and material interactions make displaced pairs in every jet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from salt.demo import hadrons
from salt.demo.classes import LIGHT, TAU, B, C
from salt.demo.hadrons import B_HADRONS, C_HADRONS, TAU_CTAU, TAU_MASS
from salt.demo.tracks import FROM_B, FROM_BC, FROM_C, FROM_TAU, OTHER_SECONDARY

# kinds of displaced pair (K0s, Lambda, conversion | material): cumulative shares, and those of
# s-quark jets, which make more K0s and Lambdas
_V0_KIND_CDF = np.array([[0.5, 0.7, 0.9], [0.6, 0.9, 0.97]])


@dataclass(frozen=True)
class DecaySlots:
    """Slot indices of one (sub)jet's B vertex, its cascade charm, a charm hadron, a tau."""

    b: int
    bc: int
    c: int
    tau: int


def labelling_hadron(
    rng: np.random.Generator, species: np.ndarray, abs_pdg: np.ndarray, parent_pt: np.ndarray
) -> dict[str, np.ndarray]:
    """The hadron (or tau) of each (sub)jet ``(n,)``: signed PDG id, quark, mass, pt, lxy.

    ``abs_pdg`` is the |PDG id| of b and c hadrons (ignored otherwise); ``quark`` is anti-b for b,
    c (not anti-c) for c, tau- for tau. Light entries get id 0, pt 0 and lxy 0.
    """
    n = len(species)
    b, c, tau = species == B, species == C, species == TAU
    quark = rng.random(n) < 0.5
    pdg = np.select(
        [b, c, tau],
        [hadrons.b_signed_pdg(abs_pdg, quark), np.where(quark, abs_pdg, -abs_pdg),
         np.where(quark, 15, -15)],
        0,
    )  # fmt: skip
    b_row, c_row = B_HADRONS.index(abs_pdg).clip(max=3), C_HADRONS.index(abs_pdg).clip(max=3)
    mass = np.select([b, c, tau], [B_HADRONS.mass[b_row], C_HADRONS.mass[c_row], TAU_MASS], 1.0)
    ctau = np.select([b, c, tau], [B_HADRONS.ctau[b_row], C_HADRONS.ctau[c_row], TAU_CTAU], 0.0)
    # hadron momentum fraction: b fragmentation is hard, charm and visible tau softer
    z = 0.5 + 0.4 * np.where(b, rng.beta(3, 2, n), rng.beta(2, 2, n))
    pt = np.where(species == LIGHT, 0.0, z * parent_pt)
    lxy = rng.standard_exponential(n) * pt / mass * ctau
    return {"pdg": pdg, "quark": quark, "mass": mass, "pt": pt, "lxy": lxy}


def draw_abs_pdg(rng: np.random.Generator, species: np.ndarray) -> np.ndarray:
    """|PDG id| of the b or c hadron of each entry, by fragmentation fractions (0 otherwise)."""
    n = len(species)
    b = B_HADRONS.pdg[rng.choice(4, size=n, p=B_HADRONS.fraction)]
    c = C_HADRONS.pdg[rng.choice(4, size=n, p=C_HADRONS.fraction)]
    return np.select([species == B, species == C], [b, c], 0)


def decay_vertices(
    rng: np.random.Generator,
    s: dict[str, np.ndarray],
    slots: DecaySlots,
    species: np.ndarray,
    h: dict[str, np.ndarray],
    axis_phi: np.ndarray,
    axis_eta: np.ndarray,
    width: np.ndarray,
    barcode: np.ndarray,
) -> dict[str, np.ndarray]:
    """Fill the decay slots ``s[...][:, slot]`` of (sub)jets along ``axis_*`` ``(n,)``.

    ``h`` is `labelling_hadron`'s output; ``barcode`` ``(n,)`` the hadron's barcode (its cascade
    charm gets a higher one). Origins, charges, leptons and barcodes are set here; vertex indices
    and the pattern flag are the caller's. Returns the truth hadrons ``(n, 2)``: the B and its
    charm (b), the charm hadron (c), none otherwise (flavour 0).
    """
    n = len(species)
    b, c, tau = species == B, species == C, species == TAU
    had_pt, lxy, pdg = h["pt"], h["lxy"], h["pdg"]
    safe_had = np.maximum(had_pt, 1.0)
    hf_phi = axis_phi + rng.normal(0, 1, n) * 0.3 * width
    hf_eta = axis_eta + rng.normal(0, 1, n) * 0.3 * width
    hf_x, hf_y, hf_z = lxy * np.cos(hf_phi), lxy * np.sin(hf_phi), lxy * np.sin(hf_eta)
    hf_spread = np.minimum(0.8 * h["mass"] / safe_had, 0.3)

    # the cascade charm of a B holds the partner of the b's quark (anti-b -> anti-c)
    cascade = hadrons.draw_charm(rng, n, ~h["quark"])
    c_pdg = np.where(b, cascade, np.where(c, pdg, 0))
    q_charm = np.where(b | c, hadrons.signed_charge(C_HADRONS, c_pdg), 0)
    q_b = np.where(b, hadrons.signed_charge(B_HADRONS, np.where(b, pdg, 511)), 0)
    b_quark_sign = np.where(h["quark"], 1, -1)  # +1: anti-b (charge +1/3) in b jets
    c_quark_sign = np.where(c_pdg > 0, 1, -1)  # +1: c (charge +2/3)

    # charged decay products before reconstruction (parity follows the charge to share out);
    # displaced tracks are lost once the decay is beyond the inner pixel layers
    n_b = 1 + rng.binomial(4, 0.45, n)
    n_b += (n_b + q_b - q_charm) % 2
    n_bc = rng.binomial(4, 0.5, n)
    n_bc += (n_bc + q_charm) % 2
    n_c = 1 + rng.binomial(3, 0.5, n)
    n_c += (n_c + q_charm) % 2
    n_tau = np.where(rng.random(n) < 0.75, 1, 3)
    eff = 0.92 * np.clip((200.0 - lxy) / 160.0, 0.0, 1.0)
    for slot, mask, n_true, share, target, origin in (
        (slots.b, b, n_b, 0.6 / (n_b + n_bc), q_b - q_charm, FROM_B),
        (slots.c, c, n_c, 0.6 / n_c, q_charm, FROM_C),
        (slots.tau, tau, n_tau, 0.8 / n_tau, -np.sign(pdg), FROM_TAU),
    ):
        s["count"][:, slot] = np.where(mask, rng.binomial(n_true, eff), 0)
        for key, val in (("x", hf_x), ("y", hf_y), ("z", hf_z), ("phi", hf_phi), ("eta", hf_eta)):
            s[key][:, slot] = val
        s["spread"][:, slot] = hf_spread
        s["ptscale"][:, slot] = share * had_pt
        s["charge"][:, slot] = np.where(mask, target, 0)
        s["origin"][:, slot] = origin

    # charm from the B decay flies on from the B vertex, carrying about 60% of its momentum
    charm_pt = safe_had * rng.uniform(0.4, 0.8, n)
    c_row = C_HADRONS.index(np.abs(cascade))
    c_mass, c_ctau = C_HADRONS.mass[c_row], C_HADRONS.ctau[c_row]
    c_lxy = rng.standard_exponential(n) * charm_pt / c_mass * c_ctau
    c_phi = hf_phi + rng.normal(0, 0.5, n) * hf_spread
    c_eta = hf_eta + rng.normal(0, 0.5, n) * hf_spread
    c_x, c_y = hf_x + c_lxy * np.cos(c_phi), hf_y + c_lxy * np.sin(c_phi)
    c_eff = 0.92 * np.clip((200.0 - np.hypot(c_x, c_y)) / 160.0, 0.0, 1.0)
    bc = slots.bc
    s["count"][:, bc] = np.where(b, rng.binomial(n_bc, c_eff), 0)
    s["x"][:, bc], s["y"][:, bc], s["z"][:, bc] = c_x, c_y, hf_z + c_lxy * np.sin(c_eta)
    s["phi"][:, bc], s["eta"][:, bc] = c_phi, c_eta
    s["spread"][:, bc] = np.minimum(0.8 * c_mass / charm_pt, 0.3)
    s["ptscale"][:, bc] = 0.6 * charm_pt / np.maximum(n_bc, 1)
    s["charge"][:, bc] = np.where(b, q_charm, 0)
    s["origin"][:, bc] = FROM_BC

    # semileptonic decays: B -> l 21%, B -> C -> l 20%, C -> l (c jets) 16%, half e, half mu;
    # b -> l-, anti-b -> l+, c -> l+: the lepton's charge follows the quark
    u = rng.random((n, 3))
    for col, slot, p, sign in (
        (0, slots.b, 0.21, b_quark_sign), (1, bc, 0.20, c_quark_sign),
        (2, slots.c, 0.16, c_quark_sign),
    ):  # fmt: skip
        s["lepton"][:, slot] = np.where(u[:, col] < p, np.where(u[:, col] < p / 2, 11, 13), 0)
        s["lepton_charge"][:, slot] = np.where(s["lepton"][:, slot] != 0, sign, 0)

    # the tracks of each hadron carry its barcode
    c_code = barcode + rng.integers(1, 60, n)
    s["barcode"][:, slots.b] = np.where(b, barcode, -1)
    s["barcode"][:, bc] = np.where(b, c_code, -1)
    s["barcode"][:, slots.c] = np.where(c, barcode, -1)
    return {
        "barcode": np.stack([barcode, c_code], axis=1),
        "flavour": np.stack([np.select([b, c], [5, 4], 0), np.where(b, 4, 0)], axis=1),
        "pt": np.stack([had_pt, charm_pt], axis=1),
        "lxy": np.stack([lxy, np.where(b, np.hypot(c_x, c_y), lxy)], axis=1),
        "deta": np.stack([hf_eta, c_eta], axis=1),
        "dphi": np.stack([hf_phi, c_phi], axis=1),
        "mass": np.stack([h["mass"], c_mass], axis=1),
    }


def v0_pairs(
    rng: np.random.Generator,
    s: dict[str, np.ndarray],
    slots: slice,
    rate: np.ndarray,
    axis_phi: np.ndarray,
    axis_eta: np.ndarray,
    width: np.ndarray,
    strange: np.ndarray,
) -> None:
    """Displaced pairs (K0s, Lambda, conversions, material) in ``slots``, ``rate`` per slot."""
    n, k = len(rate), slots.stop - slots.start
    v0 = rng.random((n, k)) < rate[:, None]
    s["count"][:, slots] = v0 * (2 - (rng.random((n, k)) < 0.15))
    v0_l = 1.0 + rng.exponential(8.0, (n, k))
    v0_phi = axis_phi[:, None] + rng.normal(0, 1, (n, k)) * width[:, None]
    v0_eta = axis_eta[:, None] + rng.normal(0, 1, (n, k)) * width[:, None]
    s["x"][:, slots], s["y"][:, slots] = v0_l * np.cos(v0_phi), v0_l * np.sin(v0_phi)
    s["z"][:, slots], s["phi"][:, slots] = v0_l * np.sin(v0_eta), v0_phi
    s["eta"][:, slots] = v0_eta
    s["spread"][:, slots] = 0.06
    s["ptscale"][:, slots] = 1500.0
    s["origin"][:, slots] = OTHER_SECONDARY
    s["pattern"][:, slots] = True
    cdf = _V0_KIND_CDF[strange.astype(int)]
    s["v0kind"][:, slots] = (rng.random((n, k, 1)) > cdf[:, None, :]).sum(axis=2)
