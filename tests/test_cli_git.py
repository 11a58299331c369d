"""Git checks through the real `salt` command, on a copy of salt in a throw-away repository.

salt checks the checkout that holds the code being run. The salt package is copied into a new
git repository with a local bare remote, and `python -m salt.main` runs with that copy first on
PYTHONPATH; a copy outside any repository stands for an installed package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.cli_support import GIT_IDENTITY, PACKAGE, git, make_code_repo
from tests.conftest import data_args, only_run_dir, run_salt

pytestmark = pytest.mark.slow  # end-to-end runs of `salt`

TINY = [
    "--data.num_train", "500", "--data.num_val", "250", "--data.batch_size", "250",
    "--trainer.max_epochs", "1", "--trainer.enable_model_summary", "false",
]  # fmt: skip


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict[str, Path]:
    code, remote = make_code_repo(tmp_path_factory.mktemp("git"))
    return {"code": code, "remote": remote}


def salt_from(code: Path, demo, cwd: Path, *extra: str, check: bool = True):
    """`salt fit` of DL1 run from the salt copy in `code`."""
    return run_salt(
        ["fit", "--config", "configs/DL1.yaml", *data_args(demo), *TINY, *extra],
        cwd, check=check, env={"PYTHONPATH": str(code), **GIT_IDENTITY},
    )  # fmt: skip


def remote_tags(remote: Path) -> list[str]:
    out = git(remote, "for-each-ref", "--format=%(refname:short)", "refs/tags")
    return out.split()


def metadata(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "metadata.yaml").read_text())


def dirty(code: Path):
    """Context: a tracked file of the copy modified, restored afterwards."""

    class _Dirty:
        path = code / "salt" / "errors.py"

        def __enter__(self):
            self.text = self.path.read_text()
            self.path.write_text(self.text + "\n# an uncommitted change\n")

        def __exit__(self, *exc):
            self.path.write_text(self.text)

    return _Dirty()


def test_tag_names_the_run_folder_and_is_pushed_to_origin(repo, demo, tmp_path):
    before = set(remote_tags(repo["remote"]))
    salt_from(repo["code"], demo, tmp_path, "--tag")
    run_dir = only_run_dir(tmp_path)
    head = git(repo["code"], "rev-parse", "HEAD")
    meta = metadata(run_dir)
    # salt ran from (and checked) the copy, not this checkout
    assert meta["git_repo"] == str(repo["code"].resolve())
    assert meta["git_hash"] == head
    assert meta["git_dirty"] is False
    assert set(remote_tags(repo["remote"])) - before == {run_dir.name}
    assert git(repo["remote"], "rev-parse", f"{run_dir.name}^{{commit}}") == head
    assert meta["git_tag"] == run_dir.name


def test_uncommitted_changes_stop_training_unless_forced(repo, demo, tmp_path):
    with dirty(repo["code"]):
        result = salt_from(repo["code"], demo, tmp_path, check=False)
        assert result.returncode != 0
        assert "uncommitted changes" in result.stderr
        assert "salt/errors.py" in result.stderr
        assert "--force" in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "logs").exists()  # not even an empty run folder

        before = remote_tags(repo["remote"])
        result = salt_from(repo["code"], demo, tmp_path, "--force", "--tag")
        assert "--force given: no tag is created" in result.stderr
        assert remote_tags(repo["remote"]) == before
        assert git(repo["code"], "tag", "--list") == "\n".join(sorted(before))
        meta = metadata(only_run_dir(tmp_path))
        assert meta["git_dirty"] is True
        assert meta["git_tag"] is None


def test_installed_package_outside_git_records_it_and_trains(demo, tmp_path):
    site = tmp_path / "site-packages"
    shutil.copytree(PACKAGE, site / "salt", ignore=shutil.ignore_patterns("__pycache__"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    salt_from(site, demo, cwd)  # no --force needed: there is nothing to commit
    meta = metadata(only_run_dir(cwd))
    assert "not a git checkout (installed package" in meta["git"]
    assert str(site / "salt") in meta["git"]
    assert meta["git_hash"] is None
    assert list((only_run_dir(cwd) / "ckpts").glob("epoch=000-*.ckpt"))
