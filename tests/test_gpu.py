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
