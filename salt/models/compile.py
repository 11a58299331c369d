"""`torch.compile` for a SaltModel whose packed batches differ in length from step to step.

Every packed batch has its own number of jets B, of constituents N per type, of within-jet pairs P
and its own longest jet L (the host ints of `salt.models.layout.host_sizes`, `batch["sizes"]`). A
graph compiled for fixed sizes would be recompiled for nearly every batch. What was seen on CPU
(torch 2.13, inductor and aot_eager, a GN2-like model; tests/test_compile.py):

* ``dynamic=True`` makes B, N, P and L symbols from the first compile: batches of any other
  sizes reuse that graph, without any rounding of L to buckets.
* A size of 0 or 1 is still specialised (``max_len == 1``, ``n_pairs == 1``, one jet, ...):
  each such batch compiled a graph of its own, up to torch's limit of 8 per function. Such
  batches (a last batch of one jet, jets of one track) run eagerly here instead: never more
  than one training graph.
* Two tensor sizes that happen to be equal in the first batch (as many tracks as jets) are
  given one symbol ("duck shaping") and the graph is guarded on that equality: the next batch
  recompiled. Duck shaping is switched off around the compiled call.
* Training and evaluation (`model.eval()`, no_grad / inference mode) are separate graphs: a fit
  with validation compiles two, once each.

`compile_model(model)` is what ``salt fit --compile`` does. Only `forward` is compiled (training
and validation steps); `SaltModel.predict` (``salt test``) stays eager, and the state dict keeps
its keys, so checkpoints of compiled and eager runs are interchangeable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

# a size below this is specialised by torch.compile (0/1 specialisation): run such a batch eagerly
MIN_DYNAMIC_SIZE = 2


class CompiledForward:
    """Replaces a model's `forward`: the compiled graph for packed batches, eager otherwise.

    A batch goes to the compiled graph when it comes with `valid` masks and host `sizes` (without
    them the packed layout would read lengths off the device, a graph break) and every size that
    varies between batches (jets, constituents, longest jet, pairs) is at least 2.
    `calls` counts the batches that took each way.
    """

    def __init__(self, eager: Callable, backend: str = "inductor", mode: str | None = None):
        self.eager = eager
        self.options = {"backend": backend, "mode": mode}
        self.compiled = torch.compile(eager, dynamic=True, **self.options)
        self.calls = {"compiled": 0, "eager": 0}

    # a copy (copy.deepcopy, pickle) compiles the copied model's own forward, not this one
    def __getstate__(self) -> dict:
        return {"eager": self.eager, "options": self.options, "calls": self.calls}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["eager"], **state["options"])
        self.calls = dict(state["calls"])

    def __call__(
        self,
        inputs: dict[str, Tensor],
        valid: dict[str, Tensor] | None = None,
        labels: dict | None = None,
        sizes: dict[str, dict] | None = None,
    ):
        if not compilable(inputs, valid, sizes):
            self.calls["eager"] += 1
            return self.eager(inputs, valid, labels, sizes)
        self.calls["compiled"] += 1
        with _no_duck_shapes():
            return self.compiled(inputs, valid, labels, sizes)


def compilable(
    inputs: dict[str, Tensor], valid: dict[str, Tensor] | None, sizes: dict[str, dict] | None
) -> bool:
    """Whether a batch can use the shared dynamic graph: packed, with host sizes, none below 2.

    Reads only shapes and host ints: deciding never waits for the device.
    """
    if not valid or sizes is None:
        return False
    lengths = [t.shape[0] for t in inputs.values()] + [m.shape[0] for m in valid.values()]
    for name in valid:
        known = sizes.get(name)
        if known is None or known.get("max_len") is None or known.get("n_pairs") is None:
            return False
        lengths += [known["max_len"], known["n_pairs"]]
    lengths += [s["max_len"] for s in sizes.values() if s.get("max_len") is not None]
    return min(lengths) >= MIN_DYNAMIC_SIZE


def compile_model(
    model: nn.Module, backend: str = "inductor", mode: str | None = None
) -> nn.Module:
    """Compile `model.forward` in place for packed batches of any length; returns `model`.

    Parameters
    ----------
    model
        A SaltModel (any module whose forward takes ``(inputs, valid, labels, sizes)``).
    backend, mode
        As in `torch.compile` (``aot_eager`` traces without generating kernels: quick, for tests).

    The first compiled call traces and compiles (tens of seconds for GN2; the backward graph is
    compiled at the first backward pass); later batches of other sizes reuse the graph. Calling it
    on a model compiled already changes nothing.
    """
    if isinstance(model.__dict__.get("forward"), CompiledForward):
        return model
    # an instance attribute: nn.Module.__call__ looks `forward` up on the instance first
    model.forward = CompiledForward(model.forward, backend, mode)
    return model


def compile_calls(model: nn.Module) -> dict[str, int]:
    """Batches run through the compiled graph and eagerly so far (zeros if not compiled)."""
    forward = model.__dict__.get("forward")
    return dict(forward.calls) if isinstance(forward, CompiledForward) else {}


def compile_counters() -> dict[str, float]:
    """torch.compile's totals in this process so far.

    ``graphs``: graphs compiled (each compile and each recompile adds one, and so does each piece
    of a function split by a graph break); ``graph_breaks``; ``compile_s``: seconds dynamo spent
    compiling forward graphs (tracing, AOT autograd, inductor; the backward graph, compiled at
    the first backward pass, is not in it).
    """
    from torch._dynamo.utils import compilation_time_metrics, counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "compile_s": round(sum(compilation_time_metrics.get("_compile.compile_inner", [])), 2),
    }


def _no_duck_shapes() -> contextlib.AbstractContextManager:
    try:
        from torch.fx.experimental import _config
    except ImportError:  # a torch without the switch: duck shaping costs one recompile at most
        return contextlib.nullcontext()
    if "use_duck_shape" not in getattr(_config, "_config", {}):
        return contextlib.nullcontext()
    return _config.patch(use_duck_shape=False)
