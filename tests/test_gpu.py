"""GPU-only checks (skipped without CUDA): varlen attention, bf16 training, compile."""

from __future__ import annotations

import warnings

import pytest
import torch

from salt.models import Transformer
from salt.models.attention import varlen_available
from salt.models.layout import Packed, Padded

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def random_valid(n_jets: int, slots: int) -> torch.Tensor:
    lengths = torch.randint(0, slots + 1, (n_jets,))
    return torch.arange(slots)[None, :] < lengths[:, None]


@pytest.mark.skipif(not varlen_available(), reason="torch without varlen attention")
def test_varlen_attention_matches_padded_sdpa():
    torch.manual_seed(0)
    valid = random_valid(64, 40).cuda()
    layout = Packed(valid)
    q, k, v = (
        torch.randn(layout.n_tokens, 4, 32, device="cuda", dtype=torch.bfloat16) for _ in "qkv"
    )
    varlen = layout.attention(q, k, v, "varlen")
    padded = layout.attention(q, k, v, "sdpa")
    torch.testing.assert_close(varlen.float(), padded.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("compile_model", [False, True])
def test_bf16_encoder_packed_equals_padded(compile_model):
    torch.manual_seed(0)
    encoder = Transformer(64, 2, 4, out_dim=32).cuda().eval()
    if compile_model:
        encoder.compile(dynamic=True)
    valid = random_valid(128, 40).cuda()
    x = torch.randn(128, 40, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        packed = encoder(x[valid], Packed(valid))
        padded = encoder(x, Padded(valid))[valid]
    assert torch.isfinite(packed.float()).all()
    torch.testing.assert_close(packed.float(), padded.float(), rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("registers", [0, 2])
def test_packed_bf16_training_step_never_syncs(registers):
    """Forward, losses and backward of a GN2/GN3-like model under CUDA's sync check."""
    from salt.modelwrapper import ModelWrapper
    from tests.test_models import make_batch, make_model
    from tests.test_models_gn3 import gn3_batch, gn3_model, lrs

    if registers:
        model, (inputs, valid, labels) = gn3_model(registers=registers), gn3_batch()
    else:
        model, (inputs, valid, labels) = make_model(), make_batch(n_jets=64)
    wrapper = ModelWrapper(model, lrs())
    packed = {k: (v[valid[k]] if k in valid else v) for k, v in inputs.items()}
    batch = wrapper.on_before_batch_transfer(
        {"inputs": packed, "valid": valid, "labels": labels}, 0
    )
    from lightning.pytorch.utilities import move_data_to_device

    batch = move_data_to_device(batch, torch.device("cuda"))
    model.cuda().train()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, losses = model(batch["inputs"], batch["valid"], batch["labels"], batch["sizes"])
            total = wrapper.total_loss(losses)
        total.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(total).item()


def _gpu_packed_batch(n_jets: int, longest: int, seed: int, types=("tracks",)):
    from tests.test_compile import packed_batch

    inputs, valid, labels, sizes = packed_batch(n_jets, longest, types, seed=seed)
    move = lambda x: x.cuda(non_blocking=True)  # noqa: E731
    inputs = {k: move(v) for k, v in inputs.items()}
    valid = {k: move(v) for k, v in valid.items()}
    labels = {k: {f: move(t) for f, t in v.items()} for k, v in labels.items()}
    return inputs, valid, labels, sizes


def test_compiled_model_one_graph_over_varying_lengths_and_no_sync():
    """Inductor over packed bf16 batches of different lengths (varlen attention): one graph,
    outputs as eager, and a step of the compiled model never waits for the device."""
    import copy

    from salt.models.compile import compile_calls, compile_counters, compile_model
    from tests.test_models import make_model

    torch._dynamo.reset()
    eager = make_model().cuda().train()
    compiled = compile_model(copy.deepcopy(eager))
    graphs = compile_counters()["graphs"]
    for i, (n_jets, longest) in enumerate([(256, 17), (300, 40), (129, 9), (512, 25)]):
        batch = _gpu_packed_batch(n_jets, longest, seed=i)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out_e, loss_e = eager(*batch)
            out_c, loss_c = compiled(*batch)
        sum(loss_c.values()).backward()
        for name in out_e:
            torch.testing.assert_close(
                out_c[name].float(), out_e[name].float(), rtol=5e-2, atol=5e-2
            )
        for name in loss_e:
            torch.testing.assert_close(loss_c[name], loss_e[name], rtol=5e-2, atol=5e-2)
    assert compile_counters()["graphs"] - graphs == 1, "a batch of new lengths recompiled"
    assert compile_calls(compiled) == {"compiled": 4, "eager": 0}
    batch = _gpu_packed_batch(200, 31, seed=9)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, losses = compiled(*batch)
        sum(losses.values()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert compile_counters()["graphs"] - graphs == 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_are_pinned_and_copied_without_waiting(demo, num_workers):
    """The loader hands over pinned batches; the copy to the GPU is pinned -> device, async."""
    from lightning.pytorch.utilities import move_data_to_device
    from torch.profiler import ProfilerActivity, profile

    from salt.main import build
    from tests.conftest import data_args

    cli = build(
        ["--config", "configs/GN2.yaml", *data_args(demo), "--data.batch_size", "500",
         "--data.num_workers", str(num_workers), "--data.check_jets", "0"]
    )  # fmt: skip
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    batch = cli.model.on_before_batch_transfer(batch, 0)
    tensors = []

    def collect(x):
        if isinstance(x, dict):
            for v in x.values():
                collect(v)
        elif isinstance(x, torch.Tensor):
            tensors.append(x)

    collect({k: batch[k] for k in ("inputs", "valid", "labels")})
    assert tensors and all(t.is_pinned() for t in tensors)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        moved = move_data_to_device(batch, torch.device("cuda"))
        torch.cuda.synchronize()
    on_device = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    if on_device:  # the profiler sees the device's activity (CUPTI works here)
        copies = [name for name in on_device if "Memcpy HtoD" in name]
        assert copies and all("Pinned" in name for name in copies), copies
    else:
        warnings.warn("the profiler recorded no CUDA activity: copy kinds unchecked", stacklevel=1)
    for name, x in batch["inputs"].items():
        torch.testing.assert_close(moved["inputs"][name].cpu(), x)


@pytest.mark.parametrize(("optimizer", "registers"), [("AdamW", 0), ("AdamW", 2), ("lion", 2)])
def test_bf16_gn3_model_trains(optimizer, registers):
    """Types, registers, global inputs and task context in bf16 on the GPU: steps of the
    wrapper's optimiser (at the schedule's peak rate) lower the loss of a batch and leave every
    parameter finite."""
    from salt.models.layout import host_sizes
    from salt.modelwrapper import ModelWrapper
    from tests.test_models_gn3 import gn3_batch, gn3_model, lrs

    torch.manual_seed(0)
    model = gn3_model(registers=registers).cuda().train()
    wrapper = ModelWrapper(model, lrs(), optimizer=optimizer)
    opt = wrapper.configure_optimizers()["optimizer"]
    inputs, valid, labels = gn3_batch(n_jets=64, slots=20)
    sizes = host_sizes(valid, model.constituents)
    inputs = {k: (v[valid[k]] if k in valid else v).cuda() for k, v in inputs.items()}
    valid = {k: v.cuda() for k, v in valid.items()}
    labels = {k: {f: t.cuda() for f, t in v.items()} for k, v in labels.items()}
    totals = []
    for _ in range(8):
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, losses = model(inputs, valid, labels, sizes)
            total = wrapper.total_loss(losses)
        total.backward()
        opt.step()
        totals.append(total.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert totals[-1] < totals[0], totals


@pytest.mark.parametrize("qkv_norm", [False, True])
def test_packed_bf16_attention_takes_the_varlen_kernel(monkeypatch, qkv_norm):
    """Under bf16 autocast the packed layout attends with varlen flash attention, also when
    queries, keys and values are RMS-normalised (GN3's hybrid layers): CUDA autocast runs norms
    in fp32, and fp32 q/k/v would silently fall back to padded fp32 attention."""
    import salt.models.layout as layout_module
    from salt.models.attention import MultiheadAttention

    calls = []
    real = layout_module.attend_varlen

    def counting(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)

    monkeypatch.setattr(layout_module, "attend_varlen", counting)
    attention = MultiheadAttention(64, 4, qk_norm=qkv_norm, v_norm=qkv_norm).cuda()
    valid = random_valid(128, 40).cuda()
    x = torch.randn(int(valid.sum()), 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = attention(x, Packed(valid))
    assert calls == [torch.bfloat16]
    assert torch.isfinite(out.float()).all()
