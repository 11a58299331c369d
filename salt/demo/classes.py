"""Jet classes a demo dataset can hold: ftag flavour names, their truth labels and their mix.

A class is an ftag flavour name (``Flavours[name]``). Each class is a set of *records*, the kinds
of jet it holds (species, parton label, hadron), and each record carries the truth labels that
ftag's cuts for the class select. `check_classes` proves with ftag's own cuts that every class
selects exactly its records and none of another class, so the labels and ``flavour_label`` agree
for any supported choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from ftag import Flavours

from salt.demo.errors import DemoDataError
from salt.demo.hadrons import B_HADRONS, C_HADRONS
from salt.errors import close_matches

# small-R species (what makes the tracks) and their share of a ttbar-like sample
B, C, LIGHT, TAU = range(4)
HADRON_LABEL = np.array([5, 4, 0, 15], dtype=np.int32)  # HadronConeExcl/GhostTruthLabelID
NATURAL_SHARE = np.array([0.28, 0.14, 0.50, 0.08])
# PartonTruthLabelID of light jets (1 u, 2 d, 3 s, 21 g) and their shares
LIGHT_PARTONS = {1: 0.28, 2: 0.28, 3: 0.14, 21: 0.30}
PARTON_LABEL = np.array([5, 4, 0, 15])  # of b, c and tau jets (light jets: LIGHT_PARTONS)
TAU_FRACTION_WEIGHT = 1 / 3  # train/val: tau classes a third of the others, as UPP's 0.3:...:0.1

BTAG_DEFAULT = ("bjets", "cjets", "ujets", "taujets")


@dataclass(frozen=True)
class Record:
    """One kind of jet: its species, parton label, |PDG id| of its hadron, and natural share."""

    species: int
    parton: int
    hadron: int
    share: float


def _records(
    species: int, partons: tuple[int, ...] | None = None, hadrons: tuple[int, ...] | None = None
) -> tuple[Record, ...]:
    total = NATURAL_SHARE[species]
    if species == LIGHT:
        chosen = {p: LIGHT_PARTONS[p] for p in partons or LIGHT_PARTONS}
        return tuple(Record(LIGHT, p, 0, total * w) for p, w in chosen.items())
    if species == TAU:
        return (Record(TAU, 15, 15, total),)
    table = B_HADRONS if species == B else C_HADRONS
    keep = [i for i, p in enumerate(table.pdg) if hadrons is None or p in hadrons]
    parton = PARTON_LABEL[species]
    return tuple(Record(species, parton, table.pdg[i], total * table.fraction[i]) for i in keep)


# What each supported class name holds in a small-R (kind "btag") dataset.
BTAG_CLASSES: dict[str, tuple[Record, ...]] = {
    "bjets": _records(B),
    "cjets": _records(C),
    "ujets": _records(LIGHT),
    "taujets": _records(TAU),
    "ghostbjets": _records(B),
    "ghostcjets": _records(C),
    "ghostsjets": _records(LIGHT, partons=(3,)),
    "ghostudjets": _records(LIGHT, partons=(1, 2)),
    "ghostgjets": _records(LIGHT, partons=(21,)),
    "ghosttaujets": _records(TAU),
    "upjets": _records(LIGHT, partons=(1,)),
    "downjets": _records(LIGHT, partons=(2,)),
    "strangejets": _records(LIGHT, partons=(3,)),
    "gluonjets": _records(LIGHT, partons=(21,)),
    "lquarkjets": _records(LIGHT, partons=(1, 2, 3)),
    "B0meson": _records(B, hadrons=(511,)),
    "Bplusmeson": _records(B, hadrons=(521,)),
    "Bs0meson": _records(B, hadrons=(531,)),
    "D0meson": _records(C, hadrons=(421,)),
    "nonD0meson": _records(C, hadrons=(411, 431, 4122)),
    "Dplusmeson": _records(C, hadrons=(411,)),
    "Dsplusmeson": _records(C, hadrons=(431,)),
}


@dataclass(frozen=True)
class ClassTable:
    """The records of the chosen classes, flat, with the probability of each per split kind."""

    names: tuple[str, ...]
    species: np.ndarray  # (R,) per record
    parton: np.ndarray
    hadron: np.ndarray
    label: np.ndarray  # flavour_label of the record's class
    train_p: np.ndarray  # train/val: classes in equal parts (tau a third)
    natural_p: np.ndarray  # test: a ttbar-like mix

    def fractions(self, natural: bool) -> np.ndarray:
        """Fraction of each class in a split, ``(num_classes,)``."""
        p = self.natural_p if natural else self.train_p
        return np.bincount(self.label, weights=p, minlength=len(self.names))


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """``"bjets, cjets"`` -> ``("bjets", "cjets")``; None stays None."""
    if text is None:
        return None
    return tuple(name.strip() for name in text.split(",") if name.strip())


def btag_table(classes: tuple[str, ...] | list[str] | None) -> ClassTable:
    """Records of the chosen small-R classes, checked against ftag's cuts."""
    names = tuple(classes) if classes is not None else BTAG_DEFAULT
    check_classes(names, BTAG_CLASSES, "btag", btag_labels)
    return _table(names, BTAG_CLASSES, tau_species=TAU)


def _table(names: tuple[str, ...], recipes: dict, tau_species: int | None) -> ClassTable:
    rows = [(i, r) for i, name in enumerate(names) for r in recipes[name]]
    label = np.array([i for i, _ in rows])
    share = np.array([r.share for _, r in rows])
    class_share = np.bincount(label, weights=share)
    within = share / class_share[label]
    weight = np.array(
        [TAU_FRACTION_WEIGHT if recipes[n][0].species == tau_species else 1.0 for n in names]
    )
    train_p = within * weight[label] / weight.sum()
    return ClassTable(
        names=names,
        species=np.array([r.species for _, r in rows]),
        parton=np.array([r.parton for _, r in rows]),
        hadron=np.array([r.hadron for _, r in rows]),
        label=label,
        train_p=train_p,
        natural_p=share / share.sum(),
    )


def check_classes(
    names: tuple[str, ...],
    recipes: dict[str, tuple],
    kind: str,
    labeller: Callable[[list], np.ndarray],
) -> None:
    """Raise `DemoDataError` unless every name is supported and ftag's cuts tell them apart.

    Each class's cuts (``Flavours[name].cuts``) must select all of its records and none of the
    other classes' records, so that the truth labels written agree with ``flavour_label``.
    """
    if not names:
        raise DemoDataError("--classes is empty: give ftag flavour names, e.g. bjets,cjets,ujets")
    if len(set(names)) != len(names):
        raise DemoDataError(f"--classes {','.join(names)} names a class twice")
    for name in names:
        if name not in recipes:
            known = ", ".join(recipes)
            hint = close_matches(name, recipes)
            raise DemoDataError(
                f"class {name!r} cannot be written by --kind {kind}.{hint} "
                f"Supported ftag flavours for this kind: {known}"
            )
    labels = labeller([r for n in names for r in recipes[n]])
    owner = np.array([i for i, n in enumerate(names) for _ in recipes[n]])
    for i, name in enumerate(names):
        selected = np.zeros(len(labels), dtype=bool)
        selected[Flavours[name].cuts(labels).idx] = True
        if not selected[owner == i].all():  # a mistake in the recipes, not in the user's input
            raise AssertionError(f"ftag's cuts for {name} miss some of its own demo jets")
        if clash := sorted({names[j] for j in owner[selected & (owner != i)]}):
            cuts = " and ".join(str(c) for c in Flavours[name].cuts)
            raise DemoDataError(
                f"--classes {','.join(names)}: ftag's cuts for {name!r} ({cuts}) also select "
                f"{', '.join(clash)} jets, so flavour_label would be ambiguous. "
                "Choose classes that exclude each other."
            )


def btag_labels(recs: list[Record]) -> np.ndarray:
    """The truth labels of small-R records, a structured array ftag's cuts read."""
    dtype = [
        ("HadronConeExclTruthLabelID", "<i4"),
        ("HadronGhostTruthLabelID", "<i4"),
        ("PartonTruthLabelID", "<i4"),
        ("HadronConeExclTruthLabelPdgId", "<i4"),
    ]
    out = np.zeros(len(recs), dtype=dtype)
    out["HadronConeExclTruthLabelID"] = [HADRON_LABEL[r.species] for r in recs]
    out["HadronGhostTruthLabelID"] = out["HadronConeExclTruthLabelID"]
    out["PartonTruthLabelID"] = [r.parton for r in recs]
    out["HadronConeExclTruthLabelPdgId"] = [r.hadron for r in recs]
    return out
