"""Two DDP processes on CPU (gloo) through the real `salt fit`, from a throw-away git checkout.

Checks that the ranks read disjoint batches that together make the epoch, that validation losses
are reduced over the ranks, and that one process alone made the run folder, its checkpoints and
the git tag.
"""

from __future__ import annotations

import pytest
import yaml

from tests.cli_support import (
    GIT_IDENTITY,
    git,
    make_code_repo,
    probe_args,
    probe_env,
    read_probe,
    train_batches,
)
from tests.conftest import data_args, only_run_dir, run_salt

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`


@pytest.fixture(scope="module")
def ddp_run(demo, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    code, remote = make_code_repo(root)
    cwd, probe = root / "cwd", root / "probe"
    cwd.mkdir()
    # 12 training batches of 500 jets (6 per rank); 2 validation batches of 500 and 100 jets
    result = run_salt(
        ["fit", "--config", "configs/DL1.yaml", *data_args(demo), "--data.batch_size", "500",
         "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
         "--trainer.strategy", "ddp", "--tag", *probe_args(probe)],
        cwd, env={**probe_env(code), **GIT_IDENTITY},
    )  # fmt: skip
    run_dir = only_run_dir(cwd)
    return {"result": result, "run_dir": run_dir, "probe": read_probe(probe), "remote": remote}


def test_ranks_read_disjoint_batches_that_make_the_epoch(ddp_run):
    records = ddp_run["probe"]
    assert sorted(records) == [0, 1]
    for epoch in (0, 1):
        seen = [set(train_batches(records[rank], epoch)) for rank in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == 6
        assert not seen[0] & seen[1]
    # the weak shuffling reorders the batches between epochs
    assert train_batches(records[0], 0) != train_batches(records[0], 1)


def test_validation_loss_is_reduced_over_the_ranks(ddp_run):
    records = ddp_run["probe"]
    for epoch in (0, 1):
        batches = [
            r for rank in (0, 1) for r in records[rank]
            if r["event"] == "val_batch" and r["epoch"] == epoch
        ]  # fmt: skip
        assert sorted(b["n_jets"] for b in batches) == [100, 500]
        mean = sum(b["loss"] * b["n_jets"] for b in batches) / sum(b["n_jets"] for b in batches)
        logged = [
            r["val_loss"] for rank in (0, 1) for r in records[rank]
            if r["event"] == "val_end" and r["epoch"] == epoch
        ]  # fmt: skip
        assert logged == pytest.approx([mean, mean], rel=1e-5)
        rank0 = [b["loss"] for b in batches if b in records[0]]
        assert rank0[0] != pytest.approx(mean, rel=1e-5)  # a rank's own loss is not the result


def test_one_process_writes_the_run_folder_checkpoints_and_tag(ddp_run):
    run_dir, result = ddp_run["run_dir"], ddp_run["result"]
    assert result.stdout.count("Run folder:") == 1
    names = sorted(p.name for p in (run_dir / "ckpts").iterdir())
    assert [n[:9] for n in names] == ["epoch=000", "epoch=001"]  # once each, no "-v1" copies
    meta = yaml.safe_load((run_dir / "metadata.yaml").read_text())
    assert meta["devices"]["world_size"] == 2
    assert meta["git_tag"] == run_dir.name
    tags = git(ddp_run["remote"], "for-each-ref", "--format=%(refname:short)", "refs/tags")
    assert tags.split() == [run_dir.name]
