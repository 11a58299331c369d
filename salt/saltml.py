"""Configs written for upstream salt-ml, translated into salt's own schema at this one border.

salt-ml users keep their configs: `salt fit --config GN2.yaml` recognises the salt-ml schema,
translates the file, says so in one line and trains; the run folder's config.yaml holds the
translation, so a resume or `salt test` reads salt's schema. `salt migrate-config GN2.yaml`
prints the translation for a user who switches for good.

What differs between the schemas (salt-ml on the left):

* ``init_nets[].dense_config: {output_size, hidden_layers, activation}`` -> the same keys flat
  on the init net (the input size follows from the variables in both).
* ``encoder`` `salt.models.Transformer`: ``attn_kwargs: {num_heads, dropout}``,
  ``dense_kwargs: {activation, gated, dropout}``, ``attn_type``, ``do_final_norm`` ->
  ``num_heads``, ``attn_dropout``, ``activation``, ``gated``, ``dropout``, ``attn_backend``,
  ``final_norm``. salt-ml's defaults are written out (ReLU heads, one register).
* ``tasks: {class_path: torch.nn.ModuleList, init_args: {modules: [...]}}`` -> a plain list;
  per task ``weight`` -> ``loss_weight``; ``loss`` as a torch class -> salt's loss name;
  regression ``norm_params: {mean, std}`` -> ``scales``; ``scaler`` (RegressionTargetScaler)
  -> ``scaler``; the vertexing head's ``input_size`` (a pair: twice the track features) -> the
  track features.
* ``edge_init_nets[].dense_config`` -> flat keys, as for init nets (the input size is the
  number of edge features); ``featurewise_nets[]`` keep their keys, with salt-ml's dense
  defaults written out (ReLU, one hidden layer twice the number of parameters).
  ``data.edge_constructors``, ``data.parameters`` and ``data.variables.parameters`` keep their
  form.
* ``mask_decoder`` (`salt.models.maskformer.MaskDecoder`) keeps its keys; its ``class_net``
  and ``mask_net`` Dense layers get salt-ml's Dense defaults written out (ReLU, one hidden layer
  twice the input size), and ``data.mf_config`` keeps its form.
* no ``model.lrs_config`` -> salt-ml's default one-cycle schedule (``SALTML_LRS_DEFAULT``,
  from salt-ml's base config), said in the one-line note.
* trainer callbacks of salt-ml -> salt's (TQDMProgressBar -> salt's ProgressBar, ...); salt's
  checkpoint, progress and interruption callbacks are always kept.

A salt-ml key with no equivalent here stops the run before anything is built, naming the key,
the file and what to do; nothing is dropped silently (keys without effect here are listed in
the one-line note).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from salt.errors import SaltError, close_matches

CALLBACKS = {
    "salt.callbacks.Checkpoint": "salt.callbacks.Checkpoint",
    "salt.callbacks.PredictionWriter": "salt.callbacks.PredictionWriter",
    "salt.callbacks.MaskformerMetrics": "salt.callbacks.MaskformerMetrics",
    "lightning.pytorch.callbacks.TQDMProgressBar": "salt.callbacks.ProgressBar",
    **{
        f"lightning.pytorch.callbacks.{name}": f"lightning.pytorch.callbacks.{name}"
        for name in ("LearningRateMonitor", "ModelSummary", "EarlyStopping")
    },
}
# salt's own run-life callbacks, kept whatever list a salt-ml config gives
ESSENTIAL_CALLBACKS = (
    "salt.callbacks.Checkpoint",
    "salt.callbacks.ProgressBar",
    "salt.callbacks.Interruption",
)
ATTN_TYPES = {
    "torch-math": "math",
    "torch-flash": "sdpa",
    "torch-meff": "sdpa",
    "flash-varlen": "auto",
}
REGRESSION_LOSSES = {
    "MSELoss": "mse",
    "L1Loss": "l1",
    "HuberLoss": "huber",
    "SmoothL1Loss": "huber",
}
# salt-ml's learning-rate schedule when a config gives none (its base.yaml; GN2XE relies on it)
SALTML_LRS_DEFAULT = {
    "initial": 1e-7,
    "max": 5e-4,
    "end": 1e-7,
    "pct_start": 0.1,
    "weight_decay": 1e-5,
}
TASKS = ("ClassificationTask", "RegressionTask", "GaussianRegressionTask", "VertexingTask")
DATA_KEYS = (
    "train_file",
    "val_file",
    "test_file",
    "norm_dict",
    "class_dict",
    "variables",
    "input_map",
    "global_object",
    "batch_size",
    "num_workers",
    "num_train",
    "num_val",
    "num_test",
    "num_inputs",
    "move_files_temp",
    "pin_memory",
    "persistent_workers",
    "prefetch_factor",
    "test_suff",
    "non_finite_to_num",
    "selections",
    "transforms",
    "labeller_config",
    "multi_target",
    "parameters",
    "mf_config",
    "edge_constructors",
)
# salt-ml data keys that only steer how salt-ml stores things; nothing to do here
DATA_NO_EFFECT = {
    "train_vds_path": "salt combines several files into a temporary virtual dataset itself",
    "val_vds_path": "salt combines several files into a temporary virtual dataset itself",
    "test_vds_path": "salt combines several files into a temporary virtual dataset itself",
    "multiprocessing_context": "salt's workers are forked and die with the main process",
}
UNSUPPORTED = {
    "config_s3": "salt reads local (or mounted) files: download them first and give the paths",
    "mup_config": "muTransfer is not available in salt; remove mup_config (and mup: true)",
    "merge_dict": "salt always encodes all constituent types together; remove merge_dict",
    "sample_weight": "per-jet loss weights are not available in salt yet; remove sample_weight",
}


def load_yaml(path: Path) -> dict:
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SaltError(f"'{path}' is not valid YAML: {err}") from None
    return content if isinstance(content, dict) else {}


def is_saltml(config: dict) -> bool:
    """Whether a parsed config file is written in salt-ml's schema (it never matches salt's)."""
    model = _get(config, "model", "model", "init_args") or {}
    if any(isinstance(n, dict) and "dense_config" in n for n in model.get("init_nets") or []):
        return True
    tasks = model.get("tasks")
    if isinstance(tasks, dict) and str(tasks.get("class_path", "")).endswith("ModuleList"):
        return True
    encoder = _get(model, "encoder", "init_args") or {}
    if {"attn_kwargs", "dense_kwargs", "attn_type", "do_final_norm"} & set(encoder):
        return True
    data = config.get("data") or {}
    return bool({*DATA_NO_EFFECT, "config_s3"} & set(data))


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def _number(value, key: str, translator: Translator) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        translator.fail(key, f"expected a number, found {value!r}.")
        raise


def _short(class_path: str) -> str:
    return str(class_path).rsplit(".", 1)[-1]


class Translator:
    """Translates one salt-ml config (a parsed YAML file) into salt's schema.

    Parameters
    ----------
    source
        The file, for messages.
    """

    def __init__(self, source: Path | str):
        self.source = Path(source)
        self.notes: list[str] = []

    def fail(self, key: str, message: str) -> None:
        raise SaltError(f"salt-ml config '{self.source}': {key}: {message}")

    def check_keys(self, tree: dict, known: tuple, key: str) -> None:
        for name in tree:
            if name in UNSUPPORTED:
                self.fail(f"{key}.{name}", f"no equivalent in salt: {UNSUPPORTED[name]}.")
            if name not in known:
                self.fail(
                    f"{key}.{name}",
                    f"not a salt-ml option salt knows.{close_matches(name, known)} Remove it, or "
                    "fix the name.",
                )

    # ----------------------------------------------------------------------------- top level
    def translate(self, config: dict) -> dict:
        out = copy.deepcopy(config)
        if "model" in out:
            out["model"] = self.model(out["model"], out.get("data") or {})
        if "data" in out:
            out["data"] = self.data(out["data"])
        if "trainer" in out:
            out["trainer"] = self.trainer(out["trainer"])
        return out

    def model(self, model: dict, data: dict) -> dict:
        self.check_keys(model, ("lrs_config", "model", "optimizer", "loss_mode", "name"), "model")
        lrs = model.get("lrs_config")
        if lrs is None:
            model["lrs_config"] = dict(SALTML_LRS_DEFAULT)
            self.notes.append(f"model.lrs_config not given: salt-ml's default {SALTML_LRS_DEFAULT}")
        elif isinstance(lrs, dict):
            if lrs.get("last_epoch", -1) not in (-1, None):
                self.fail("model.lrs_config.last_epoch", "resume with --ckpt_path instead.")
            lrs.pop("last_epoch", None)
            # YAML reads 1e-5 (no dot) as a string; salt-ml's parser made it a number
            model["lrs_config"] = {
                k: _number(v, f"model.lrs_config.{k}", self) for k, v in lrs.items()
            }
        net = model.get("model")
        if isinstance(net, dict):
            if _short(net.get("class_path", "SaltModel")) != "SaltModel":
                self.fail("model.model.class_path", "salt builds salt.models.SaltModel only.")
            args = net.setdefault("init_args", {})
            self.saltmodel(args, data)
        return model

    # ----------------------------------------------------------------------------- SaltModel
    def saltmodel(self, args: dict, data: dict) -> None:
        key = "model.model.init_args"
        self.check_keys(
            args,
            (
                "init_nets",
                "encoder",
                "pool_net",
                "tasks",
                "edge_init_nets",
                "featurewise_nets",
                "mask_decoder",
            ),
            key,
        )
        variables = data.get("variables") or {}
        global_object = data.get("global_object", "jets")
        args["init_nets"] = [
            self.init_net(n, f"{key}.init_nets[{i}]", variables, global_object)
            for i, n in enumerate(args.get("init_nets") or [])
        ]
        if args.get("edge_init_nets"):
            features = {
                c.get("input_name"): list(c.get("edge_features") or [])
                for c in data.get("edge_constructors") or []
                if isinstance(c, dict)
            }
            args["edge_init_nets"] = [
                self.edge_init_net(n, f"{key}.edge_init_nets[{i}]", features)
                for i, n in enumerate(args["edge_init_nets"])
            ]
        if args.get("featurewise_nets"):
            n_parameters = len(variables.get("parameters") or [])
            args["featurewise_nets"] = [
                self.featurewise_net(n, f"{key}.featurewise_nets[{i}]", n_parameters)
                for i, n in enumerate(args["featurewise_nets"])
            ]
        if args.get("encoder") is not None:
            args["encoder"] = self.encoder(args["encoder"], f"{key}.encoder")
        if args.get("mask_decoder") is not None:
            args["mask_decoder"] = self.mask_decoder(args["mask_decoder"], f"{key}.mask_decoder")
        if args.get("pool_net") is not None:
            pool = args["pool_net"]
            if _short(pool.get("class_path", "")) != "GlobalAttentionPooling":
                self.fail(f"{key}.pool_net", "salt has GlobalAttentionPooling (and Mean/Sum).")
            pool["class_path"] = "salt.models.GlobalAttentionPooling"
        tasks = args.get("tasks")
        if isinstance(tasks, dict):
            tasks = _get(tasks, "init_args", "modules") or []
        args["tasks"] = [self.task(t, f"{key}.tasks[{i}]") for i, t in enumerate(tasks or [])]

    def dense(self, dense: dict, key: str, allowed: tuple) -> dict:
        self.check_keys(
            dense,
            (
                "input_size",
                "output_size",
                "hidden_layers",
                "activation",
                "dropout",
                "context_size",
                "hidden_dim_scale",
                "final_activation",
                "bias",
                "mup",
            ),
            key,
        )
        for name in ("final_activation", "hidden_dim_scale", "bias", "mup"):
            if name in dense and name not in allowed:
                default = {
                    "final_activation": None,
                    "hidden_dim_scale": 2,
                    "bias": True,
                    "mup": False,
                }[name]
                if dense[name] != default:
                    self.fail(f"{key}.{name}", "no equivalent in salt's dense layers; remove it.")
                dense.pop(name)
        dense.setdefault("activation", "ReLU")  # salt-ml's Dense default
        return dense

    def init_net(self, net: dict, key: str, variables: dict, global_object: str) -> dict:
        self.check_keys(net, ("input_name", "dense_config", "attach_global"), key)
        dense = self.dense(dict(net.get("dense_config") or {}), f"{key}.dense_config", ())
        for name in ("context_size",):
            if dense.get(name):
                self.fail(f"{key}.dense_config.{name}", "an init net has no context.")
        out = {"input_name": net.get("input_name")}
        dense.pop("input_size", None)  # derived from the variables, as in salt-ml
        if "hidden_layers" not in dense:
            n_in = len(variables.get(out["input_name"]) or [])
            if net.get("attach_global", True) and out["input_name"] != global_object:
                n_in += len(variables.get(global_object) or [])
            dense["hidden_layers"] = [2 * n_in]
        out.update(dense)
        if "attach_global" in net:
            out["attach_global"] = net["attach_global"]
        return out

    def edge_init_net(self, net: dict, key: str, features: dict[str, list[str]]) -> dict:
        self.check_keys(net, ("input_name", "dense_config"), key)
        # salt-ml names the edge input `_edge_features_<type>` inside; configs may use either
        name = str(net.get("input_name", "")).removeprefix("_edge_features_")
        if name not in features:
            self.fail(
                f"{key}.input_name",
                f"'{name}' has no edge features: add data.edge_constructors: [{{input_name: "
                f"{name}, edge_features: [...]}}].",
            )
        dense = self.dense(dict(net.get("dense_config") or {}), f"{key}.dense_config", ())
        if dense.get("context_size"):
            self.fail(f"{key}.dense_config.context_size", "an edge init net has no context.")
        dense.pop("input_size", None)  # the number of edge features, in both
        dense.setdefault("hidden_layers", [2 * len(features[name])])
        return {"input_name": name, **dense}

    def featurewise_net(self, net: dict, key: str, n_parameters: int) -> dict:
        self.check_keys(
            net,
            ("layer", "dense_config_scale", "dense_config_bias", "apply_norm", "variables"),
            key,
        )
        out = {"layer": net.get("layer")}
        for name in ("dense_config_scale", "dense_config_bias"):
            if net.get(name):
                dense = self.dense(dict(net[name]), f"{key}.{name}", ("final_activation",))
                if dense.get("context_size"):
                    self.fail(f"{key}.{name}.context_size", "a featurewise net has no context.")
                dense.pop("input_size", None)  # the number of parameters, in both
                dense.setdefault("hidden_layers", [2 * n_parameters])
                out[name] = dense
        if "apply_norm" in net:
            out["apply_norm"] = net["apply_norm"]
        return out

    def encoder(self, encoder: dict, key: str) -> dict:
        kind = _short(encoder.get("class_path", "Transformer"))
        if kind not in ("Transformer", "TransformerV2"):
            self.fail(f"{key}.class_path", f"'{kind}' has no equivalent; salt has Transformer.")
        args = dict(encoder.get("init_args") or {})
        self.check_keys(
            args,
            (
                "num_layers",
                "embed_dim",
                "out_dim",
                "norm",
                "norm_type",
                "attn_type",
                "do_final_norm",
                "num_registers",
                "drop_registers",
                "dense_kwargs",
                "attn_kwargs",
                "edge_embed_dim",
                "update_edges",
                "ls_init",
                "drop_path",
            ),
            f"{key}.init_args",
        )
        for name, default in (("ls_init", None), ("drop_path", 0.0)):
            if args.get(name, default) != default:
                self.fail(f"{key}.init_args.{name}", "no equivalent in salt; remove it.")
        out = {
            "embed_dim": args.get("embed_dim"),
            "num_layers": args.get("num_layers"),
            "norm": args.get("norm", "LayerNorm"),
            "norm_type": args.get("norm_type", "pre"),
            "final_norm": args.get("do_final_norm", True),
            "num_registers": args.get("num_registers", 1),  # salt-ml's default
            "drop_registers": args.get("drop_registers", False),
        }
        if args.get("out_dim") is not None:
            out["out_dim"] = args["out_dim"]
        attn_type = args.get("attn_type", "torch-math")
        if attn_type not in ATTN_TYPES:
            self.fail(
                f"{key}.init_args.attn_type", f"'{attn_type}' is not one of {list(ATTN_TYPES)}."
            )
        out["attn_backend"] = ATTN_TYPES[attn_type]
        attn = dict(args.get("attn_kwargs") or {})
        self.check_keys(
            attn, ("num_heads", "dropout", "bias", "attn_type"), f"{key}.init_args.attn_kwargs"
        )
        out["num_heads"] = attn.get("num_heads", 1)
        out["attn_dropout"] = attn.get("dropout", 0.0)
        dense = dict(args.get("dense_kwargs") or {})
        self.check_keys(
            dense,
            ("activation", "gated", "dropout", "hidden_dim", "bias"),
            f"{key}.init_args.dense_kwargs",
        )
        out["activation"] = dense.get("activation", "SiLU")  # salt-ml's GLU default
        out["gated"] = dense.get("gated", False)
        out["dropout"] = dense.get("dropout", 0.0)
        if dense.get("hidden_dim"):
            out["ff_dim"] = dense["hidden_dim"]
        for name in ("bias",):
            if attn.get(name, True) is not True or dense.get(name, True) is not True:
                self.fail(f"{key}.init_args", f"{name}: false has no equivalent; remove it.")
        for name in ("edge_embed_dim", "update_edges"):
            if args.get(name):
                out[name] = args[name]
        return {"class_path": "salt.models.Transformer", "init_args": out}

    def mask_decoder(self, decoder: dict, key: str) -> dict:
        kind = _short(decoder.get("class_path", "MaskDecoder"))
        if kind != "MaskDecoder":
            self.fail(f"{key}.class_path", f"'{kind}' has no equivalent; salt has MaskDecoder.")
        args = dict(decoder.get("init_args") or {})
        key = f"{key}.init_args"
        self.check_keys(
            args,
            (
                "num_objects",
                "embed_dim",
                "num_layers",
                "md_config",
                "class_net",
                "mask_net",
                "loss_config",
                "aux_loss",
            ),
            key,
        )
        md_config = dict(args.get("md_config") or {})
        self.check_keys(
            md_config, ("mask_attention", "bidirectional_ca", "n_heads"), f"{key}.md_config"
        )
        out = {k: args[k] for k in ("num_objects", "embed_dim", "num_layers") if k in args}
        out["md_config"] = md_config
        for name in ("class_net", "mask_net"):
            net = args.get(name)
            if not isinstance(net, dict) or _short(net.get("class_path", "")) != "Dense":
                self.fail(f"{key}.{name}", "expected a salt.models.Dense.")
            dense = self.dense(dict(net.get("init_args") or {}), f"{key}.{name}.init_args", ())
            if dense.get("context_size"):
                self.fail(f"{key}.{name}.init_args.context_size", "a decoder head has no context.")
            if "hidden_layers" not in dense and dense.get("input_size"):
                dense["hidden_layers"] = [2 * int(dense["input_size"])]  # salt-ml's default
            out[name] = {"class_path": "salt.models.Dense", "init_args": dense}
        loss = dict(args.get("loss_config") or {})
        self.check_keys(loss, ("num_classes", "loss_weights"), f"{key}.loss_config")
        weights = dict(loss.get("loss_weights") or {})
        loss["loss_weights"] = {
            k: _number(v, f"{key}.loss_config.loss_weights.{k}", self) for k, v in weights.items()
        }
        out["loss_config"] = loss
        if "aux_loss" in args:
            out["aux_loss"] = args["aux_loss"]
        return {"class_path": "salt.models.MaskDecoder", "init_args": out}

    # ----------------------------------------------------------------------------- tasks
    def task(self, task: dict, key: str) -> dict:
        kind = _short(task.get("class_path", ""))
        if kind not in TASKS:
            self.fail(f"{key}.class_path", f"'{task.get('class_path')}' is not one of {TASKS}.")
        args = dict(task.get("init_args") or {})
        common = ("name", "input_name", "weight", "loss", "dense_config")
        extra = {
            "ClassificationTask": ("label", "class_names", "label_map", "use_class_dict"),
            "VertexingTask": ("label",),
            "RegressionTask": (
                "targets",
                "target_denominators",
                "norm_params",
                "scaler",
                "custom_output_names",
            ),
            "GaussianRegressionTask": (
                "targets",
                "target_denominators",
                "norm_params",
                "custom_output_names",
            ),
        }[kind]
        self.check_keys(args, (*common, *extra, "sample_weight"), f"{key}.init_args")
        out = {k: args[k] for k in ("name", "input_name") if k in args}
        if "weight" in args:
            out["loss_weight"] = args["weight"]
        dense = self.dense(
            dict(args.get("dense_config") or {}), f"{key}.init_args.dense_config", ()
        )
        loss_name, loss_args = self.loss(args.get("loss"), f"{key}.init_args.loss")
        if kind == "ClassificationTask":
            for name in ("label", "class_names", "label_map", "use_class_dict"):
                if name in args:
                    out[name] = args[name]
            if loss_name not in (None, "CrossEntropyLoss"):
                self.fail(f"{key}.init_args.loss", "a classification task takes CrossEntropyLoss.")
            self.loss_args(
                loss_args,
                {
                    "label_smoothing": "label_smoothing",
                    "weight": "class_weights",
                    "ignore_index": None,
                    "reduction": None,
                },
                out,
                key,
            )
        elif kind == "VertexingTask":
            out["label"] = args.get("label", "ftagTruthVertexIndex")
            if loss_name not in (None, "BCEWithLogitsLoss"):
                self.fail(f"{key}.init_args.loss", "a vertexing task takes BCEWithLogitsLoss.")
            self.loss_args(loss_args, {"reduction": None}, out, key)
            if dense.get("input_size"):
                if dense["input_size"] % 2:
                    self.fail(
                        f"{key}.init_args.dense_config.input_size",
                        "salt-ml's vertexing input is a pair of tracks: an even number.",
                    )
                dense["input_size"] //= 2
            if dense.get("output_size", 1) != 1:
                self.fail(f"{key}.init_args.dense_config.output_size", "must be 1 (one logit).")
            dense.pop("output_size", None)
        else:
            self.regression(kind, args, out, dense, loss_name, loss_args, key)
        out["dense_config"] = dense
        return {"class_path": f"salt.models.{kind}", "init_args": out}

    def regression(self, kind, args, out, dense, loss_name, loss_args, key) -> None:
        targets = args.get("targets")
        targets = [targets] if isinstance(targets, str) else list(targets or [])
        out["targets"] = targets
        per_output = 2 if kind == "GaussianRegressionTask" else 1
        if dense.get("output_size", len(targets) * per_output) != len(targets) * per_output:
            self.fail(
                f"{key}.init_args.dense_config.output_size",
                f"{len(targets)} targets need {len(targets) * per_output} outputs.",
            )
        dense.pop("output_size", None)
        for name in ("target_denominators", "custom_output_names"):
            if args.get(name) is not None:
                value = args[name]
                out[name] = [value] if isinstance(value, str) else list(value)
        norm = args.get("norm_params")
        if norm is not None:
            means, stds = norm.get("mean"), norm.get("std")
            means = means if isinstance(means, list) else [means] * len(targets)
            stds = stds if isinstance(stds, list) else [stds] * len(targets)
            out["scales"] = {t: [float(m), float(s)] for t, m, s in zip(targets, means, stds)}
        else:  # salt-ml regresses the (scaled) target as it is
            out["scales"] = {t: [0.0, 1.0] for t in targets}
        scaler = args.get("scaler")
        if scaler is not None:
            if _short(scaler.get("class_path", "")) != "RegressionTargetScaler":
                self.fail(f"{key}.init_args.scaler", "salt takes RegressionTargetScaler scales.")
            out["scaler"] = dict(_get(scaler, "init_args", "scales") or {})
        if kind == "GaussianRegressionTask":
            if loss_name not in (None, "GaussianNLLLoss"):
                self.fail(f"{key}.init_args.loss", "a Gaussian regression takes GaussianNLLLoss.")
            self.loss_args(loss_args, {"reduction": None}, out, key)
            return
        if loss_name is not None:
            if loss_name not in REGRESSION_LOSSES:
                self.fail(
                    f"{key}.init_args.loss",
                    f"'{loss_name}' is not one of {list(REGRESSION_LOSSES)}.",
                )
            out["loss"] = REGRESSION_LOSSES[loss_name]
        for name, default in (("delta", 1.0), ("beta", 1.0)):
            if loss_args.pop(name, default) != default:
                self.fail(f"{key}.init_args.loss.init_args.{name}", "salt's huber loss has 1.0.")
        self.loss_args(loss_args, {"reduction": None}, out, key)

    def loss(self, loss, key: str) -> tuple[str | None, dict]:
        if loss is None:
            return None, {}
        if isinstance(loss, str):
            return _short(loss), {}
        if isinstance(loss, dict) and "class_path" in loss:
            return _short(loss["class_path"]), dict(loss.get("init_args") or {})
        self.fail(key, f"expected a torch loss class path, found {loss!r}.")
        return None, {}

    def loss_args(self, loss_args: dict, known: dict, out: dict, key: str) -> None:
        for name, value in loss_args.items():
            if name not in known:
                self.fail(f"{key}.init_args.loss.init_args.{name}", "no equivalent in salt.")
            if known[name] is not None:
                out[known[name]] = value

    # ----------------------------------------------------------------------------- data
    def data(self, data: dict) -> dict:
        self.check_keys(data, (*DATA_KEYS, *DATA_NO_EFFECT), "data")
        for name, why in DATA_NO_EFFECT.items():
            if name in data:
                data.pop(name)
                self.notes.append(f"data.{name} has no effect ({why})")
        input_map = data.get("input_map")
        if isinstance(input_map, dict) and input_map.get("global") in ("global", None):
            # salt-ml reads `global` from the global object whatever the map says
            input_map.pop("global", None)
        return data

    # ----------------------------------------------------------------------------- trainer
    def trainer(self, trainer: dict) -> dict:
        callbacks = trainer.get("callbacks")
        if callbacks is None:
            return trainer
        out = []
        for i, callback in enumerate(callbacks):
            path = callback.get("class_path", "") if isinstance(callback, dict) else str(callback)
            target = CALLBACKS.get(path) or CALLBACKS.get(f"salt.callbacks.{_short(path)}")
            if target is None:
                self.fail(
                    f"trainer.callbacks[{i}]", f"'{path}' has no equivalent in salt; remove it."
                )
            args = dict(callback.get("init_args") or {}) if isinstance(callback, dict) else {}
            if target == "salt.callbacks.Checkpoint" and "monitor_loss" in args:
                args["monitor"] = args.pop("monitor_loss")
            out.append(
                {"class_path": target, "init_args": args} if args else {"class_path": target}
            )
        present = {c["class_path"] for c in out}
        out += [{"class_path": c} for c in ESSENTIAL_CALLBACKS if c not in present]
        trainer["callbacks"] = out
        return trainer


def translate(config: dict, source: Path | str = "<config>") -> tuple[dict, list[str]]:
    """A salt-ml config in salt's schema, and notes on keys that have no effect here."""
    translator = Translator(source)
    return translator.translate(config), translator.notes


def translate_config_args(argv: list[str], workdir: Path) -> list[str]:
    """The command line with every salt-ml `--config` file replaced by its translation.

    Translations are written into `workdir` (the caller removes it) and announced in one line each.
    """
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            j, prefix = i + 1, ""
        elif arg.startswith("--config="):
            j, prefix = i, "--config="
        else:
            continue
        path = Path(out[j].removeprefix(prefix))
        if not path.is_file() or path.suffix not in (".yaml", ".yml"):
            continue
        config = load_yaml(path)
        if not is_saltml(config):
            continue
        translated, notes = translate(config, path)
        target = workdir / f"{len(list(workdir.iterdir()))}_{path.name}"
        target.write_text(dump(translated, path))
        note = f"; {'; '.join(notes)}" if notes else ""
        print(
            f"salt: {path} is a salt-ml config, translated into salt's schema "
            f"(`salt migrate-config {path}` prints it){note}"
        )
        out[j] = prefix + str(target)
    return out


class _Dumper(yaml.SafeDumper):
    """Writes every value out: the anchors of the source file would turn into &id001 aliases."""

    def ignore_aliases(self, data) -> bool:
        return True


def dump(config: dict, source: Path | str) -> str:
    header = f"# {source}, translated from the salt-ml schema by `salt migrate-config`\n"
    return header + yaml.dump(
        config, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100
    )


def migrate_main(argv: list[str]) -> None:
    """`salt migrate-config IN.yaml [-o OUT.yaml]`: print (or write) the translation."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="salt migrate-config",
        description="Translate a salt-ml config into salt's schema and print it.",
        epilog="example:\n  salt migrate-config GN2.yaml -o configs/my_GN2.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", type=Path, help="a config written for salt-ml")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of printing")
    args = parser.parse_args(argv)
    if not args.config.is_file():
        parser.error(f"'{args.config}' is not a file")
    config = load_yaml(args.config)
    if not is_saltml(config):
        print(f"salt: {args.config} is already in salt's schema; nothing to translate.")
        return
    translated, notes = translate(config, args.config)
    text = dump(translated, args.config)
    for note in notes:
        text += f"# note: {note}\n"
    if args.output:
        args.output.write_text(text)
        print(f"salt: wrote {args.output}")
    else:
        print(text, end="")
