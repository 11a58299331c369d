"""`data.selections`: cuts on constituent variables; a constituent failing any becomes padding.

    selections: {tracks: ["d0 < 3.5", "numberOfSCTHoles < 1.1"]}

Cuts are parsed by atlas-ftag-tools (`ftag.cuts.Cuts`: ``"variable operator value"``, separated
by single spaces) and evaluated on the raw records of the batch's valid constituents only, so a
cut variable need not be an input. The surviving constituents are the batch's `valid` ones: the
model, the labels and the prediction files all see the selection.
"""

from __future__ import annotations

import numpy as np
from ftag.cuts import OPERATORS, Cut, Cuts

from salt.data.records import Columns
from salt.errors import SaltError, close_matches

_FORM = "'variable operator value' with single spaces, e.g. 'd0 < 3.5'"


def _parse(name: str, text: object) -> Cut:
    where = f"data.selections.{name}: cut {text!r}"
    if not isinstance(text, str):
        raise SaltError(f"{where} is not a string; write each cut as {_FORM}.")
    try:
        (cut,) = Cuts.from_list([text]).cuts
    except (TypeError, ValueError):
        raise SaltError(f"{where} cannot be parsed; write it as {_FORM}.") from None
    if cut.operator not in OPERATORS:
        ops = ", ".join(op for op in OPERATORS if not op.startswith("%"))
        raise SaltError(f"{where} has the unknown operator '{cut.operator}'; use one of {ops}.")
    bad_value = f"{where}: its value is not a number (or a tuple of numbers, e.g. '(1,6,7)')."
    try:
        value = cut.value
    except (ValueError, SyntaxError):
        raise SaltError(bad_value) from None
    if isinstance(value, str):
        raise SaltError(bad_value)
    return cut


class Selection:
    """The cuts on one constituent type.

    Parameters
    ----------
    name
        Config name of the constituent type (``tracks``).
    cuts
        Cut strings, all of which a constituent must pass.
    """

    def __init__(self, name: str, cuts: list[str]):
        self.name = name
        self.texts = list(cuts)
        self.cuts = [_parse(name, text) for text in self.texts]

    @property
    def variables(self) -> list[str]:
        return list(dict.fromkeys(cut.variable for cut in self.cuts))

    def check(self, record: np.dtype, dataset: str, where: str) -> None:
        """Refuse cuts on variables that the dataset's records lack or that are not numeric."""
        fields = record.names or ()
        for text, cut in zip(self.texts, self.cuts):
            if cut.variable not in fields:
                raise SaltError(
                    f"data.selections.{self.name}: cut '{text}' needs variable '{cut.variable}', "
                    f"which dataset '{dataset}' of {where} does not have."
                    f"{close_matches(cut.variable, fields)} Fix the cut or use a file that has it."
                )
            kind = record.fields[cut.variable][0].kind
            if kind not in "biuf" or record.fields[cut.variable][0].shape:
                raise SaltError(
                    f"data.selections.{self.name}: cut '{text}' is on '{cut.variable}' of dataset "
                    f"'{dataset}' in {where}, which is not a numeric scalar."
                )

    def passing(self, columns: Columns) -> np.ndarray:
        """`(rows,)` bool: which of the records behind `columns` pass every cut."""
        keep = np.ones(columns.size, bool)
        for cut in self.cuts:
            keep &= cut(columns)
        return keep


def parse_selections(selections: dict[str, list[str] | None] | None) -> dict[str, Selection]:
    """`data.selections` as one `Selection` per constituent type with cuts (None: none)."""
    if selections is None:
        return {}
    if not isinstance(selections, dict):
        raise SaltError(
            f"data.selections should map constituent types to lists of cuts, e.g. "
            f"{{tracks: ['d0 < 3.5']}}; found {selections!r}."
        )
    out = {}
    for name, cuts in selections.items():
        if cuts is None:
            continue
        if isinstance(cuts, str):
            cuts = [cuts]
        out[name] = Selection(name, list(cuts))
    return out
