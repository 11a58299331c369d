"""The parity check: onnxruntime, one jet per call, against PyTorch's packed training path.

The jets are real (from a UPP file, normally the run's validation file). The first
``COVER * 41`` of them get ``i % 41`` tracks each (1 to 40 when the graph refuses jets without
tracks), their own valid tracks first, then those of the jets after them, so that every track
count is covered even where the file has few long jets; the others keep their own tracks, so that
most of the check sees jets as they come. PyTorch runs them as training does, as a batch of packed
tracks with a `valid` mask; ONNX runs them as a C++ client does, one jet per call. Agreement
therefore shows that the exported graph computes what was trained, not merely what the export
wrapper computes.

Float outputs must agree within `TOLERANCE`: probabilities as they are, regression outputs in
units of their target's std (the scale the network computes in; 1e-5 MeV on a b-hadron pT would
ask for more digits than float32 has), and a target divided by a per-jet denominator (a pT
over the jet's pT) relative to its value, since it has no fixed unit. The integer outputs
(track origin, vertex index) are decisions on scores: a track whose decision flips is excused
only where the PyTorch score lies within `TIE` of the decision boundary, and counted as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from salt.data.dataset import JetDataset
from salt.errors import SaltError
from salt.export.outputs import OutputPlan
from salt.export.wrapper import ExportModel
from salt.models.object_tasks import OBJECT_OUTPUTS
from salt.models.saltmodel import GLOBAL_EXTRAS, SaltModel
from salt.models.tasks import ClassificationTask, VertexingTask

TOLERANCE = 1e-5
TIE = 1e-4  # scores this close to a decision boundary may flip between two correct runtimes
COVER = 5  # jets per constituent count 0..slots
REFERENCE_BATCH = 250  # GN1 pads each batch to its longest jet: (B, L, L, heads, d) pairs


@dataclass
class ParitySet:
    """Jets for the check. Shapes: M jets; per constituent type N = sum of its counts.

    `features` holds jets (M, F_jets) and, per constituent type, its tracks packed jet after jet
    (N, F); `counts` the (M,) number of constituents per jet; `slots` the stored slot count.
    """

    source: Path
    features: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    slots: dict[str, int]

    @property
    def n_jets(self) -> int:
        return len(next(iter(self.counts.values()))) if self.counts else len(self.jets)

    @property
    def jets(self) -> np.ndarray:
        return next(v for k, v in self.features.items() if k not in self.counts)

    def offsets(self, obj: str) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts[obj])])

    def jet_inputs(self, model: ExportModel, i: int) -> dict[str, np.ndarray]:
        """The ONNX feed of jet `i`."""
        feed = {}
        for obj, name in zip(model.objects, model.input_names):
            if obj in self.counts:
                start, stop = self.offsets(obj)[i : i + 2]
                feed[name] = self.features[obj][start:stop]
            else:
                feed[name] = self.features[obj][i : i + 1]
        return feed


# data options of the training config that change the inputs as read (labels play no part here)
READING_OPTIONS = ("non_finite_to_num", "selections", "parameters")


def parity_set(
    path: Path,
    model: SaltModel,
    n_jets: int = 1000,
    zero_constituents: bool = True,
    data_config: dict | None = None,
) -> ParitySet:
    """Read jets from `path`; the first ones get every constituent count (see the module doc).

    `data_config` is the run's `data` section: inputs are read with its options (NaN as 0,
    selections, parameter values) as the model saw them in training.
    """
    options = {k: (data_config or {}).get(k) for k in READING_OPTIONS}
    dataset = JetDataset(
        path,
        variables=model.variables,
        batch_size=n_jets,
        num_jets=-1,
        input_map=model.input_map,
        global_object=model.global_object,
        split="val",
        non_finite_to_num=bool(options["non_finite_to_num"]),
        selections=options["selections"],
        parameters=options["parameters"],
    )
    try:
        batch = dataset[0]
    finally:
        dataset.close()
    read = next(iter(batch["inputs"].values()))
    n_read = len(batch["valid"][model.constituents[0]]) if model.constituents else len(read)
    features, counts, slots = {}, {}, {}
    index = np.arange(n_jets)
    for obj in (model.global_object, GLOBAL_EXTRAS):
        if obj in model.variables:
            features[obj] = batch["inputs"][obj].numpy()[index % n_read]
    for obj in model.constituents:
        pool = batch["inputs"][obj].numpy()  # (N_read, F) valid constituents, packed
        valid = batch["valid"][obj].numpy()
        if len(pool) == 0:
            raise SaltError(
                f"the parity check needs {obj} to run on, but the first {n_read} jets of "
                f"'{path}' have none. Pass --val_file with a file that has {obj}."
            )
        slots[obj] = valid.shape[1]
        own = valid.sum(1)[index % n_read]
        low = 0 if zero_constituents else 1
        span = slots[obj] + 1 - low
        # uniform counts would cost 3x the track pairs of real jets (vertexing is quadratic)
        count = np.where(index < COVER * span, low + index % span, np.maximum(own, low))
        start = np.concatenate([[0], np.cumsum(valid.sum(1))])[index % n_read]
        # jet i takes its own constituents, then those stored after them (cyclically)
        offsets = np.concatenate([[0], np.cumsum(count)])
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], count)
        rows = (np.repeat(start, count) + within) % len(pool)
        features[obj] = np.ascontiguousarray(pool[rows])
        counts[obj] = count
    return ParitySet(path, features, counts, slots)


@dataclass
class Reference:
    """PyTorch's outputs per final name, jet-level (M,) or packed (N,); decisions near ties."""

    values: dict[str, np.ndarray]
    near_tie: dict[str, np.ndarray] = field(default_factory=dict)  # per final name, (N,) bool


def _near_ties(task, output: torch.Tensor, layout) -> np.ndarray:
    """(N,) bool: constituents whose decision lies within TIE of flipping."""
    if isinstance(task, ClassificationTask):
        top2 = torch.softmax(output.float(), -1).topk(2, dim=-1).values
        return (top2[:, 0] - top2[:, 1] < TIE).numpy()
    # a vertex index depends on every pair of the jet: one ambiguous pair marks the whole jet
    i, _ = layout.pairs()
    close = output.abs() < TIE
    jet_close = torch.zeros(layout.n_jets, dtype=torch.bool)
    jet_close[layout.batch[i[close]]] = True
    return jet_close[layout.batch].numpy()


def _object_ties(out, layout) -> np.ndarray:
    """(N,) bool: tracks whose object index may flip: a query of the jet near a class tie, or
    a mask logit of the track near the mask cut or near the track's other mask logits."""
    top2 = torch.softmax(out.objects.class_logits.float(), -1).topk(2, dim=-1).values
    jet_close = (top2[..., 0] - top2[..., 1] < TIE).any(-1)  # (B,)
    logits = out.objects.mask_logits.float()  # (N, Q)
    near_cut = (logits.abs() < TIE).any(-1)  # the cut of sigmoid > 0.5 is a logit of 0
    near_other = torch.zeros_like(near_cut)
    if logits.shape[-1] > 1:
        best = logits.topk(2, dim=-1).values
        near_other = best[:, 0] - best[:, 1] < TIE
    return (jet_close[layout.batch] | near_cut | near_other).numpy()


@torch.no_grad()
def reference(model: SaltModel, pset: ParitySet, plan: OutputPlan) -> Reference:
    """Run the parity jets through `model` as training does: packed, in batches."""
    values: dict[str, list[np.ndarray]] = {}
    ties: dict[str, list[np.ndarray]] = {}
    n = pset.n_jets
    for start in range(0, n, REFERENCE_BATCH):
        stop = min(start + REFERENCE_BATCH, n)
        inputs, valid = {}, {}
        for obj in (model.global_object, GLOBAL_EXTRAS):
            if obj in pset.features:
                inputs[obj] = torch.from_numpy(pset.features[obj][start:stop])
        for obj in model.constituents:
            offsets = pset.offsets(obj)
            inputs[obj] = torch.from_numpy(pset.features[obj][offsets[start] : offsets[stop]])
            count = torch.from_numpy(pset.counts[obj][start:stop])
            valid[obj] = torch.arange(pset.slots[obj])[None, :] < count[:, None]
        outputs, _, layouts = model.run(inputs, valid or None)
        predictions = model.task_predictions(outputs, layouts, inputs)
        for source in plan.sources:
            task = next((t for t in model.tasks if t.name == source.task), None)
            value = predictions[source.task][source.key]
            if source.column is not None:
                value = value[..., source.column]
            # per-object outputs (jets, Q) are compared jet after jet, as ONNX gives them
            values.setdefault(source.name, []).append(value.float().numpy().reshape(-1))
            if source.constituent is not None and isinstance(
                task, ClassificationTask | VertexingTask
            ):
                ties.setdefault(source.name, []).append(
                    _near_ties(task, outputs[task.name], layouts[task.name])
                )
            elif source.key == "track_index":
                ties.setdefault(source.name, []).append(
                    _object_ties(outputs[OBJECT_OUTPUTS], layouts[OBJECT_OUTPUTS])
                )
    joined = plan.finish({k: np.concatenate(v) for k, v in values.items()})
    final = dict(zip([s.name for s in plan.sources], plan.names))
    return Reference(joined, {final[k]: np.concatenate(v) for k, v in ties.items()})


def run_onnx(session, model: ExportModel, pset: ParitySet) -> dict[str, np.ndarray]:
    """ONNX outputs per final name, one jet per call, concatenated like the reference."""
    names = [o.name for o in session.get_outputs()]
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for i in range(pset.n_jets):
        for name, value in zip(names, session.run(names, pset.jet_inputs(model, i))):
            collected[name].append(np.asarray(value).reshape(-1))
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def accepts_zero_constituents(session, model: ExportModel, pset: ParitySet) -> bool:
    """Whether the graph runs a jet without constituents (some reshapes fail on empty axes)."""
    feed = pset.jet_inputs(model, 0)
    for obj, name in zip(model.objects, model.input_names):
        if obj in pset.counts:
            feed[name] = feed[name][:0]
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a refusal is an answer here, not an error to log
    try:
        session.run(None, feed, quiet)
    except Exception:  # onnxruntime raises its own Fail/RuntimeException types
        return False
    return True


@dataclass
class OutputResult:
    name: str
    max_diff: float
    n_values: int
    scale: float = 1.0
    n_nan: int = 0
    n_flipped: int = 0  # integer outputs: values that differ
    n_excused: int = 0  # ... of which at near-ties
    integer: bool = False
    relative: bool = False  # max_diff is |ONNX - PyTorch| / |PyTorch|

    @property
    def passed(self) -> bool:
        within = self.max_diff <= TOLERANCE * self.scale
        return self.n_nan == 0 and within and self.n_flipped == self.n_excused

    def summary(self) -> str:
        if self.n_nan:
            return f"{self.n_nan} NaN of {self.n_values}"
        if not self.integer:
            if self.relative:
                return f"{self.max_diff:.2e} of the value"
            if self.scale != 1.0:
                return (
                    f"{self.max_diff:.2e} ({self.max_diff / self.scale:.2e} of std {self.scale:g})"
                )
            return f"{self.max_diff:.2e}"
        text = f"{self.n_flipped} of {self.n_values} differ"
        if self.n_flipped:
            text += f" ({self.n_excused} at near-ties)"
        return text


@dataclass
class ParityResult:
    outputs: list[OutputResult]
    n_jets: int
    counts: tuple[int, int]
    source: str
    missing: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missing and all(o.passed for o in self.outputs)

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "tolerance": TOLERANCE,
            "jets": self.n_jets,
            "constituent_counts": list(self.counts),
            "file": self.source,
            "max_abs_diff": {o.name: o.max_diff for o in self.outputs},
        }

    def report(self) -> str:
        lo, hi = self.counts
        what = f"{lo} to {hi} tracks per jet" if hi else "jet inputs only"
        lines = [
            f"Parity check: onnxruntime (one jet per call) against PyTorch (packed, as trained) "
            f"on {self.n_jets} jets of {self.source}, {what}",
        ]
        width = max([32, *(len(o.name) + 1 for o in self.outputs)])
        lines.append(f"  {'output':<{width}} max |ONNX - PyTorch|")
        lines += [f"  {o.name:<{width}} {o.summary()}" for o in self.outputs]
        if self.missing:
            lines.append(f"  outputs missing from the ONNX model: {', '.join(self.missing)}")
        verdict = "PASSED" if self.passed else "FAILED"
        lines.append(f"{verdict} (tolerance {TOLERANCE:g}; NaN fails)")
        return "\n".join(lines)


def compare(
    onnx_values: dict[str, np.ndarray], ref: Reference, pset: ParitySet, plan: OutputPlan
) -> ParityResult:
    """Largest differences per output; integer outputs count flips and near-tie excuses."""
    results = []
    for name, expected in ref.values.items():
        if name not in onnx_values:
            continue
        got = onnx_values[name].astype(np.float64)
        expected = expected.astype(np.float64)
        if got.shape != expected.shape:
            results.append(OutputResult(name, math.inf, expected.size, plan.scale(name)))
            continue
        nan = int(np.isnan(got).sum() + np.isnan(expected).sum())
        diff = np.abs(got - expected)
        relative = plan.relative(name)
        if relative:  # float32 holds a target times a denominator to a relative precision
            diff = diff / np.maximum(np.abs(expected), np.finfo(np.float32).tiny)
        diff[np.isnan(diff)] = 0.0  # NaN is counted apart; it fails the check on its own
        largest = float(diff.max()) if diff.size else 0.0
        scale = 1.0 if relative else plan.scale(name)
        result = OutputResult(name, largest, got.size, scale, nan, relative=relative)
        if name in ref.near_tie:
            flipped = diff > 0
            result.integer = True
            result.n_flipped = int(flipped.sum())
            result.n_excused = int((flipped & ref.near_tie[name]).sum())
            unexcused = diff[~ref.near_tie[name]]
            result.max_diff = float(unexcused.max()) if unexcused.size else 0.0
        results.append(result)
    missing = [n for n in ref.values if n not in onnx_values]
    counts = list(pset.counts.values())
    span = (
        (min(int(c.min()) for c in counts), max(int(c.max()) for c in counts)) if counts else (0, 0)
    )
    return ParityResult(results, pset.n_jets, span, pset.source.name, missing)
