"""The outputs of an exported model: their names, where each comes from, combinations, renames.

One plan serves both sides of the parity check: the ONNX graph computes each output from the
padded one-jet path, the PyTorch reference from the packed training path, and both go through
`OutputPlan.finish` for the combinations and renames.

Names (``<name>`` is the export's model name, e.g. ``GN2vXX``) follow one rule, `output_fields`,
which `salt test` uses for its prediction files as well:

* ``<name>_p<class>``: jet class probabilities, float32 (1,); ``pb``, ``pc``, ``pu``, ``ptau``
  for ftag's flavours.
* ``<name>_<target>`` (and ``_stddev`` for a Gaussian regression): jet regression targets,
  float32 (1,); a task's ``custom_output_names`` replace the targets in the names. A
  regression on a constituent type gives the same names, float32 (n,).
* A task whose names would repeat an earlier task's is named ``<name>_<task name>_...``.
* ``<name>_TrackOrigin``: the most probable ``ftagTruthOriginLabel`` class per track, int8 (n,).
* ``<name>_VertexIndex``: per track, the smallest track index of its vertex (the connected
  component of track pairs with a positive vertexing logit), int8 (n,).
* With a mask decoder (MaskFormer): ``<name>_object_p<class>``, each object query's class
  probabilities (the ``data.mf_config`` object classes, null included), float32 (Q,);
  ``<name>_<target>`` of the object regression, float32 (Q,); ``<name>_ObjectIndex``, per
  track the query of the predicted object that owns it (-1: none), int8 (n,). A prediction
  file holds these in its ``objects`` dataset instead (salt.callbacks.object_outputs).

``--combine_outputs plight=pu+pg`` adds ``<name>_plight``, the sum of ``<name>_pu`` and
``<name>_pg``; ``--rename pb:pbottom`` renames ``<name>_pb`` to ``<name>_pbottom``. Names may
be given with or without the ``<name>_`` prefix; new names get it. Combinations come first, so a
combined output can be renamed; the outputs that were summed stay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from salt.data.objects import OBJECTS
from salt.errors import SaltError, close_matches
from salt.models.saltmodel import SaltModel
from salt.models.tasks import (
    ClassificationTask,
    GaussianRegressionTask,
    RegressionTask,
    VertexingTask,
)

ORIGIN_LABEL = "ftagTruthOriginLabel"


def class_field(prefix: str, class_name: str) -> str:
    """``GN2`` + ``bjets`` -> ``GN2_pb`` (ftag's px names), else ``GN2_p<class>``.

    One rule for every output salt writes: ONNX outputs here and `salt test`'s prediction files.
    """
    from ftag import Flavours

    try:
        return f"{prefix}_{Flavours[class_name].px}"
    except KeyError:
        return f"{prefix}_p{class_name}"


@dataclass(frozen=True)
class Source:
    """One output straight from a task: ``task.predictions(...)[key][..., column]``.

    `constituent` is None for a jet-level output (shape (1,) per jet), else the constituent
    type whose slots it follows (shape (n,) per jet); see `dtype`.
    """

    name: str
    task: str
    key: str
    column: int | None
    constituent: str | None
    description: str
    scale: float = 1.0  # the output's natural unit: a regression target's std, else 1
    # compared relative to its value: a target divided by a per-jet denominator has no fixed unit
    relative: bool = False

    @property
    def dtype(self) -> str:
        """In ONNX: int8 for a constituent's class or vertex index, float32 for the rest."""
        return "int8" if self.key in ("argmax", "vertex_index", "track_index") else "float32"


@dataclass
class OutputPlan:
    """The task outputs of a model, then combinations and renames, by name."""

    prefix: str
    sources: list[Source]
    combine: dict[str, list[str]] = field(default_factory=dict)  # new name -> summed names
    rename: dict[str, str] = field(default_factory=dict)  # old name -> new name
    combine_args: list[str] = field(default_factory=list)
    rename_args: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Final output names, in graph order."""
        raw = [s.name for s in self.sources] + list(self.combine)
        return [self.rename.get(n, n) for n in raw]

    def source_of(self, final_name: str) -> Source | None:
        """The task output behind a final name; None for a combination."""
        original = {v: k for k, v in self.rename.items()}.get(final_name, final_name)
        return next((s for s in self.sources if s.name == original), None)

    def scale(self, final_name: str) -> float:
        """The unit in which the parity check compares an output (a sum: its largest part's)."""
        original = {v: k for k, v in self.rename.items()}.get(final_name, final_name)
        if original in self.combine:
            by_name = {s.name: s.scale for s in self.sources}
            return max(by_name.get(n, 1.0) for n in self.combine[original])
        source = self.source_of(final_name)
        return source.scale if source is not None else 1.0

    def relative(self, final_name: str) -> bool:
        """Whether the parity check compares an output relative to its value."""
        source = self.source_of(final_name)
        return source is not None and source.relative

    def description(self, final_name: str) -> str:
        original = {v: k for k, v in self.rename.items()}.get(final_name, final_name)
        if original in self.combine:
            return "sum of " + " + ".join(self.rename.get(n, n) for n in self.combine[original])
        source = self.source_of(final_name)
        return source.description if source is not None else ""

    def finish(self, values: dict) -> dict:
        """Task outputs by source name -> all outputs by final name (tensors or arrays)."""
        out = dict(values)
        for new, parts in self.combine.items():
            total = out[parts[0]]
            for part in parts[1:]:
                total = total + out[part]
            out[new] = total
        return {self.rename.get(k, k): v for k, v in out.items()}

    # ----------------------------------------------------------------------------- user input
    def _full(self, name: str) -> str:
        return name if name.startswith(f"{self.prefix}_") else f"{self.prefix}_{name}"

    def _existing(self, name: str, known: list[str], option: str) -> str:
        for candidate in (name, f"{self.prefix}_{name}"):
            if candidate in known:
                return candidate
        raise SaltError(
            f"{option}: the model has no output '{name}'.{close_matches(self._full(name), known)}"
            f" Its outputs: {', '.join(known)}."
        )

    def add_combinations(self, specs: list[str]) -> None:
        """``NEW=A+B[+C...]``: a new jet-level output, the sum of existing ones."""
        jet_level = [s.name for s in self.sources if s.constituent is None]
        for spec in specs:
            new, sep, rhs = spec.partition("=")
            parts = [p.strip() for p in rhs.split("+") if p.strip()]
            if not sep or not new.strip() or len(parts) < 2:
                raise SaltError(
                    f"--combine_outputs '{spec}': write NEW=A+B (e.g. plight=pu+pg), the new "
                    "output's name, then two or more outputs to sum."
                )
            known = [*jet_level, *self.combine]
            names = [self._existing(p, known, f"--combine_outputs '{spec}'") for p in parts]
            new = self._full(new.strip())
            if new in [s.name for s in self.sources] or new in self.combine:
                raise SaltError(f"--combine_outputs '{spec}': an output '{new}' exists already.")
            self.combine[new] = names
            self.combine_args.append(spec)

    def add_renames(self, specs: list[str]) -> None:
        """``OLD:NEW``: rename an output (a task output or a combination)."""
        for spec in specs:
            old, sep, new = spec.partition(":")
            if not sep or not old.strip() or not new.strip():
                raise SaltError(f"--rename '{spec}': write OLD:NEW (e.g. pb:pbottom).")
            known = [s.name for s in self.sources] + list(self.combine)
            old = self._existing(old.strip(), known, f"--rename '{spec}'")
            new = self._full(new.strip())
            final = [self.rename.get(n, n) for n in known if n != old]
            if new in final:
                raise SaltError(f"--rename '{spec}': an output '{new}' exists already.")
            self.rename[old] = new
            self.rename_args.append(spec)


def _relative(task, i: int) -> bool:
    """Whether target `i` is compared relative to its value: divided by a per-jet denominator,
    or learnt as a log (its precision in float32 is relative then)."""
    log_scaled = task.scaler.active and int(task.scaler.ops[i]) == task.scaler.OPS.index("log")
    return bool(task.target_denominators) or log_scaled


def _regression_outputs(task, head: str, constituent: str | None) -> list[Source]:
    """``<head>_<target>`` (and ``_stddev``) per target, per jet or per constituent."""
    labels = list(getattr(task, "custom_output_names", None) or task.targets)
    if len(labels) != len(task.targets):
        raise SaltError(
            f"task '{task.name}': custom_output_names {labels} name "
            f"{len(labels)} outputs for {len(task.targets)} targets {task.targets}."
        )
    per = f" per {constituent.removesuffix('s')}" if constituent else ""
    keys = ["values", "stddev"] if isinstance(task, GaussianRegressionTask) else ["values"]
    out = []
    for key in keys:
        suffix = "_stddev" if key == "stddev" else ""
        for i, (label, target) in enumerate(zip(labels, task.targets)):
            out.append(
                Source(
                    f"{head}_{label}{suffix}", task.name, key, i, constituent,
                    f"{'std. dev. of ' if suffix else ''}{target}{per} ({task.name})",
                    float(task.std[i]), relative=_relative(task, i),
                )
            )  # fmt: skip
    return out


def _task_outputs(task, head: str, model, for_file: bool) -> list[Source]:
    """The outputs of one task, named with `head` (``GN2``, or ``GN2_<task>`` on a clash)."""
    out: list[Source] = []
    if task.input_name == model.global_object:
        if isinstance(task, ClassificationTask):
            for i, cls in enumerate(task.class_names):
                out.append(
                    Source(
                        class_field(head, cls), task.name, "probs", i, None,
                        f"probability of {cls} ({task.name})",
                    )
                )  # fmt: skip
        elif isinstance(task, RegressionTask):
            out += _regression_outputs(task, head, None)
        return out
    own = task.input_name == "tracks" or len(model.constituents) == 1
    what = task.input_name.removesuffix("s")
    if isinstance(task, ClassificationTask):
        origin = task.label == ORIGIN_LABEL and own
        if for_file:
            for i, cls in enumerate(task.class_names):
                out.append(
                    Source(
                        f"{head}_p{cls}", task.name, "probs", i, task.input_name,
                        f"probability of {cls} per {what} ({task.name})",
                    )
                )  # fmt: skip
            name = f"{head}_aux_{'TrackOrigin' if origin else task.name}"
        else:
            name = f"{head}_TrackOrigin" if origin else f"{head}_{task.name}"
        out.append(
            Source(
                name, task.name, "argmax", None, task.input_name,
                f"most probable {task.label} per {what} ({', '.join(task.class_names)})",
            )
        )  # fmt: skip
    elif isinstance(task, RegressionTask):
        out += _regression_outputs(task, head, task.input_name)
    elif isinstance(task, VertexingTask):
        if for_file:
            name = f"{head}_aux_VertexIndex"
        else:
            name = f"{head}_VertexIndex" if own else f"{head}_{task.name}"
        out.append(
            Source(
                name, task.name, "vertex_index", None, task.input_name,
                f"smallest {what} index in the same vertex ({task.name})",
            )
        )  # fmt: skip
    return out


def output_fields(model: SaltModel, prefix: str, for_file: bool = False) -> list[Source]:
    """Every output of `model`, named: the one naming rule of `salt test` and `to_onnx`.

    * jet classification: ``<prefix>_p<class>`` (ftag's ``pb``, ``pc``, ``pu``, ``ptau`` for
      its flavours);
    * regression: ``<prefix>_<target>``, or the task's ``custom_output_names`` in place of the
      targets; a Gaussian regression also ``<prefix>_<target>_stddev``;
    * per track (ONNX): ``<prefix>_TrackOrigin``, ``<prefix>_VertexIndex``; in a prediction
      file (`for_file`), the track-origin probabilities ``<prefix>_p<class>`` and
      ``<prefix>_aux_TrackOrigin`` / ``<prefix>_aux_VertexIndex``, the names puma reads.

    A task whose names would repeat an earlier task's (two classifiers of the same classes,
    two regressions of one target) is named ``<prefix>_<task name>_...`` instead. In a file,
    jets and each constituent type are separate datasets; in ONNX all outputs share one list.
    """
    sources: list[Source] = []
    for task in model.tasks:
        own = _task_outputs(task, prefix, model, for_file)
        taken = {(s.constituent if for_file else None, s.name) for s in sources}
        if any((s.constituent if for_file else None, s.name) in taken for s in own):
            own = _task_outputs(task, f"{prefix}_{task.name}", model, for_file)
            clash = [s.name for s in own if (s.constituent if for_file else None, s.name) in taken]
            if clash:
                raise SaltError(
                    f"task '{task.name}' would write {clash}, which another task writes "
                    "already: give the tasks distinct names."
                )
        sources += own
    objects = getattr(model, "objects", None)
    if objects is not None and not for_file:
        sources += _object_outputs(objects, prefix)
    return sources


def _object_outputs(objects, prefix: str) -> list[Source]:
    """The mask decoder's object class probabilities and per-track object index (ONNX)."""
    out = [
        Source(
            f"{prefix}_object_p{cls}", OBJECTS, "probs", i, OBJECTS,
            f"probability that each object query is a {cls} object",
        )
        for i, cls in enumerate(objects.classes.names)
    ]  # fmt: skip
    what = objects.constituent.removesuffix("s")
    out.append(
        Source(
            f"{prefix}_ObjectIndex", OBJECTS, "track_index", None, objects.constituent,
            f"object query owning each {what} (-1: none)",
        )
    )  # fmt: skip
    return out


def output_plan(model: SaltModel, prefix: str) -> OutputPlan:
    """The ONNX outputs of `model` (see `output_fields`), before combinations and renames."""
    sources = output_fields(model, prefix)
    if not sources:
        raise SaltError("the model has no task with an exportable output.")
    return OutputPlan(prefix, sources)
