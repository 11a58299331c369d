"""Git checks before training: uncommitted changes stop the run unless --force; --tag tags it.

The checkout checked is the one that holds the salt code being run (not the working directory):
that is the code a run folder's commit hash must reproduce.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from salt.errors import SaltError

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent


def _git(repo: Path, *args: str) -> str:
    return subprocess.check_output(["git", *args], cwd=repo, text=True, stderr=subprocess.PIPE)


def code_repo(package: Path = PACKAGE) -> Path | None:
    """The root of the git checkout that holds the salt code being run, or None.

    None for an installed package: outside any checkout, or inside one that does not track the
    salt code (a virtual environment kept in some other project's folder, say).
    """
    try:
        root = Path(_git(package, "rev-parse", "--show-toplevel").strip())
        _git(package, "ls-files", "--error-unmatch", "--", "__init__.py")
    except (subprocess.CalledProcessError, OSError):
        return None
    return root


def uncommitted_changes(repo: Path) -> list[str]:
    """Tracked files with changes, staged or not (untracked files are not the code's state)."""
    out = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return [line[3:] for line in out.splitlines() if line.strip()]


def _error_detail(err: subprocess.CalledProcessError) -> str:
    detail = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
    return detail.strip() or str(err)


def _tag_commit(repo: Path, tag: str) -> str | None:
    try:
        return _git(repo, "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}").strip()
    except subprocess.CalledProcessError:
        return None


def create_and_push_tag(repo: Path, tag: str, head: str) -> None:
    """Tag HEAD as `tag` (annotated) and push that tag alone to origin.

    A tag that already names HEAD (a requeued job starting its run folder again) is pushed again
    rather than made twice; one that names another commit is an error.
    """
    existing = _tag_commit(repo, tag)
    if existing is not None and existing != head:
        raise SaltError(
            f"--tag: tag '{tag}' already exists in {repo} for commit {existing[:12]}, not HEAD "
            f"({head[:12]}). Delete it (git tag -d {tag}) or start a new run folder."
        )
    created = False
    try:
        if existing is None:
            _git(repo, "tag", "-a", tag, "-m", f"salt training run {tag}")
            created = True
        _git(repo, "push", "-q", "origin", f"refs/tags/{tag}")
    except subprocess.CalledProcessError as err:
        if created:  # leave no local tag that origin lacks
            subprocess.run(["git", "tag", "-d", tag], cwd=repo, capture_output=True, check=False)
        raise SaltError(
            f"--tag: could not create and push tag '{tag}' in {repo} "
            f"(`{' '.join(err.cmd)}` failed: {_error_detail(err)}). --tag needs a remote named "
            "origin that you can push to, and git's user.name and user.email set."
        ) from None


def check_and_tag(force: bool, tag: str | None) -> dict:
    """Run the git checks; returns what metadata.yaml records about the code."""
    repo = code_repo()
    if repo is None:
        if tag:
            log.warning("--tag ignored: salt is not running from a git checkout")
        return {
            "git": f"not a git checkout (installed package at {PACKAGE})",
            "git_hash": None,
            "git_tag": None,
        }
    head = _git(repo, "rev-parse", "HEAD").strip()
    info = {"git_repo": str(repo), "git_hash": head}
    changed = uncommitted_changes(repo)
    info["git_dirty"] = bool(changed)
    if changed and not force:
        listed = ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
        raise SaltError(
            f"uncommitted changes in {repo} ({listed}). Commit them so that this run can be "
            "reproduced, or pass --force to train anyway (no tag is made then)."
        )
    info["git_tag"] = None
    if tag and force:
        log.warning("--force given: no tag is created or pushed (the code may not be committed)")
    elif tag:
        create_and_push_tag(repo, tag, head)
        log.info("tagged %s as %s and pushed it to origin", head[:12], tag)
        info["git_tag"] = tag
    return info
