"""GPU-only checks (skipped without CUDA): varlen attention, bf16 training, compile."""

from __future__ import annotations

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
