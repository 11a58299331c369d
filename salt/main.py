"""The `salt` command: Lightning's CLI with salt's run folders, checks and derived settings.

    salt fit  --config configs/GN2.yaml              # base.yaml is merged in first
    salt fit  --config logs/<run>/config.yaml --ckpt_path logs/<run>/ckpts/<ckpt>.ckpt
    salt test --config logs/<run>/config.yaml        # best checkpoint, predictions + report
    salt plot logs/<run>/ckpts/*__test_ttbar.h5      # report of any prediction file(s)

Environment: `SALT_RUN_ID` names the run folder `<name>_<SALT_RUN_ID>` instead of a timestamp
(the Slurm and HTCondor scripts set it from the job id); `SALT_RUN_DIR` gives the whole path. A
run folder pinned either way that already holds checkpoints is resumed from the newest one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from pathlib import Path

from salt import helpcache
from salt.errors import SaltError, close_matches

PACKAGE = Path(__file__).resolve().parent
BASE_CONFIG = PACKAGE / "configs" / "base.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")

log = logging.getLogger("salt")


def _resolve_config_paths(argv: list[str]) -> list[str]:
    """`--config configs/GN2.yaml` works from anywhere: shipped configs are found in the package."""
    out = list(argv)
    for i, arg in enumerate(out):
        value, prefix = None, ""
        if arg in ("--config", "-c") and i + 1 < len(out):
            value, j = out[i + 1], i + 1
        elif arg.startswith("--config="):
            value, j, prefix = arg.split("=", 1)[1], i, "--config="
        if value is None or Path(value).exists():
            continue
        for candidate in (PACKAGE / value, PACKAGE / "configs" / Path(value).name):
            if candidate.is_file():
                out[j] = prefix + str(candidate)
                break
    return out


def _build_cli_class():
    """SaltCLI, defined on demand so that `salt plot` and cached help skip Lightning's import."""
    import torch
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from salt.callbacks.predictionwriter import PredictionWriter
    from salt.callbacks.runfolder import RunFolder
    from salt.data.datamodule import SaltDataModule
    from salt.derive import check_inputs, derive
    from salt.modelwrapper import ModelWrapper

    class SaltArgumentParser(LightningArgumentParser):
        """A parse error shows the message and one short usage line, not 70 lines of options."""

        def print_usage(self, file=None) -> None:
            prog = self.prog.replace(" [options]", "")
            (file or sys.stderr).write(f"usage: {prog} [--config FILE ...] [--KEY VALUE ...]\n")

        def error(self, message: str, ex: Exception | None = None):
            if message.startswith("unrecognized arguments:"):
                unknown = [a.split("=")[0] for a in message.split()[2:] if a.startswith("--")]
                options = [o for a in self._actions for o in a.option_strings]
                for option in unknown:
                    if hint := close_matches(option, options, n=1):
                        message += f"\n  {option}:{hint}"
            super().error(message, ex)

    class SaltCLI(LightningCLI):
        def __init__(self, args: list[str] | None, run: bool = True):
            # no abbreviations: a typo (--trainer.max_epoch) must fail, not pass as another key
            kwargs = {"default_config_files": [str(BASE_CONFIG)], "allow_abbrev": False}
            parser_kwargs = {sub: dict(kwargs) for sub in SUBCOMMANDS}
            parser_kwargs["allow_abbrev"] = False
            if not run:
                parser_kwargs.update(kwargs)
            super().__init__(
                ModelWrapper,
                SaltDataModule,
                save_config_callback=RunFolder,
                save_config_kwargs={"overwrite": True},
                parser_kwargs=parser_kwargs,
                parser_class=SaltArgumentParser,
                args=args,
                run=run,
                auto_configure_optimizers=False,
            )

        def add_arguments_to_parser(self, parser) -> None:
            options = {
                "--name": "Model name: names the run folder and prefixes outputs (GN2_pb, ...).",
                "--force": "Train even with uncommitted changes in the salt checkout (no --tag "
                "then).",
                "--tag": "Create a git tag named as the run folder and push it to origin.",
                "--compile": "torch.compile the model (GPU; slow to start on CPU).",
            }
            parser.add_argument("--name", type=str, default="salt", help=options["--name"])
            for flag in ("--force", "--tag", "--compile"):
                parser.add_argument(flag, action="store_true", help=options[flag])
            parser.link_arguments("name", "model.name")

        # ------------------------------------------------------------------------- before build
        def before_instantiate_classes(self) -> None:
            sub = self.subcommand
            config = self.config[sub] if sub else self.config
            derive(config, sub or "fit")
            check_inputs(config, sub or "fit")
            self._choose_precision(config.trainer)
            _drop_disabled_callbacks(config.trainer)
            if sub is None:  # built for a script (benchmarks, export): no run folder, no checks
                config.trainer.logger = False
                return
            if sub == "fit":
                self._check_logger(config.trainer)
                self._prepare_fit(config)
            else:
                self._prepare_evaluation(config, sub)

        def _choose_precision(self, trainer) -> None:
            precision = trainer.precision
            accelerator = str(trainer.accelerator or "auto")
            gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
            if precision is None:
                bf16 = gpu and torch.cuda.is_bf16_supported()
                trainer.precision = "bf16-mixed" if bf16 else "32-true"
                log.info("precision: %s (set --trainer.precision to change)", trainer.precision)
            precision = str(trainer.precision)
            if precision.startswith("16"):
                log.warning(
                    "precision 16-mixed can overflow and give NaN losses; the training docs "
                    "advise --trainer.precision bf16-mixed (or 32)."
                )
            # on a CPU Lightning runs 16-mixed as bf16-mixed
            if precision.startswith(("bf16", "16")) and not gpu and not _cpu_has_native_bf16():
                log.warning(
                    "bf16-mixed on a CPU without native bf16 instructions (AVX512-BF16/AMX) is "
                    "emulated: training runs about 10x slower than --trainer.precision 32."
                )

        def _check_logger(self, trainer) -> None:
            for logger in _as_list(trainer.logger):
                path = getattr(logger, "class_path", "") or ""
                if "Comet" not in path:
                    continue
                missing = [v for v in ("COMET_API_KEY", "COMET_WORKSPACE") if not os.getenv(v)]
                if missing:
                    raise SaltError(
                        f"the Comet logger is selected but {' and '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not set: export "
                        f"{missing[0]}=... (see README, 'Logging'), or drop the Comet config."
                    )
                try:
                    import comet_ml  # noqa: F401
                except ImportError:
                    raise SaltError(
                        "the Comet logger is selected but comet_ml is not installed: "
                        "pip install comet-ml"
                    ) from None

        def _prepare_fit(self, config) -> None:
            from lightning.fabric.utilities.rank_zero import rank_zero_only

            from salt.callbacks import runfolder
            from salt.gitcheck import check_and_tag

            trainer = config.trainer
            lightning_keywords = ("last", "hpc", "registry")
            ckpt = config.ckpt_path
            if ckpt is not None and ckpt not in lightning_keywords and not Path(ckpt).is_file():
                raise SaltError(
                    f"--ckpt_path '{config.ckpt_path}' is not a file. Give a checkpoint from a "
                    "run folder's ckpts/ (salt prints the resume command when a run stops)."
                )
            if trainer.fast_dev_run:
                # Lightning swaps loggers and checkpoints for no-ops; salt makes no run folder
                return
            root = Path(trainer.default_root_dir or "logs")
            run_dir = runfolder.choose_run_dir(root, config.name)
            auto_resumed = False
            if config.ckpt_path is None:
                config.ckpt_path = runfolder.auto_resume_checkpoint(run_dir)
                auto_resumed = config.ckpt_path is not None
            rank_zero = rank_zero_only.rank == 0
            code = {}
            if rank_zero:
                # a restart into its own folder (a requeued job) finds its tag already made
                code = check_and_tag(config.force, run_dir.name if config.tag else None)
                runfolder.keep_previous_metrics(run_dir)
            for logger in _as_list(trainer.logger):
                args = getattr(logger, "init_args", None)
                if args is not None and "save_dir" in args:
                    args.save_dir = str(run_dir)
                    if "name" in args:
                        args.name = ""
                    if "version" in args:
                        args.version = ""
            for callback in trainer.callbacks or []:
                if callback.class_path.endswith("Checkpoint") and "dirpath" in callback.init_args:
                    callback.init_args.dirpath = str(run_dir / "ckpts")
            # RunFolder writes the root, not these folders, into config.yaml: a run started
            # from it gets a folder of its own
            self.save_config_kwargs = {
                "overwrite": True,
                "run_dir": str(run_dir),
                "code_info": code,
                "resumed_from": config.ckpt_path,
            }
            if rank_zero:
                print(f"Run folder: {run_dir}")
                if auto_resumed:
                    print(f"Resuming from {config.ckpt_path} (the newest checkpoint of {run_dir})")
                elif config.ckpt_path is not None:
                    print(f"Resuming from {config.ckpt_path}")

        def _prepare_evaluation(self, config, subcommand: str) -> None:
            """validate, test, predict: one device, the run's best checkpoint, no logger."""
            from salt.callbacks.checkpoint import best_checkpoint

            trainer = config.trainer
            # the logger of a run config points into that run's folder, and the CSV logger
            # deletes an existing metrics.csv: evaluation must not touch it
            trainer.logger = False
            if subcommand != "validate":
                # predictions are gathered and written by one process, in file order
                _single_device(trainer)
            if not _named_on_command_line("--ckpt_path", self._argv) or config.ckpt_path is None:
                run_dir = _run_dir_of(config)
                if run_dir is None:
                    raise SaltError(
                        f"salt {subcommand} needs a checkpoint: give --ckpt_path, or the run's "
                        "config (--config logs/<run>/config.yaml) to use its best checkpoint."
                    )
                if config.ckpt_path is not None:
                    log.info("ignoring ckpt_path %s from the config", config.ckpt_path)
                config.ckpt_path = str(best_checkpoint(run_dir / "ckpts"))
            elif not Path(config.ckpt_path).is_file():
                raise SaltError(f"--ckpt_path '{config.ckpt_path}' is not a file.")
            verb = {"validate": "Validating", "test": "Testing", "predict": "Predicting"}
            print(f"{verb[subcommand]} checkpoint {config.ckpt_path}")
            if subcommand == "test" and not any(
                c.class_path.endswith("PredictionWriter") for c in trainer.callbacks or []
            ):
                from jsonargparse import Namespace

                default = Namespace(
                    class_path=f"{PredictionWriter.__module__}.PredictionWriter",
                    init_args=Namespace(),
                )
                trainer.callbacks = [*(trainer.callbacks or []), default]

        def instantiate_classes(self) -> None:
            super().instantiate_classes()
            config = self.config[self.subcommand] if self.subcommand else self.config
            if config.get("compile"):
                self.model.model.compile(dynamic=True)

        def parse_arguments(self, parser, args) -> None:
            self._argv = list(sys.argv[1:] if args is None else args)
            super().parse_arguments(parser, args)

    return SaltCLI


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


def build(args: list[str]):
    """Parse `args` as `salt fit` would (base.yaml first, derived settings) and build the objects.

    Returns the LightningCLI instance with `.model`, `.datamodule` and `.trainer`; nothing is
    run and no run folder is made. For scripts: benchmarks, export, notebooks.

    >>> cli = build(["--config", "configs/GN2.yaml", "--data.batch_size", "100"])
    """
    _tune_malloc()
    with _translated(_resolve_config_paths(args)) as argv:
        return _build_cli_class()(argv, run=False)


def _as_list(value) -> list:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _drop_disabled_callbacks(trainer) -> None:
    """`--trainer.enable_progress_bar false` and `enable_checkpointing false` work as in Lightning.

    Lightning refuses those flags when the callback list holds a progress bar or a checkpoint,
    and base.yaml lists both.
    """
    disabled = []
    if trainer.get("enable_progress_bar") is False:
        disabled.append("ProgressBar")
    if trainer.get("enable_checkpointing") is False:
        disabled.append("Checkpoint")
    if disabled and trainer.callbacks:
        trainer.callbacks = [
            c for c in trainer.callbacks if not c.class_path.endswith(tuple(disabled))
        ]


def _single_device(trainer) -> None:
    """Reduce `trainer.devices` to one device (keeping a named GPU index)."""
    devices = trainer.devices
    if isinstance(devices, str) and "," in devices:
        devices = [d for d in devices.split(",") if d.strip()]
    if isinstance(devices, list | tuple):
        if len(devices) > 1:
            raise SaltError(
                f"salt test and predict run on one device; --trainer.devices {list(devices)} "
                "names several. Name one, e.g. --trainer.devices [0]."
            )
    elif str(devices) != "1":
        print(f"Setting --trainer.devices=1 (was {devices}): one process writes the outputs")
        trainer.devices = 1
    trainer.num_nodes = 1
    trainer.strategy = "auto"


def _cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes in bf16 natively (AVX512-BF16 or AMX), from /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _named_on_command_line(option: str, argv: list[str]) -> bool:
    return any(a == option or a.startswith(option + "=") for a in argv)


def _run_dir_of(config) -> Path | None:
    """The run folder whose config.yaml was given with --config, if any."""
    for cfg in reversed(config.get("config") or []):
        path = Path(str(getattr(cfg, "absolute", cfg)))
        if (path.parent / "ckpts").is_dir():
            return path.parent
    return None


def _tune_malloc() -> None:
    """Keep freed memory in the heap for reuse instead of returning it to the kernel.

    torch's CPU allocator does not cache: every step frees and re-allocates the same large
    buffers, and glibc serves each from fresh mmap'ed pages that the kernel must zero. Measured
    on GN2 at batch 1000: steps 1.2-3.8 s and 5.6 s of system time without this, a steady 1.2 s
    and 2.2 s with it.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap for large blocks
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB free at the heap top
    except (OSError, AttributeError):
        pass


def _setup_logging() -> None:
    import warnings

    # known, harmless warnings from Lightning's internals that a user can do nothing about
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    # a restarted run folder: salt has moved the earlier metrics.csv aside (runfolder.py)
    warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be.*")
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("lightning.fabric", "lightning.pytorch.utilities.rank_zero", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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


def _is_rank_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def main(args: list[str] | None = None) -> None:
    """Entry point of the `salt` command."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["plot"]:
        from salt.evaluation.report import main as plot_main

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
    argv = _resolve_config_paths(argv)
    wants_help = any(a in ("-h", "--help") for a in argv)
    if wants_help and (text := helpcache.cached(argv)) is not None:
        sys.stdout.write(text)
        return

    from salt.callbacks.interrupt import STATE, install_handlers
    from salt.data.tempcopy import cleanup

    install_handlers()
    _tune_malloc()
    _setup_logging()
    env_before = {k: os.environ.get(k) for k in ("SALT_RUN_DIR", "SALT_AUTO_CKPT")}
    code = 0
    try:
        cli_class = _build_cli_class()
        if wants_help:
            text, cacheable = _render_help(cli_class, argv)
            if cacheable:
                helpcache.store(argv, text)
            sys.stdout.write(text)
            if not cacheable:
                code = 2
        else:
            with _translated(argv) as translated:
                # Lightning's CLI reads sys.argv; hand it the resolved arguments there
                sys.argv = [sys.argv[0], *translated]
                cli_class(None)
    except SaltError as err:
        print(f"salt: error: {err}", file=sys.stderr)
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
    if code:
        sys.exit(code)


def _report_interruption(state) -> None:
    from salt.callbacks.interrupt import SIGNAL_NAMES, requeue_slurm_job

    name = SIGNAL_NAMES.get(state.signal, f"signal {state.signal}")
    print(f"\nsalt: stopped by {name}.", file=sys.stderr)
    if state.checkpoint is not None:
        run_dir = state.checkpoint.parent.parent
        print(
            "Resume with:\n  salt fit --config "
            f"{run_dir / 'config.yaml'} --ckpt_path {state.checkpoint}",
            file=sys.stderr,
        )
    elif not state.started:
        print("Training had not started: there is no checkpoint to resume from.", file=sys.stderr)
    if state.requeue:
        print(f"salt: {requeue_slurm_job()}", file=sys.stderr)


if __name__ == "__main__":
    main()
