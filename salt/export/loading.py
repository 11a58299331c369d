"""A trained run, loaded for export: the model as trained, its config, and where its data was.

A run folder (``logs/<name>_<stamp>/``) holds ``config.yaml`` (the merged config, with what `salt`
derived before training: variables, class names, the norm dict path), ``metadata.yaml`` (the
training directory and the absolute paths of the data files), ``norm_dict.yaml`` (a copy) and
``ckpts/*.ckpt``.

The model is rebuilt from the config's ``model.model`` section alone: no Lightning (whose import
costs 2-3 s here), no training files. The checkpoint then supplies every weight *and* the
normalisation (InputNorm keeps mean and std as buffers), so the exported normalisation is the one
the weights were trained with, whatever norm dict is found today.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from salt.data.h5files import resolve_files
from salt.errors import SaltError
from salt.models.saltmodel import SaltModel

COMPILE_PREFIX = "_orig_mod."


@dataclass
class TrainedRun:
    """What export needs to know about one trained model."""

    model: SaltModel
    ckpt_path: Path
    config_path: Path
    config_text: str
    config: dict
    run_dir: Path
    name: str
    norm_dict: Path | None
    metadata: dict = field(default_factory=dict)

    def data_path(self, value: str | Path | None) -> Path | None:
        """A path from the config, as given or relative to the directory `salt fit` ran in."""
        if not value:
            return None
        path = Path(value).expanduser()
        if path.exists():
            return path
        cwd = self.metadata.get("cwd")
        if cwd and not path.is_absolute() and (Path(cwd) / path).exists():
            return Path(cwd) / path
        return None

    def validation_file(self, override: str | None = None) -> Path:
        """The file the parity check reads: `override`, else the run's validation file."""
        if override:
            return resolve_files(override, "val")[0]
        tried: list[str] = []
        spec = self.config.get("data", {}).get("val_file")
        for item in spec if isinstance(spec, list) else [spec]:
            if item and (path := self.data_path(item)) is not None:
                return path
            if item:
                tried.append(str(item))
        for entry in self.metadata.get("data", {}).get("val", {}).get("files", []):
            path = Path(entry["path"])
            if path.exists():
                return path
            tried.append(str(path))
        raise SaltError(
            "the parity check needs the run's validation file, but "
            f"{', '.join(tried) or 'none is recorded'} "
            f"{'does' if len(tried) == 1 else 'do'} not exist (also tried relative to "
            f"{self.metadata.get('cwd', 'the training directory')}). Pass --val_file PATH (any "
            "UPP file with the model's input variables)."
        )


def run_dir_of(ckpt_path: Path) -> Path:
    """``<run>/ckpts/x.ckpt`` -> ``<run>``; a checkpoint elsewhere -> its own folder."""
    parent = ckpt_path.parent
    return parent.parent if parent.name == "ckpts" else parent


def model_state(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The SaltModel's weights from a ModelWrapper checkpoint's state dict.

    Keys are ``model.<...>`` (the wrapper's attribute); a model wrapped by ``torch.compile``
    carries ``_orig_mod.`` in its keys, which the plain model does not know.
    """
    out = {}
    for key, value in state_dict.items():
        key = key.replace(COMPILE_PREFIX, "")
        if key.startswith("model."):
            out[key.removeprefix("model.")] = value
    return out


def _read_yaml(path: Path, what: str) -> tuple[str, dict]:
    try:
        text = path.read_text()
        content = yaml.safe_load(text)
    except OSError as err:
        raise SaltError(f"cannot read the {what} '{path}': {err}") from None
    except yaml.YAMLError as err:
        raise SaltError(f"the {what} '{path}' is not valid YAML: {err}") from None
    if not isinstance(content, dict):
        raise SaltError(f"the {what} '{path}' should be a mapping, found {type(content).__name__}.")
    return text, content


def _choose_norm_dict(run: TrainedRun, override: str | None, configured: str | None) -> Path | None:
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise SaltError(f"--norm_dict '{path}' does not exist.")
        return path
    found = run.data_path(configured)
    if found is None and (run.run_dir / "norm_dict.yaml").is_file():
        found = run.run_dir / "norm_dict.yaml"  # the copy `salt fit` put in the run folder
    return found


def _instantiate(model_config: dict, config_path: Path) -> SaltModel:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=SaltModel)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jsonargparse deprecations, nothing for the user
            namespace = parser.parse_object({"model": model_config})
            instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
            return instantiate(namespace).model
    except SaltError:
        raise
    except Exception as err:
        raise SaltError(f"cannot build the model of '{config_path}' (model.model): {err}") from None


def load_run(
    ckpt_path: str | Path, config: str | Path | None = None, norm_dict: str | None = None
) -> TrainedRun:
    """Rebuild the model of a `salt fit` run and load a checkpoint into it (eval mode).

    Parameters
    ----------
    ckpt_path
        A checkpoint written by `salt fit`.
    config
        The run's config.yaml; default ``<run>/config.yaml`` beside ``<run>/ckpts/``.
    norm_dict
        Norm dict to build with, when the configured one has moved (the values in the export
        are always the checkpoint's).
    """
    ckpt_path = Path(ckpt_path).expanduser()
    if not ckpt_path.is_file():
        raise SaltError(f"--ckpt_path '{ckpt_path}' does not exist.")
    run_dir = run_dir_of(ckpt_path)
    config_path = Path(config).expanduser() if config else run_dir / "config.yaml"
    if not config_path.is_file():
        hint = "" if config else " (looked beside the ckpts/ folder)"
        raise SaltError(
            f"config '{config_path}' does not exist{hint}. Pass --config "
            "logs/<run>/config.yaml, the config that `salt fit` wrote for this checkpoint."
        )
    text, content = _read_yaml(config_path, "config")
    model_config = content.get("model", {}).get("model")
    init_args = (model_config or {}).get("init_args", {}) if isinstance(model_config, dict) else {}
    if not init_args.get("variables"):
        raise SaltError(
            f"'{config_path}' is not a config written by `salt fit` (model.model.init_args has "
            "no variables). Export needs the run's config.yaml, which records what salt derived "
            "for training (variables, class names); pass --config logs/<run>/config.yaml."
        )
    metadata: dict = {}
    if (run_dir / "metadata.yaml").is_file():
        metadata = _read_yaml(run_dir / "metadata.yaml", "run metadata")[1]
    run = TrainedRun(
        model=None,  # type: ignore[arg-type]  # set below
        ckpt_path=ckpt_path,
        config_path=config_path,
        config_text=text,
        config=content,
        run_dir=run_dir,
        name=str(content.get("name") or "salt"),
        norm_dict=None,
        metadata=metadata,
    )
    run.norm_dict = _choose_norm_dict(run, norm_dict, init_args.get("norm_dict"))
    norm = str(run.norm_dict) if run.norm_dict else None
    # without a norm dict the model is built with mean 0, std 1: the checkpoint overwrites both
    init_args["norm_dict"] = norm
    for task in init_args.get("tasks") or []:
        if "norm_dict" in (task.get("init_args") or {}):
            task["init_args"]["norm_dict"] = norm
    model = _instantiate(model_config, config_path)

    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SaltError(f"cannot read the checkpoint '{ckpt_path}': {err}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise SaltError(f"'{ckpt_path}' is not a Lightning checkpoint (no state_dict).")
    state = model_state(checkpoint["state_dict"])
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SaltError(
            f"checkpoint '{ckpt_path}' does not fit the model of '{config_path}': missing "
            f"{result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]}. Use the "
            "config.yaml of the run that wrote this checkpoint."
        )
    run.model = model.eval()
    return run
