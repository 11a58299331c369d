"""Heavy-flavour hadrons of the demo jets: species, charges, decay lengths, and `truth_hadrons`.

A b jet holds one B hadron (B0, B+, Bs, Lambda_b) whose decay makes a charm hadron (the b -> c
cascade); a c jet holds one charm hadron (D0, D+, Ds, Lambda_c). Signs follow the PDG: a positive
B-meson id holds an anti-b quark, a positive Lambda_b holds a b quark, and every positive charm id
holds a c quark. The charges of the decay tracks, the sign of the semileptonic lepton and the
cascade charm's flavour all follow the quark, so a charge tagger has something to learn.

`truth_hadrons` is ``(N, 5)``: per jet the B and its cascade charm (b jets) or the charm hadron
(c jets), with a barcode that the tracks of each decay carry in ``ftagTruthParentBarcode``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HadronTable:
    """Weakly decaying hadrons of one flavour, indexed alike; ids and charges of the particle."""

    pdg: np.ndarray  # positive PDG id
    fraction: np.ndarray  # fragmentation fraction
    mass: np.ndarray  # MeV
    ctau: np.ndarray  # mm
    charge: np.ndarray  # of the positive-id particle

    def index(self, abs_pdg: np.ndarray) -> np.ndarray:
        """Row of each ``|pdg|`` in this table."""
        return np.searchsorted(self.pdg, abs_pdg)


B_HADRONS = HadronTable(
    pdg=np.array([511, 521, 531, 5122]),
    fraction=np.array([0.40, 0.40, 0.10, 0.10]),
    mass=np.array([5279.7, 5279.3, 5366.9, 5619.6]),
    ctau=np.array([0.456, 0.491, 0.453, 0.441]),
    charge=np.array([0, 1, 0, 0]),
)
C_HADRONS = HadronTable(
    pdg=np.array([411, 421, 431, 4122]),
    fraction=np.array([0.24, 0.56, 0.10, 0.10]),
    mass=np.array([1869.7, 1864.8, 1968.4, 2286.5]),
    ctau=np.array([0.312, 0.123, 0.150, 0.061]),
    charge=np.array([1, 0, 1, 1]),
)
TAU_MASS, TAU_CTAU = 1776.9, 0.087  # tau- is PDG id 15, charge -1
BARYON_MIN_PDG = 1000  # ids of (anti)baryons are four digits

NUM_HADRON_SLOTS = 5
HADRON_DTYPE = np.dtype(
    [
        ("barcode", "<i4"),
        ("flavour", "<i4"),
        *[(n, "<f4") for n in ("pt", "Lxy", "deta", "dphi", "mass")],
        ("valid", "|b1"),
    ]
)


def b_signed_pdg(abs_pdg: np.ndarray, anti_b: np.ndarray) -> np.ndarray:
    """Signed B-hadron id: mesons with an anti-b quark and baryons with a b quark are positive."""
    baryon = abs_pdg > BARYON_MIN_PDG
    return np.where(anti_b != baryon, abs_pdg, -abs_pdg)


def signed_charge(table: HadronTable, signed_pdg: np.ndarray) -> np.ndarray:
    """Electric charge of each hadron, the antiparticle's being the opposite."""
    return table.charge[table.index(np.abs(signed_pdg))] * np.sign(signed_pdg)


def draw_charm(rng: np.random.Generator, n: int, c_quark: np.ndarray) -> np.ndarray:
    """Signed charm-hadron ids, ``(n,)``: positive where the hadron holds a c (not anti-c)."""
    abs_pdg = C_HADRONS.pdg[rng.choice(len(C_HADRONS.pdg), size=n, p=C_HADRONS.fraction)]
    return np.where(c_quark, abs_pdg, -abs_pdg)


def truth_hadrons(
    n: int,
    barcode: np.ndarray,
    flavour: np.ndarray,
    pt: np.ndarray,
    lxy: np.ndarray,
    deta: np.ndarray,
    dphi: np.ndarray,
    mass: np.ndarray,
) -> np.ndarray:
    """The ``truth_hadrons`` dataset ``(n, 5)`` from per-jet hadron columns ``(n, H)``, H <= 5.

    A hadron exists where ``flavour > 0``; jets list theirs first, padding follows UPP's rule
    (NaN floats, -1 integers, ``valid`` False).
    """
    out = np.zeros((n, NUM_HADRON_SLOTS), dtype=HADRON_DTYPE)
    for name in ("pt", "Lxy", "deta", "dphi", "mass"):
        out[name] = np.nan
    out["barcode"] = out["flavour"] = -1
    exists = flavour > 0
    # hadrons of a jet are listed before its empty slots
    order = np.argsort(~exists, axis=1, kind="stable")
    cols = np.arange(flavour.shape[1])
    rows = np.arange(n)[:, None]
    exists = exists[rows, order]
    for name, values in (
        ("barcode", barcode), ("flavour", flavour), ("pt", pt), ("Lxy", lxy), ("deta", deta),
        ("dphi", dphi), ("mass", mass),
    ):  # fmt: skip
        view = out[name][:, cols]
        view[exists] = values[rows, order][exists]
        out[name][:, cols] = view
    out["valid"][:, cols] = exists
    return out
