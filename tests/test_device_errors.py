"""GPU settings that cannot work stop with what to change; a batch too large for the GPU keeps
the finished epochs' checkpoints."""

from __future__ import annotations

import pytest
import torch

from salt.cli import check_device
from salt.errors import SaltError
from salt.main import out_of_memory_message
from tests.conftest import data_args, run_dirs, run_python, run_salt_many

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

SMALL = [
    "--data.num_train", "200", "--data.num_val", "100", "--data.batch_size", "100",
    "--trainer.enable_model_summary", "false", "--force",
]  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_asked_without_a_cuda_device(demo, tmp_path):
    args = ["fit", "--config", "configs/GN2.yaml", *data_args(demo), *SMALL]
    (result,) = run_salt_many([[*args, "--trainer.accelerator", "gpu"]], tmp_path)
    assert result.returncode == 2
    assert "--trainer.accelerator gpu, but no CUDA device is visible" in result.stderr
    assert "--trainer.accelerator cpu --trainer.precision 32" in result.stderr
    assert "Traceback" not in result.stderr
    assert not run_dirs(tmp_path)


def test_bf16_on_a_gpu_without_it(monkeypatch):
    from jsonargparse import Namespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    trainer = Namespace(accelerator="gpu", precision="bf16-mixed")
    with pytest.raises(SaltError, match=r"V100 has no bf16: use --trainer.precision 16-mixed"):
        check_device(trainer)
    check_device(Namespace(accelerator="gpu", precision="16-mixed"))  # fine


def test_out_of_memory_message_names_the_batch_size():
    err = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore")
    text = out_of_memory_message(err, ["fit", "--data.batch_size", "4000"])
    assert "Tried to allocate 20.00 GiB" in text and "more" not in text
    assert "smaller --data.batch_size (now 4000)" in text
    assert "(now" not in out_of_memory_message(err, ["fit"])


_OOM_IN_SECOND_EPOCH = """
import sys, torch
from salt.modelwrapper import ModelWrapper
from salt.main import main

step = ModelWrapper.training_step

def training_step(self, batch, batch_idx):
    if self.current_epoch == 1:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
    return step(self, batch, batch_idx)

ModelWrapper.training_step = training_step
main(sys.argv[1:])
"""


def test_out_of_memory_mid_training_keeps_the_finished_epoch(demo, tmp_path):
    args = ["fit", "--config", "configs/GN2.yaml", *data_args(demo), *SMALL]
    args += ["--trainer.max_epochs", "2"]
    result = run_python(_OOM_IN_SECOND_EPOCH, args, tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "the GPU ran out of memory: CUDA out of memory" in result.stderr
    assert "Traceback" not in result.stderr
    (run,) = run_dirs(tmp_path)
    (ckpt,) = (run / "ckpts").glob("epoch=000-*.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["epoch"] == 0 and state["state_dict"]
