"""The loader on a CUDA device (skipped without one): batches arrive there, from pinned memory, in
the sampler's order and unchanged, and neither the loader nor a training step on its batches
makes the host wait for the device. tests/test_data_prefetch.py checks the same logic on a CPU."""

from __future__ import annotations

import pytest
import torch
from test_data_loading import make_module
from test_data_prefetch import small_gn2

from salt.data.prefetch import to_device_ahead

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def tensors(batch) -> list[torch.Tensor]:
    if isinstance(batch, dict):
        return [t for v in batch.values() for t in tensors(v)]
    return [batch] if isinstance(batch, torch.Tensor) else []


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_arrive_on_the_device_in_order(demo, workers):
    module = make_module(demo, check_jets=0, num_workers=workers)
    module.setup("fit")
    host = list(module.train_dataloader())
    module.target_device = "cuda"
    loader = module.train_dataloader()
    assert loader.pin_batches and loader.device.type == "cuda"
    delivered = list(loader)
    torch.cuda.synchronize()
    assert len(delivered) == len(host)
    for got, expected in zip(delivered, host):
        assert all(t.is_cuda for t in tensors(got))
        sizes = got.pop("sizes")
        assert sizes["tracks"]["max_len"] == int(expected["valid"]["tracks"].sum(1).max())
        torch.testing.assert_close(
            got, expected, rtol=0, atol=0, equal_nan=True, check_device=False
        )


def test_host_batches_are_pinned_before_the_copy(demo):
    module = make_module(demo, check_jets=0)
    module.setup("fit")
    module.target_device = "cuda"
    loader = module.train_dataloader()
    loader.device = None  # stop before the copy: the host side of the GPU path
    batch = next(iter(loader))
    assert all(t.is_pinned() for t in tensors(batch))


def test_the_loader_and_a_packed_step_never_sync(demo):
    """A GN2-like model trained on the loader's batches under CUDA's sync check."""
    module = make_module(demo, check_jets=0, num_workers=0)
    module.target_device = "cuda"
    module.setup("fit")
    model = small_gn2(demo["norm_dict"]).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    iterator = iter(module.train_dataloader())

    def step(checked: bool) -> torch.Tensor:
        # the loader's copies, forward and backward under the check; AdamW's step is not ours
        torch.cuda.set_sync_debug_mode("error" if checked else "default")
        try:
            batch = next(iterator)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, losses = model(batch["inputs"], batch["valid"], batch["labels"], batch["sizes"])
                total = sum(losses.values())
            total.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total.detach()

    step(checked=False)  # CUDA context, kernels and the allocator's first blocks
    torch.cuda.synchronize()
    totals = [step(checked=True) for _ in range(3)]
    assert all(torch.isfinite(t).item() for t in totals)


def test_prefetched_memory_is_not_reused_early():
    """Batches kept by the consumer stay intact while later copies land (record_stream)."""
    gen = torch.Generator().manual_seed(0)
    host = [{"x": torch.randn(1 << 20, generator=gen).pin_memory()} for _ in range(6)]
    kept = []
    for batch in to_device_ahead(iter(host), "cuda", depth=2):
        torch.cuda._sleep(1_000_000)  # a slow consumer kernel while the next copies run
        kept.append(batch["x"] * 1)
        del batch  # freed while queued work on the consumer's stream may still read it
    torch.cuda.synchronize()
    for got, expected in zip(kept, host):
        torch.testing.assert_close(got.cpu(), expected["x"], rtol=0, atol=0)
