"""The objects of a MaskFormer in `salt test`'s prediction file (`PredictionWriter(write_objects)`).

* ``objects``, (jets, Q) with Q = the decoder's ``num_objects``, one row per query:
  ``<name>_p<class>`` the class probabilities (the object classes of ``data.mf_config``, the null
  class included; they sum to 1), ``<name>_<target>`` the regressed properties in the target's
  physical units (given for every row; they describe an object where ``object_class`` is not
  the null class), ``object_class`` the most probable class index (the
  null class's index for no object) and ``object_index`` the row (query) index.
* in ``tracks``: ``<name>_aux_ObjectIndex``, the ``object_index`` of the predicted object that
  owns the track (`salt.models.object_tasks.track_object_index`), -1 for none and in padding.
"""

from __future__ import annotations

import numpy as np

from salt.data.objects import OBJECTS
from salt.export.outputs import Source

TRACK_FIELD = "aux_ObjectIndex"


def object_fields(
    model, name: str, sources: list[Source], collect
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ``objects`` array (jets, Q) and the per-track object index (packed over the file).

    `collect(task, key)` concatenates a prediction over the test batches.
    """
    probs = collect(OBJECTS, "probs")  # (jets, Q, C+1)
    classes = model.objects.classes.names
    predicted = probs.argmax(-1)
    fields: dict[str, np.ndarray] = {}
    for i, cls in enumerate(classes):
        fields[f"{name}_p{cls}"] = probs[..., i].astype(np.float32)
    for source in sources:
        if source.constituent != OBJECTS:
            continue
        fields[source.name] = collect(source.task, source.key)[..., source.column].astype(
            np.float32
        )
    fields["object_class"] = predicted.astype(np.int8)
    fields["object_index"] = np.broadcast_to(
        np.arange(probs.shape[1], dtype=np.int8), predicted.shape
    ).copy()
    out = np.empty(predicted.shape, [(k, v.dtype) for k, v in fields.items()])
    for key, values in fields.items():
        out[key] = values
    return out, {f"{name}_{TRACK_FIELD}": collect(OBJECTS, "track_index")}


def track_fields(packed: dict[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
    """Packed per-track object indices -> (jets, T) int32, -1 in padding."""
    out = {}
    for key, values in packed.items():
        full = np.full(valid.shape, -1, np.int32)
        full[valid] = values
        out[key] = full
    return out
