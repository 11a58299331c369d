"""The `salt` command: finds the config files, then hands over to salt.cli (Lightning's CLI).

    salt fit  --config configs/GN2.yaml              # base.yaml is merged in first
    salt fit  --config logs/<run>/config.yaml --ckpt_path logs/<run>/ckpts/<ckpt>.ckpt
    salt test logs/latest                            # newest run: best checkpoint, predictions,
                                                     # report (a run folder works as well)
    salt plot logs/<run>/ckpts/*__test_ttbar.h5      # report of any prediction file(s)

This module stays light: `salt plot` and a cached `--help` answer without importing Lightning,
which salt.cli imports.

Environment: `SALT_RUN_ID` names the run folder `<name>_<SALT_RUN_ID>` instead of a timestamp
(the Slurm and HTCondor scripts set it from the job id); `SALT_RUN_DIR` gives the whole path. A
run folder pinned either way that already holds checkpoints is resumed from the newest one that
loads.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

from salt import helpcache
from salt.errors import SaltError

PACKAGE = Path(__file__).resolve().parent
EVALUATION = ("validate", "test", "predict")
RUN_CONFIG = "config.yaml"


# ------------------------------------------------------------------------------- config files
def config_file(value: str) -> str:
    """Where one `--config` value points: the one place that maps a config file name.

    A run folder (``logs/GN2_<stamp>``, ``logs/latest``) means its config.yaml; a name that is
    not a path from here (``configs/GN2.yaml``) is looked up among the shipped configs.
    """
    path = Path(value)
    if path.is_dir() and (path / RUN_CONFIG).is_file():
        if path.is_symlink():  # logs/latest: name the run itself in what salt prints
            path = path.parent / path.readlink()
        return str(path / RUN_CONFIG)
    if path.exists():
        return value
    for candidate in (PACKAGE / value, PACKAGE / "configs" / path.name):
        if candidate.is_file():
            return str(candidate)
    return value


def _is_path(token: str) -> bool:
    return not token.startswith("-") and Path(token).exists()


def _one_config_only(option: str, first: str, second: str) -> SaltError:
    return SaltError(
        f"{option} takes one file or run folder, but '{first}' and '{second}' follow it (a "
        "pattern such as logs/GN2_*/config.yaml that matched several runs?). Name one run: "
        "`salt test logs/latest` evaluates the newest, `salt test logs/<run>` any other."
    )


def resolve_config_args(argv: list[str]) -> list[str]:
    """The command line with every config file found (see `config_file`).

    * ``salt test RUN`` (also validate, predict) and ``--run RUN``: ``--config RUN/config.yaml``;
    * ``--config FILE`` and ``--config=FILE``: `config_file(FILE)`;
    * two paths after one ``--config`` or a run folder (a shell pattern that matched two runs)
      stop with an error that names both, instead of an "unrecognized arguments" later.
    """
    out = list(argv)
    if len(out) > 1 and out[0] in EVALUATION and not out[1].startswith("-"):
        if len(out) > 2 and _is_path(out[2]):
            raise _one_config_only(f"salt {out[0]}", out[1], out[2])
        if not Path(out[1]).exists():
            raise SaltError(
                f"salt {out[0]} {out[1]}: no such run folder. Give a folder that `salt fit` "
                "wrote (logs/<name>_<stamp>, or logs/latest for the newest)."
            )
        out[1:2] = ["--config", out[1]]
    for i, arg in enumerate(out):
        option, value, j = None, None, None
        if arg in ("--config", "-c", "--run") and i + 1 < len(out):
            option, value, j = arg, out[i + 1], i + 1
        elif arg.startswith(("--config=", "--run=")):
            option, value = arg.split("=", 1)
            j = i
        if value is None:
            continue
        if j == i + 1 and i + 2 < len(out) and _is_path(out[i + 2]) and _is_path(value):
            raise _one_config_only(option, value, out[i + 2])
        resolved = config_file(value)
        if option == "--run":
            out[i] = "--config"
        out[j] = f"--config={resolved}" if j == i else resolved
    return out


@contextlib.contextmanager
def _translated(argv: list[str]):
    """`argv` with salt-ml config files replaced by translations that live as long as the block."""
    import shutil
    import tempfile

    from salt.saltml import translate_config_args

    workdir = Path(tempfile.mkdtemp(prefix="salt_translated_"))
    try:
        yield translate_config_args(argv, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------------------- entry point
def build(args: list[str]):
    """Parse `args` as `salt fit` would (base.yaml first, derived settings) and build the objects.

    Returns the LightningCLI instance with `.model`, `.datamodule` and `.trainer`; nothing is
    run and no run folder is made. For scripts: benchmarks, export, notebooks.

    >>> cli = build(["--config", "configs/GN2.yaml", "--data.batch_size", "100"])
    """
    from salt.cli import SaltCLI, tune_malloc

    tune_malloc()
    with _translated(resolve_config_args(list(args))) as argv:
        return SaltCLI(argv, run=False)


def _render_help(cli_class, argv: list[str]) -> tuple[str, bool]:
    """The help text for `argv`, and whether it is worth caching (the parser exited cleanly)."""
    buffer = io.StringIO()
    ok = True
    sys.argv = [sys.argv[0], *argv]
    with contextlib.redirect_stdout(buffer):
        try:
            cli_class(None)
        except SystemExit as exc:
            ok = exc.code in (0, None)
    text = buffer.getvalue()
    return text, ok and bool(text.strip())


def main(args: list[str] | None = None) -> None:
    """Entry point of the `salt` command."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["plot"]:
        from salt.evaluation.plot_cli import main as plot_main

        plot_main(argv[1:])
        return
    if argv[:1] == ["migrate-config"]:
        from salt.saltml import migrate_main

        try:
            migrate_main(argv[1:])
        except SaltError as err:
            print(f"salt: error: {err}", file=sys.stderr)
            sys.exit(2)
        return
    try:
        argv = resolve_config_args(argv)
    except SaltError as err:
        print(f"salt: error: {err}", file=sys.stderr)
        sys.exit(2)
    wants_help = any(a in ("-h", "--help") for a in argv)
    if wants_help and (text := helpcache.cached(argv)) is not None:
        sys.stdout.write(text)
        return

    from salt import console
    from salt.callbacks.interrupt import STATE, install_handlers
    from salt.data.tempcopy import cleanup

    install_handlers()
    console.setup()
    env_before = {k: os.environ.get(k) for k in ("SALT_RUN_DIR", "SALT_AUTO_CKPT")}
    code = 0
    try:
        from salt.cli import SaltCLI, tune_malloc

        tune_malloc()
        if wants_help:
            text, cacheable = _render_help(SaltCLI, argv)
            if cacheable:
                helpcache.store(argv, text)
            sys.stdout.write(text)
            if not cacheable:
                code = 2
        else:
            with _translated(argv) as translated:
                # Lightning's CLI reads sys.argv; hand it the resolved arguments there
                sys.argv = [sys.argv[0], *translated]
                SaltCLI(None)
    except SaltError as err:
        print(f"salt: error: {err}", file=sys.stderr)
        code = 2
    except RuntimeError as err:
        if type(err).__name__ != "OutOfMemoryError":
            raise
        print(f"salt: error: {out_of_memory_message(err, argv)}", file=sys.stderr)
        code = 2
    except (SystemExit, KeyboardInterrupt) as exc:
        if STATE.signal is None:
            raise
        code = 128 + STATE.signal
        del exc
    finally:
        cleanup()
        if "salt.callbacks.runfolder" in sys.modules:
            sys.modules["salt.callbacks.runfolder"].release_unused()
        # set by salt for this run's DDP ranks only: a later run in this process starts afresh
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
    if STATE.signal is not None:
        code = 128 + STATE.signal
        if _is_rank_zero():
            _report_interruption(STATE)
    elif code and STATE.checkpoint is not None and _is_rank_zero():
        # an error mid-training (a damaged file, say) after the work so far was saved
        print(_resume_command(STATE.checkpoint), file=sys.stderr)
    if code:
        sys.exit(code)


def out_of_memory_message(err: BaseException, argv: list[str]) -> str:
    """What to change when a batch does not fit in GPU memory (torch's OutOfMemoryError)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else "out of memory"
    size = next(
        (argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--data.batch_size"), None
    ) or next((a.split("=", 1)[1] for a in argv if a.startswith("--data.batch_size=")), None)
    now = f" (now {size})" if size else ""
    return (
        f"the GPU ran out of memory: {first}\nA batch does not fit: give a smaller "
        f"--data.batch_size{now}, e.g. half, or --trainer.precision bf16-mixed if it is 32. "
        "The checkpoints of finished epochs are kept."
    )


def _is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _resume_command(checkpoint: Path) -> str:
    run_dir = checkpoint.parent.parent
    return (
        f"The training so far is saved in {checkpoint}. Resume with:\n"
        f"  salt fit --config {run_dir / RUN_CONFIG} --ckpt_path {checkpoint}"
    )


def _report_interruption(state) -> None:
    from salt.callbacks.interrupt import SIGNAL_NAMES, requeue_slurm_job

    name = SIGNAL_NAMES.get(state.signal, f"signal {state.signal}")
    print(f"\nsalt: stopped by {name}.", file=sys.stderr)
    if state.checkpoint is not None:
        print(_resume_command(state.checkpoint), file=sys.stderr)
    elif not state.started:
        print("Training had not started: there is no checkpoint to resume from.", file=sys.stderr)
    if state.requeue:
        print(f"salt: {requeue_slurm_job()}", file=sys.stderr)


if __name__ == "__main__":
    main()
