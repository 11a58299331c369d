"""The `salt` command: Lightning's CLI with salt's run folders, checks and derived settings.

    salt fit  --config configs/GN2.yaml              # base.yaml is merged in first
    salt test --config logs/<run>/config.yaml        # best checkpoint, predictions + report
    salt plot logs/<run>/ckpts/*__test_ttbar.h5      # report of any prediction file(s)
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

from salt import helpcache
from salt.errors import SaltError

PACKAGE = Path(__file__).resolve().parent
BASE_CONFIG = PACKAGE / "configs" / "base.yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")

log = logging.getLogger("salt")


def _resolve_config_paths(argv: list[str]) -> list[str]:
    """`--config configs/GN2.yaml` works from anywhere: shipped configs are found in the package."""
    out = list(argv)
    for i, arg in enumerate(out):
        value, prefix = None, ""
        if arg == "--config" and i + 1 < len(out):
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
    from lightning.pytorch.cli import LightningCLI

    from salt.callbacks.predictionwriter import PredictionWriter
    from salt.callbacks.runfolder import RunFolder
    from salt.data.datamodule import SaltDataModule
    from salt.derive import check_inputs, derive
    from salt.modelwrapper import ModelWrapper

    class SaltCLI(LightningCLI):
        def __init__(self, args: list[str] | None, run: bool = True):
            kwargs = {"default_config_files": [str(BASE_CONFIG)]}
            parser_kwargs = {sub: dict(kwargs) for sub in SUBCOMMANDS}
            if not run:
                parser_kwargs.update(kwargs)
            super().__init__(
                ModelWrapper,
                SaltDataModule,
                save_config_callback=RunFolder,
                save_config_kwargs={"overwrite": True},
                parser_kwargs=parser_kwargs,
                args=args,
                run=run,
                auto_configure_optimizers=False,
            )

        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument("--name", type=str, default="salt", help="Model name: names "
                                "the run folder and prefixes the outputs (GN2_pb, ...).")  # fmt: skip
            parser.add_argument("--force", action="store_true", help="Train even with "
                                "uncommitted changes in the salt checkout (no --tag then).")  # fmt: skip
            parser.add_argument("--tag", action="store_true", help="Create a git tag named as "
                                "the run folder and push it to origin.")  # fmt: skip
            parser.add_argument("--compile", action="store_true", help="torch.compile the "
                                "model (GPU; slow to start on CPU).")  # fmt: skip
            parser.link_arguments("name", "model.name")

        # ------------------------------------------------------------------------- before build
        def before_instantiate_classes(self) -> None:
            sub = self.subcommand
            config = self.config[sub] if sub else self.config
            derive(config, sub or "fit")
            check_inputs(config, sub or "fit")
            self._choose_precision(config.trainer)
            if sub is None:  # built for a script (benchmarks, export): no run folder, no checks
                config.trainer.logger = False
                return
            self._check_logger(config.trainer)
            if sub == "fit":
                self._prepare_fit(config)
            elif sub in ("test", "predict"):
                self._prepare_test(config)

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
            if precision.startswith("bf16") and not gpu and not _cpu_has_native_bf16():
                log.warning(
                    "bf16-mixed on a CPU without native bf16 instructions (AVX512-BF16/AMX) is "
                    "emulated: training runs about 10x slower than --trainer.precision 32."
                )

        def _check_logger(self, trainer) -> None:
            loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
            for logger in loggers:
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
            trainer = config.trainer
            if trainer.fast_dev_run:
                # Lightning swaps loggers and checkpoints for no-ops; salt makes no run folder
                return
            from lightning.fabric.utilities.rank_zero import rank_zero_only

            from salt.gitcheck import check_and_tag

            run_dir = os.environ.get("SALT_RUN_DIR")
            if not run_dir:
                stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                root = Path(trainer.default_root_dir or "logs")
                run_dir = str(root / f"{config.name}_{stamp}")
                # DDP ranks started by Lightning inherit it: one folder for all of them
                os.environ["SALT_RUN_DIR"] = run_dir
            code = {}
            if rank_zero_only.rank == 0:
                code = check_and_tag(config.force, Path(run_dir).name if config.tag else None)
            trainer.default_root_dir = run_dir
            for logger in trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]:
                args = getattr(logger, "init_args", None)
                if args is not None and "save_dir" in args:
                    args.save_dir = run_dir
                    if "name" in args:
                        args.name = ""
                    if "version" in args:
                        args.version = ""
            for callback in trainer.callbacks or []:
                if callback.class_path.endswith("Checkpoint") and "dirpath" in callback.init_args:
                    callback.init_args.dirpath = str(Path(run_dir) / "ckpts")
            self.save_config_kwargs = {
                "overwrite": True,
                "run_dir": run_dir,
                "code_info": code,
            }
            print(f"Run folder: {run_dir}")

        def _prepare_test(self, config) -> None:
            from salt.callbacks.checkpoint import best_checkpoint

            trainer = config.trainer
            devices = trainer.devices
            if isinstance(devices, list | tuple) and len(devices) > 1:
                raise SaltError(
                    f"salt test runs on one device; --trainer.devices {list(devices)} names "
                    "several. Name one, e.g. --trainer.devices [0]."
                )
            if devices not in (1, "1", "auto", [0], None) and not isinstance(devices, list):
                print("Setting --trainer.devices=1")
                trainer.devices = 1
            trainer.num_nodes = 1
            trainer.strategy = "auto"
            trainer.logger = False
            if not _named_on_command_line("--ckpt_path", self._argv) or config.ckpt_path is None:
                run_dir = _run_dir_of(config)
                if run_dir is None:
                    raise SaltError(
                        "salt test needs a checkpoint: give --ckpt_path, or the run's config "
                        "(--config logs/<run>/config.yaml) to use its best checkpoint."
                    )
                if config.ckpt_path is not None:
                    log.info("ignoring ckpt_path %s from the config", config.ckpt_path)
                config.ckpt_path = str(best_checkpoint(run_dir / "ckpts"))
            print(f"Testing checkpoint {config.ckpt_path}")
            if not any(c.class_path.endswith("PredictionWriter") for c in trainer.callbacks or []):
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


def build(args: list[str]):
    """Parse `args` as `salt fit` would (base.yaml first, derived settings) and build the objects.

    Returns the LightningCLI instance with `.model`, `.datamodule` and `.trainer`; nothing is
    run and no run folder is made. For scripts: benchmarks, export, notebooks.

    >>> cli = build(["--config", "configs/GN2.yaml", "--data.batch_size", "100"])
    """
    _tune_malloc()
    return _build_cli_class()(list(_resolve_config_paths(args)), run=False)


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("lightning.fabric", "lightning.pytorch.utilities.rank_zero", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(args: list[str] | None = None) -> None:
    """Entry point of the `salt` command."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["plot"]:
        from salt.evaluation.report import main as plot_main

        plot_main(argv[1:])
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
    run_dir_env = os.environ.get("SALT_RUN_DIR")
    code = 0
    try:
        cli_class = _build_cli_class()
        if wants_help:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
                sys.argv = [sys.argv[0], *argv]
                cli_class(None)
            helpcache.store(argv, buffer.getvalue())
            sys.stdout.write(buffer.getvalue())
            return
        # Lightning's CLI reads sys.argv; hand it the resolved arguments there
        sys.argv = [sys.argv[0], *argv]
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
        if run_dir_env is None:  # set for this run's DDP ranks only
            os.environ.pop("SALT_RUN_DIR", None)
    if STATE.signal is not None:
        name = {2: "SIGINT (Ctrl-C)", 15: "SIGTERM"}.get(STATE.signal, f"signal {STATE.signal}")
        print(f"\nsalt: stopped by {name}.", file=sys.stderr)
        if STATE.checkpoint is not None:
            run_dir = STATE.checkpoint.parent.parent
            print(
                "Resume with:\n  salt fit --config "
                f"{run_dir / 'config.yaml'} --ckpt_path {STATE.checkpoint}",
                file=sys.stderr,
            )
        code = code or 128 + STATE.signal
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
