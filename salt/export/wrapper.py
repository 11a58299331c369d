"""ExportModel: a SaltModel as ONNX sees it, one jet per call, with named outputs.

Inputs (float32, raw values: the graph normalises them with the training's mean and std):

* ``jet_features``: (1, n_jet_vars), when the model has jet inputs (DIPS has none);
* ``global_features``: (1, n_global_vars), the jet variables joined to the pooled vector after
  the encoder (salt-ml's ``global``), when the model has them;
* ``track_features``: (n_tracks, n_track_vars), the jet's tracks in any number (a dynamic axis,
  ``n_tracks``); other constituent types alike, ``hits`` -> ``hit_features`` (``n_hits``).

Variables come in the order of the training config (`get_onnx_metadata` lists them).
Outputs: see `salt.export.outputs`.

The model runs its padded path with every slot a constituent (``SaltModel.forward(inputs)``
without `valid`), so no mask crosses the ONNX boundary; attention uses the explicit ``math``
backend, which exports to plain ONNX operators.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from salt.export.outputs import OutputPlan
from salt.models.attention import MultiheadAttention
from salt.models.layout import Padded
from salt.models.maskformer import CrossAttention
from salt.models.object_tasks import OBJECT_OUTPUTS
from salt.models.saltmodel import GLOBAL_EXTRAS, SaltModel
from salt.models.tasks import VertexingTask

# reachability doubles its path length per squaring: 7 squarings join tracks up to 127 steps
# apart, every track of a jet within int8's range of the VertexIndex output
VERTEX_SQUARINGS = 7


def input_name(obj: str, global_object: str) -> str:
    """``jets`` (the global object) -> ``jet_features``; ``tracks`` -> ``track_features``;
    ``global`` -> ``global_features``."""
    if obj == global_object:
        return "jet_features"
    return f"{obj.removesuffix('s')}_features"


def dense_vertex_index(pair_logits: Tensor) -> Tensor:
    """(n, n) symmetric pair logits of one jet -> (n,) int64 vertex index per track.

    Tracks i and j share a vertex when a chain of pairs with logit > 0 joins them; a track's
    index is the smallest index in its chain: `salt.models.tasks.vertex_index` on one jet,
    written with dense matrix products (no data-dependent loop, so it traces and exports).
    """
    n = pair_logits.shape[-1]
    reach = (pair_logits > 0).to(pair_logits.dtype) + torch.eye(n, dtype=pair_logits.dtype)
    for _ in range(VERTEX_SQUARINGS):
        reach = ((reach @ reach) > 0).to(pair_logits.dtype)
    # the first reachable index; a column of ones keeps argmax defined for a jet with no tracks
    # (every row reaches itself, so the extra column never wins where there is a track)
    padded = torch.cat([reach, torch.ones_like(reach.sum(-1, keepdim=True))], -1)
    return padded.argmax(-1)


class PlainRMSNorm(nn.Module):
    """`torch.nn.RMSNorm` written with elementary operators: the exporter has no rms_norm."""

    def __init__(self, norm: nn.RMSNorm):
        super().__init__()
        self.eps = norm.eps
        self.weight = norm.weight

    def forward(self, x: Tensor) -> Tensor:
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.weight


def export_copy(model: SaltModel) -> SaltModel:
    """A copy of `model` in eval mode with export-safe operators: ``math`` attention everywhere,
    RMS norms written out."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, MultiheadAttention | CrossAttention):
            module.backend = "math"
        for name, child in module.named_children():
            if isinstance(child, nn.RMSNorm):
                setattr(module, name, PlainRMSNorm(child))
    return model


class ExportModel(nn.Module):
    """``forward(*features)`` -> tuple of outputs in `plan.names` order, for one jet.

    Parameters
    ----------
    model
        The trained SaltModel (copied; the original is left as it is).
    plan
        Output names, combinations and renames.
    """

    def __init__(self, model: SaltModel, plan: OutputPlan):
        super().__init__()
        self.model = export_copy(model)
        self.plan = plan
        self.jet_level = [o for o in (model.global_object, GLOBAL_EXTRAS) if o in model.variables]
        self.objects = [*self.jet_level, *model.constituents]
        self.input_names = [input_name(o, model.global_object) for o in self.objects]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Axis 0 of every constituent input, and of the outputs that follow its slots."""
        axes = {}
        for obj, name in zip(self.objects, self.input_names):
            if obj not in self.jet_level:
                axes[name] = {0: f"n_{obj}"}
        final = dict(zip([s.name for s in self.plan.sources], self.plan.names))
        for source in self.plan.sources:
            if source.constituent is not None:
                axes[final[source.name]] = {0: f"n_{source.constituent}"}
        return axes

    def forward(self, *features: Tensor) -> tuple[Tensor, ...]:
        inputs = {}
        for obj, x in zip(self.objects, features):
            inputs[obj] = x if obj in self.jet_level else x[None]  # one jet: (1, n, F)
        raw, _ = self.model(inputs)
        layouts = {task.name: Padded(None) for task in self.model.tasks}
        layouts[OBJECT_OUTPUTS] = Padded(None)
        predictions = self.model.task_predictions(raw, layouts, inputs, skip=(VertexingTask,))
        for task in self.model.tasks:
            if isinstance(task, VertexingTask):
                predictions[task.name] = {"vertex_index": dense_vertex_index(raw[task.name][0])}
        values = {}
        for source in self.plan.sources:
            value = predictions[source.task][source.key]
            if source.column is not None:
                value = value[..., source.column]
            if source.constituent is None:
                values[source.name] = value.float()  # (1,)
            else:
                value = value if source.key == "vertex_index" else value[0]
                values[source.name] = value.to(getattr(torch, source.dtype))  # (n,)
        finished = self.plan.finish(values)
        return tuple(finished[name] for name in self.plan.names)
