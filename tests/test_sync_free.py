"""A packed training step asks the device nothing: no op whose result size or value the host
must wait for (on a GPU each one would stall the step). Checked on the CPU by watching every
aten op of a forward and backward pass; tests/test_gpu.py runs the same under CUDA's sync check.
"""

from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from salt.models.layout import Packed, host_sizes
from salt.modelwrapper import ModelWrapper
from tests.test_models import make_batch, make_model
from tests.test_models_gn3 import gn3_batch, gn3_model, lrs

# ops whose output size or value comes from the data: the host waits for the device
SYNCING = {
    "aten._local_scalar_dense.default",  # .item(), int(tensor), bool(tensor)
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten._unique2.default",
    "aten.unique_consecutive.default",
}


class SyncWatch(TorchDispatchMode):
    """Records every op of the block that would synchronise a CUDA device with the host."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        syncing = name in SYNCING
        if name.startswith(("aten.index.", "aten.index_put")) and len(args) > 1:
            # a boolean mask as an index is a nonzero in disguise
            syncing |= any(
                isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in args[1] or []
            )
        if name.startswith("aten.repeat_interleave.") and kwargs.get("output_size") is None:
            syncing |= len(args) < 3 or args[2] is None
        if syncing:
            where = "".join(traceback.format_stack(limit=6)[:-1])
            self.found.append(f"{name}\n{where}")
        return func(*args, **kwargs)


def step(model, inputs, valid, labels) -> list[str]:
    wrapper = ModelWrapper(model, lrs())
    batch = wrapper.on_before_batch_transfer(
        {"inputs": inputs, "valid": valid, "labels": labels}, 0
    )
    model.train()
    with SyncWatch() as watch:
        _, losses = model(batch["inputs"], batch["valid"], batch["labels"], batch["sizes"])
        wrapper.total_loss(losses).backward()
    return watch.found


def packed(inputs, valid):
    return {k: (v[valid[k]] if k in valid else v) for k, v in inputs.items()}


def test_gn2_step_is_sync_free():
    inputs, valid, labels = make_batch(n_jets=12)
    assert step(make_model(), packed(inputs, valid), valid, labels) == []


def test_gn3_step_with_types_registers_and_context_is_sync_free():
    inputs, valid, labels = gn3_batch()
    assert step(gn3_model(registers=3), packed(inputs, valid), valid, labels) == []
    inputs, valid, labels = gn3_batch()
    model = gn3_model(registers=3, drop_registers=True)
    assert step(model, packed(inputs, valid), valid, labels) == []


def test_the_watch_sees_what_would_sync():
    x = torch.randn(6)
    with SyncWatch() as watch:
        x[x > 0]
        int(x.sum())
        Packed(torch.ones(2, 3, dtype=torch.bool))  # sizes not given: read off the device
    assert len(watch.found) >= 3


def test_host_sizes():
    valid = {
        "tracks": torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool),
        "flows": torch.tensor([[1, 0], [1, 1]], dtype=torch.bool),
    }
    sizes = host_sizes(valid, ["tracks", "flows"])
    assert sizes["tracks"] == {"max_len": 3, "n_pairs": 3, "n_ordered_pairs": 9 + 1}
    assert sizes["flows"] == {"max_len": 2, "n_pairs": 1, "n_ordered_pairs": 1 + 4}
    assert sizes["merged"] == {"max_len": 4, "n_ordered_pairs": 16 + 9}
