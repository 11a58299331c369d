"""Tagging discriminants: one score per jet from a tagger's class probabilities.

Both are log-likelihood ratios of a signal class against a fraction-weighted sum of backgrounds,
read from the probability fields `salt test` writes (`<tagger>_<px>`, ftag's short names):

* b-tagging: D_b = log(p_b / (f_c p_c + f_tau p_tau + f_u p_u)), where p_u is the light
  probability: `pu`, or for ghost-labelled light classes the sum `pud + ps + pg`.
* Higgs tagging: D_Hbb = log(p_hbb / (f_top p_top + f_hcc p_hcc + f_qcd p_qcd)) with
  f_qcd = 1 - f_top - f_hcc, where p_qcd sums every QCD class of a split labeller
  (`pqcdbb`, `pqcdbx`, `pqcdcx`, `pqcdll`, ...).

A background the tagger has no output for gets fraction 0 (the last background absorbs it) and
a note for the reader. Arrays are `(N,)` structured jets; results are `(N,)` float64.
"""

from __future__ import annotations

import numpy as np

#: Added to numerator and denominator (as ftag's get_discriminant does): a probability of 0
#: gives a finite score.
EPSILON = 1e-10
#: Light probabilities: one class, or the ghost-labelled split into ud, s and g.
LIGHT_PX = ("pu", "pud", "ps", "pg")
#: Default fractions of D_b and D_Hbb.
FC, FTAU = 0.2, 0.01
FTOP, FHCC = 0.25, 0.02


def _sum(jets: np.ndarray, tagger: str, pxs: list[str]) -> np.ndarray | None:
    """Sum of the `<tagger>_<px>` fields present (float64), None when none is."""
    names = [f"{tagger}_{p}" for p in pxs if f"{tagger}_{p}" in jets.dtype.names]
    if not names:
        return None
    return np.sum([jets[n].astype(np.float64) for n in names], axis=0)


def _log_ratio(signal: np.ndarray, terms: list[tuple[float, np.ndarray | None]]) -> np.ndarray:
    denominator = sum(f * p for f, p in terms if f and p is not None)
    return np.log((signal + EPSILON) / (denominator + EPSILON))


def qcd_pxs(fields: tuple[str, ...] | list[str], tagger: str) -> list[str]:
    """The QCD probability names of a tagger: `pqcd` and the classes of a split (`pqcd*`)."""
    prefix = f"{tagger}_pqcd"
    return [n[len(tagger) + 1 :] for n in fields if n.startswith(prefix)]


def has_btag(fields: tuple[str, ...] | list[str], tagger: str) -> bool:
    """Whether a tagger has b-tagging outputs (`<tagger>_pb`)."""
    return f"{tagger}_pb" in fields


def has_xbb(fields: tuple[str, ...] | list[str], tagger: str) -> bool:
    """Whether a tagger has Higgs-tagging outputs (`<tagger>_phbb`)."""
    return f"{tagger}_phbb" in fields


def btag_fractions(fc: float, ftau: float, has_ptau: bool) -> tuple[dict[str, float], list[str]]:
    """Background fractions of D_b, and notes for the reader when they had to change.

    Returns `({"fc", "fu", "ftau"}, notes)` with `fu = 1 - fc - ftau`. A tagger trained without
    a tau class has no `p_tau`, so f_tau is set to 0 (and the light fraction absorbs it).
    """
    notes = []
    if not has_ptau and ftau != 0:
        notes.append(f"no p_tau output: f_tau set to 0 (instead of {ftau:g})")
        ftau = 0.0
    fu = 1.0 - fc - ftau
    if not (0 <= fc <= 1 and 0 <= ftau <= 1 and fu >= 0):
        raise ValueError(
            f"Discriminant fractions must lie in [0, 1] and f_c + f_tau <= 1, "
            f"got f_c={fc}, f_tau={ftau}."
        )
    return {"fc": float(fc), "fu": float(fu), "ftau": float(ftau)}, notes


def xbb_fractions(
    ftop: float, fhcc: float, has_ptop: bool = True, has_phcc: bool = True
) -> tuple[dict[str, float], list[str]]:
    """Background fractions of D_Hbb, and notes when a missing output set one to 0.

    Returns `({"ftop", "fhcc", "fqcd"}, notes)` with `fqcd = 1 - ftop - fhcc`.
    """
    notes = []
    for name, present in (("ftop", has_ptop), ("fhcc", has_phcc)):
        value = ftop if name == "ftop" else fhcc
        if not present and value != 0:
            notes.append(f"no p_{name[1:]} output: f_{name[1:]} set to 0 (instead of {value:g})")
            if name == "ftop":
                ftop = 0.0
            else:
                fhcc = 0.0
    fqcd = 1.0 - ftop - fhcc
    if not (0 <= ftop <= 1 and 0 <= fhcc <= 1 and fqcd >= 0):
        raise ValueError(
            f"Discriminant fractions must lie in [0, 1] and f_top + f_hcc <= 1, "
            f"got f_top={ftop}, f_hcc={fhcc}."
        )
    return {"ftop": float(ftop), "fhcc": float(fhcc), "fqcd": float(fqcd)}, notes


def b_discriminant(jets: np.ndarray, tagger: str, fractions: dict[str, float]) -> np.ndarray:
    """D_b per jet.

    Parameters
    ----------
    jets
        Structured array `(N,)` with `<tagger>_pb`, `<tagger>_pc`, the light probability (`pu`,
        or `pud`, `ps`, `pg`) and `<tagger>_ptau` when `fractions["ftau"] > 0`.
    tagger
        Prefix of the probability fields, e.g. `GN2`.
    fractions
        `{"fc", "fu", "ftau"}` as returned by :func:`btag_fractions`.

    Returns
    -------
    np.ndarray
        `(N,)` float64 discriminant.
    """
    light = _sum(jets, tagger, list(LIGHT_PX))
    if light is None and fractions["fu"]:
        raise ValueError(f"No light probability ({tagger}_pu or _pud/_ps/_pg) in the jets.")
    if fractions["ftau"] and f"{tagger}_ptau" not in jets.dtype.names:
        raise ValueError(f"f_tau = {fractions['ftau']:g} but the jets lack {tagger}_ptau.")
    return _log_ratio(
        jets[f"{tagger}_pb"].astype(np.float64),
        [
            (fractions["fc"], _sum(jets, tagger, ["pc"])),
            (fractions["ftau"], _sum(jets, tagger, ["ptau"])),
            (fractions["fu"], light),
        ],
    )


def hbb_discriminant(jets: np.ndarray, tagger: str, fractions: dict[str, float]) -> np.ndarray:
    """D_Hbb per jet.

    Parameters
    ----------
    jets
        Structured array `(N,)` with `<tagger>_phbb`, the QCD probabilities (`pqcd` or a split
        `pqcd*`), and `<tagger>_ptop`, `<tagger>_phcc` where their fractions are not 0.
    tagger
        Prefix of the probability fields, e.g. `GN2X`.
    fractions
        `{"ftop", "fhcc", "fqcd"}` as returned by :func:`xbb_fractions`.

    Returns
    -------
    np.ndarray
        `(N,)` float64 discriminant.
    """
    qcd = _sum(jets, tagger, qcd_pxs(jets.dtype.names, tagger))
    if qcd is None and fractions["fqcd"]:
        raise ValueError(f"No QCD probability ({tagger}_pqcd or _pqcd*) in the jets.")
    for px, key in (("ptop", "ftop"), ("phcc", "fhcc")):
        if fractions[key] and f"{tagger}_{px}" not in jets.dtype.names:
            raise ValueError(f"{key} = {fractions[key]:g} but the jets lack {tagger}_{px}.")
    return _log_ratio(
        jets[f"{tagger}_phbb"].astype(np.float64),
        [
            (fractions["ftop"], _sum(jets, tagger, ["ptop"])),
            (fractions["fhcc"], _sum(jets, tagger, ["phcc"])),
            (fractions["fqcd"], qcd),
        ],
    )
