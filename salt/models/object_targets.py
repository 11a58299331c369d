"""Truth objects (e.g. b and c hadrons) of each jet, and which of the jet's tracks each one owns.

Shapes: B jets, K object slots per jet in the file (``truth_hadrons`` is ``(B, K)``), N valid
tracks of the batch, packed jet after jet (`salt.models.layout.Packed`).

An object is real when its slot is valid (the dataset's ``valid`` field, where there is one) and
its class is not the null class. A track belongs to the real object of its own jet whose id equals
the track's parent id (``ftagTruthParentBarcode`` against the object's ``barcode``):

* a track whose parent id matches no real object of its jet belongs to no object (a primary or
  pile-up track, or a track from a hadron that the file does not list);
* a real object that owns no track is kept, with an empty mask: as upstream salt-ml does, it is
  still matched and its class still learned, but vertex-finding efficiencies leave it out (no
  track selection can find it);
* a negative object id matches no track;
* an object class missing from ``object_classes`` is an error (`SaltError`), never a silent null.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from salt.errors import SaltError
from salt.models.layout import Packed


@dataclass(frozen=True)
class ObjectClasses:
    """The object classes of ``mf_config.object.object_classes``: ``{name: {raw, mapped}}``.

    ``mapped`` values are the class indices the model predicts: 0..C for C real classes, and the
    last one, C, is the null class ("no object"), as in upstream salt-ml.
    """

    names: tuple[str, ...]  # ordered by mapped index; names[-1] is the null class
    raw: tuple[int, ...]  # raw label of each class, in the same order

    @classmethod
    def from_config(
        cls, object_classes: Mapping[str, Mapping[str, int]], where: str = "object_classes"
    ) -> ObjectClasses:
        """Read and check ``{name: {raw: int, mapped: int}}``."""
        if len(object_classes) < 2:
            raise SaltError(
                f"{where}: needs at least one object class and the null class, got "
                f"{list(object_classes)}; e.g. {{b: {{raw: 5, mapped: 0}}, null: {{raw: -1, "
                "mapped: 1}}."
            )
        for name, entry in object_classes.items():
            if not isinstance(entry, Mapping) or set(entry) != {"raw", "mapped"}:
                raise SaltError(
                    f"{where}.{name}: expected {{raw: <label in the file>, mapped: <class "
                    f"index>}}, got {entry!r}."
                )
        by_mapped = sorted(object_classes.items(), key=lambda item: int(item[1]["mapped"]))
        mapped = [int(v["mapped"]) for _, v in by_mapped]
        if mapped != list(range(len(mapped))):
            mapped_by_name = {n: int(v["mapped"]) for n, v in by_mapped}
            raise SaltError(
                f"{where}: the mapped values must be 0..{len(mapped) - 1}, each once, with the "
                f"null class last; got {mapped_by_name}."
            )
        raw = [int(v["raw"]) for _, v in by_mapped]
        if len(set(raw)) != len(raw):
            raise SaltError(f"{where}: two classes share a raw label: {raw}.")
        # YAML reads an unquoted `null:` key as None: the null class's usual name
        return cls(tuple("null" if n is None else str(n) for n, _ in by_mapped), tuple(raw))

    @property
    def num_classes(self) -> int:
        """Real (non-null) classes: the decoder's ``num_classes``."""
        return len(self.names) - 1

    @property
    def null_index(self) -> int:
        return len(self.names) - 1

    def map_raw(self, raw: Tensor, where: str = "object class label") -> Tensor:
        """Raw labels (any shape, integer) -> mapped class indices (int64).

        Raises a `SaltError` naming the unknown values when a label has no class.
        """
        keys = torch.tensor(self.raw, device=raw.device)
        order = torch.argsort(keys)
        sorted_keys = keys[order]
        pos = torch.searchsorted(sorted_keys, raw.long().contiguous()).clamp(max=len(keys) - 1)
        known = sorted_keys[pos] == raw
        if not bool(known.all()):
            unknown = sorted({int(v) for v in raw[~known].unique()})
            listed = ", ".join(f"{n}: {r}" for n, r in zip(self.names, self.raw))
            raise SaltError(
                f"{where}: values {unknown} are not in mf_config.object.object_classes "
                f"({listed}). Add a class for them (map it to the null class to ignore such "
                "objects)."
            )
        return order[pos]


@dataclass
class ObjectTargets:
    """What the MaskFormer loss learns from, per batch.

    Attributes
    ----------
    object_class
        (B, K) int64 mapped class per object slot; the null index where there is no real object.
    masks
        (N, K) bool, packed like the tracks: track n belongs to object k of its own jet.
    regression
        (B, K, R) float, object properties in the regression's scaled units (NaN: unknown);
        None without an object regression.
    """

    object_class: Tensor
    masks: Tensor
    regression: Tensor | None = None


def build_object_targets(
    object_ids: Tensor,
    object_class: Tensor,
    parent_ids: Tensor,
    layout: Packed,
    classes: ObjectClasses,
    object_valid: Tensor | None = None,
    regression: Tensor | None = None,
    where: str = "truth objects",
) -> ObjectTargets:
    """Targets from the file's labels, without loops over jets or objects.

    Parameters
    ----------
    object_ids
        (B, K) integer id of each object slot (e.g. ``truth_hadrons.barcode``).
    object_class
        (B, K) integer raw class label (e.g. ``truth_hadrons.flavour``).
    parent_ids
        (N,) integer parent id of each valid track (e.g. ``ftagTruthParentBarcode``), packed.
    layout
        The tracks' packed layout; its ``batch`` says which jet each track is in.
    classes
        The configured object classes.
    object_valid
        (B, K) bool, the dataset's ``valid`` field; None: every slot whose class is not null.
    regression
        (B, K, R) float regression targets, already scaled; kept as they are.
    where
        Named in error messages (e.g. the file and dataset).
    """
    if object_ids.shape != object_class.shape or object_ids.dim() != 2:
        raise SaltError(
            f"{where}: object ids {tuple(object_ids.shape)} and classes "
            f"{tuple(object_class.shape)} must both be (jets, objects)."
        )
    if parent_ids.shape != (layout.n_tokens,):
        raise SaltError(
            f"{where}: {parent_ids.shape[0]} track parent ids for {layout.n_tokens} valid tracks."
        )
    real = torch.ones_like(object_ids, dtype=torch.bool)
    if object_valid is not None:
        real = object_valid.bool()
    # padded slots carry arbitrary labels: only real slots must have a known class
    mapped = torch.full_like(object_ids, classes.null_index, dtype=torch.long)
    mapped[real] = classes.map_raw(object_class[real], f"{where}: class label")
    real = real & (mapped != classes.null_index)
    mapped = torch.where(real, mapped, classes.null_index)
    ids = torch.where(real & (object_ids >= 0), object_ids, -1)  # -1 matches no track
    masks = (parent_ids[:, None] == ids[layout.batch]) & (ids[layout.batch] >= 0)
    return ObjectTargets(mapped, masks, regression)
