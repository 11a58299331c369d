"""Git checks before training: uncommitted changes stop the run unless --force; --tag tags it."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from ftag import git_check

from salt.errors import SaltError

log = logging.getLogger(__name__)


def code_repo() -> Path | None:
    """The git checkout that holds the salt code being run, or None for an installed package."""
    here = Path(__file__).resolve().parent
    return here if git_check.is_git_repo(here) else None


def _git(repo: Path, *args: str) -> str:
    return subprocess.check_output(["git", *args], cwd=repo, text=True, stderr=subprocess.PIPE)


def uncommitted_changes(repo: Path) -> list[str]:
    """Tracked files with changes, staged or not (ftag's check misses staged ones)."""
    out = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return [line[3:] for line in out.splitlines() if line.strip()]


def check_and_tag(force: bool, tag: str | None) -> dict:
    """Run the git checks; returns what metadata.yaml records about the code."""
    repo = code_repo()
    if repo is None:
        if tag:
            log.warning("--tag ignored: salt is not running from a git checkout")
        return {"git": "not a git checkout (installed package)", "git_hash": None, "git_tag": None}
    info = {"git_repo": str(Path(_git(repo, "rev-parse", "--show-toplevel").strip()))}
    info["git_hash"] = git_check.get_git_hash(repo)
    changed = uncommitted_changes(repo)
    info["git_dirty"] = bool(changed)
    if changed and not force:
        listed = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
        raise SaltError(
            f"uncommitted changes in {info['git_repo']} ({listed}). Commit them so that this run "
            "can be reproduced, or pass --force to train anyway (no tag is made then)."
        )
    info["git_tag"] = None
    if tag and force:
        log.warning("--force given: no tag is created or pushed (the code may not be committed)")
    elif tag:
        try:
            git_check.create_and_push_tag(repo, "", tag, f"salt training run {tag}")
        except subprocess.CalledProcessError as err:
            detail = (err.stderr or b"").decode() if isinstance(err.stderr, bytes) else err.stderr
            raise SaltError(
                f"--tag: could not create and push tag '{tag}' in {info['git_repo']} "
                f"({' '.join(err.cmd)} failed: {(detail or '').strip() or err}). --tag needs a "
                "remote named origin that you can push to."
            ) from None
        info["git_tag"] = tag
    return info
