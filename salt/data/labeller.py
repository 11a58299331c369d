"""`data.labeller_config`: the jets' `flavour_label` computed from truth labels while reading.

    labeller_config:
      use_labeller: true
      class_names: [hbb, hcc, top, qcdbb, qcdbx, qcdcx, qcdll]
      require_labels: true

Each class is a flavour of atlas-ftag-tools (`ftag.Flavours[name]`), defined by cuts on jet truth
variables (``R10TruthLabel_R22v1 == 10``, ``GhostBHadronsFinalCount >= 2``, ...). A jet's label
is the position in `class_names` of the class whose cuts it passes. ftag's classes of one family
are disjoint; a jet that passes the cuts of two chosen classes is an error (the classes overlap,
and no order of them would be right). A jet that passes none is an error with
``require_labels: true``; with ``false`` it gets label -1, which the classification loss ignores,
and salt warns once.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from ftag import Flavours

from salt.data.records import Columns
from salt.errors import SaltError, close_matches

log = logging.getLogger(__name__)

LABEL = "flavour_label"


@dataclass
class LabellerConfig:
    """Relabel jets on the fly (see the module docstring)."""

    use_labeller: bool = False
    class_names: list[str] | None = None
    require_labels: bool = True


def as_labeller_config(config) -> LabellerConfig | None:
    """A `LabellerConfig` from the dataclass, a mapping or a parsed config's Namespace."""
    if config is None or isinstance(config, LabellerConfig):
        return config
    if hasattr(config, "as_dict"):
        config = config.as_dict()
    if not isinstance(config, dict):
        raise SaltError(
            f"data.labeller_config should be {{use_labeller, class_names, require_labels}}, found "
            f"{config!r}."
        )
    unknown = set(config) - {"use_labeller", "class_names", "require_labels"}
    if unknown:
        raise SaltError(
            f"data.labeller_config has unknown keys {sorted(unknown)}; it takes use_labeller, "
            "class_names and require_labels."
        )
    return LabellerConfig(**config)


class FlavourLabeller:
    """Computes `flavour_label` of jets from the cuts of ftag's flavour classes.

    Parameters
    ----------
    config
        The labeller config; `class_names` are ftag flavour names.
    """

    def __init__(self, config: LabellerConfig):
        self.class_names = list(config.class_names or [])
        self.require_labels = bool(config.require_labels)
        if not self.class_names:
            raise SaltError(
                "data.labeller_config.use_labeller is true but class_names is empty: list the ftag "
                "flavours to label jets with, e.g. class_names: [bjets, cjets, ujets, taujets]."
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise SaltError(f"data.labeller_config.class_names repeats a name: {self.class_names}.")
        known = [flavour.name for flavour in Flavours]
        self.cuts = []
        for name in self.class_names:
            if name not in known:
                raise SaltError(
                    f"data.labeller_config.class_names: '{name}' is not a flavour that "
                    f"atlas-ftag-tools defines.{close_matches(name, known)} Known flavours include "
                    f"{', '.join(known[:12])}, ..."
                )
            self.cuts.append(Flavours[name].cuts)
        self._warned = False

    @property
    def variables(self) -> list[str]:
        """The truth variables the cuts read."""
        return list(dict.fromkeys(v for cuts in self.cuts for v in cuts.variables))

    def check(self, record: np.dtype, dataset: str, where: str) -> None:
        """Refuse a jet record type that lacks a variable some class's cuts need."""
        fields = record.names or ()
        for name, cuts in zip(self.class_names, self.cuts):
            missing = [v for v in cuts.variables if v not in fields]
            if missing:
                raise SaltError(
                    f"data.labeller_config: class '{name}' is defined by {cuts} and needs "
                    f"{', '.join(missing)}, which dataset '{dataset}' of {where} does not have. "
                    "Use a file with these truth variables or other class_names."
                )

    def __call__(self, columns: Columns, first_jet: int, where: str) -> np.ndarray:
        """`(rows,)` int64 class index of each jet record behind `columns` (-1: no class).

        `first_jet` is the file row of the first record, for messages.
        """
        n = columns.size
        labels = np.full(n, -1, np.int64)
        matched = np.zeros(n, np.int8)
        for index, cuts in enumerate(self.cuts):
            passing = np.ones(n, bool)
            for cut in cuts:
                passing &= cut(columns)
            labels[passing] = index
            matched += passing
        if matched.max(initial=0) > 1:
            row = int(np.flatnonzero(matched > 1)[0])
            names = [
                name
                for name, cuts in zip(self.class_names, self.cuts)
                if _passes(cuts, columns, row)
            ]
            raise SaltError(
                f"{where}: jet {first_jet + row} belongs to the classes {' and '.join(names)} of "
                "data.labeller_config.class_names, which overlap. Choose classes that exclude each "
                "other (ftag's classes of one category do)."
            )
        unlabelled = labels < 0
        if unlabelled.any():
            row = int(np.flatnonzero(unlabelled)[0])
            what = (
                f"jet {first_jet + row} passes the cuts of none of the classes "
                f"{', '.join(self.class_names)} (data.labeller_config)"
            )
            if self.require_labels:
                raise SaltError(
                    f"{where}: {what}. Add its class, or set require_labels: false to give such "
                    "jets label -1, which the loss ignores."
                )
            if not self._warned:
                self._warned = True
                message = (
                    f"{where}: {what}; such jets get label -1 and the loss ignores them "
                    "(require_labels: false). Warned once."
                )
                log.warning(message)
                warnings.warn(message, stacklevel=2)
        return labels


def _passes(cuts, columns: Columns, row: int) -> bool:
    return all(bool(cut(columns)[row]) for cut in cuts)
