"""Settings `salt` derives from the config and the files before anything is built.

The user writes variables once (under `data.variables`) and tasks with their labels; from these
follow the labels the dataloader reads, the class names (from the training file's attributes),
the class weights (from the class dict) and what the model needs to normalise its inputs. All of
it lands in the config itself, so the saved config.yaml shows what was used.
"""

from __future__ import annotations

from pathlib import Path

from salt.data.dataset import JetDataset
from salt.data.h5files import open_h5, resolve_files
from salt.data.yamldicts import load_class_weights
from salt.errors import SaltError
from salt.models.saltmodel import GLOBAL_EXTRAS, PARAMETERS

CLASSIFICATION = "salt.models.tasks.ClassificationTask"
# data options that change what the dataset reads, checked against the first file before building
EARLY_CHECKED_OPTIONS = (
    "non_finite_to_num", "selections", "labeller_config", "label_maps", "multi_target",
    "parameters", "mf_config",
)  # fmt: skip
REGRESSION = ("salt.models.tasks.RegressionTask", "salt.models.tasks.GaussianRegressionTask")


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def _is(task, class_path: str) -> bool:
    return _short(task.class_path) == _short(class_path)


def reference_file(data, subcommand: str) -> Path | None:
    """The file whose attributes name the classes: training file first, else val, else test."""
    order = ("train_file", "val_file", "test_file")
    if subcommand in ("test", "predict"):
        order = ("test_file", "train_file", "val_file")
    for key in order:
        spec = data.get(key)
        if spec:
            split = key.removesuffix("_file")
            return resolve_files(spec, split)[0]
    return None


def class_names_from_file(path: Path, dataset: str, label: str) -> list[str]:
    with open_h5(path, "train") as f:
        if dataset not in f:
            raise SaltError(f"'{path}' has no dataset '{dataset}' to read class names from.")
        attrs = f[dataset].attrs
        if label not in attrs:
            raise SaltError(
                f"'{path}': dataset '{dataset}' has no '{label}' attribute naming the classes "
                f"of '{label}'. Set class_names in the task's init_args."
            )
        return [c.decode() if isinstance(c, bytes) else str(c) for c in attrs[label]]


def derive(config, subcommand: str) -> None:
    """Fill in the derived settings of a parsed `salt` config (a jsonargparse Namespace)."""
    data = config.data
    model_args = config.model.model.init_args
    variables = data.variables
    if not variables:
        raise SaltError("data.variables is empty: list the input variables per object type.")
    global_object = data.global_object
    input_map = data.input_map or {}

    # what the model needs to build its normalisation; jet-level extras (salt-ml's `global`)
    # are read from, and normalised as, the global object's dataset
    model_args.variables = {k: list(v) for k, v in variables.items()}
    model_args.norm_dict = data.norm_dict
    model_args.input_map = dict(input_map)
    for extra in (GLOBAL_EXTRAS, PARAMETERS):
        if extra in variables:
            model_args.input_map[extra] = input_map.get(global_object, global_object)
    model_args.global_object = global_object
    # edge features are computed by the model, from the raw inputs of the type they relate
    edge_constructors = data.get("edge_constructors") or []
    model_args.edge_features = {
        str(c["input_name"]): list(c["edge_features"]) for c in edge_constructors
    } or None
    if data.norm_dict is None:
        raise SaltError("data.norm_dict is not set: point it to UPP's norm_dict.yaml.")
    if model_args.get("mask_decoder") is not None:
        if not data.get("mf_config"):
            raise SaltError(
                "model.model.init_args.mask_decoder needs data.mf_config: the truth object "
                "dataset (name, id_label, class_label, object_classes) and the constituents' id "
                "label (constituent: {name: tracks, id_label: ftagTruthParentBarcode})."
            )
        # the model maps the object classes and matches constituents to objects itself
        mf_config = data.mf_config
        model_args.mf_config = mf_config.as_dict() if hasattr(mf_config, "as_dict") else mf_config
        _object_sizes(model_args)

    labels: dict[str, list[str]] = {}
    label_classes: dict[str, dict[str, int]] = {}
    label_maps: dict[str, dict[str, dict[int, int]]] = {}
    labeller = data.get("labeller_config") or {}
    relabelled = bool(labeller.get("use_labeller")) if isinstance(labeller, dict) else False
    ref = None
    for task in model_args.tasks or []:
        args = task.init_args
        name = args.get("name")
        input_name = args.get("input_name")
        if input_name is None:
            raise SaltError(f"task '{name}' has no input_name.")
        targets = args.get("targets") or []
        targets = [targets] if isinstance(targets, str) else list(targets)
        denominators = args.get("target_denominators") or []
        denominators = [denominators] if isinstance(denominators, str) else list(denominators)
        fields = [*targets, *denominators] or [args.get("label")]
        if _is(task, "VertexingTask") and args.get("label") is None:
            fields = ["ftagTruthVertexIndex"]
        for field in fields:
            if field and field not in labels.setdefault(input_name, []):
                labels[input_name].append(field)
        if any(_is(task, r) for r in REGRESSION) and args.get("norm_dict") is None:
            args.norm_dict = data.norm_dict
        if not _is(task, CLASSIFICATION):
            continue
        label = args.get("label")
        if relabelled and input_name == global_object and label == "flavour_label":
            # the labeller defines the classes (salt.data.labeller)
            args.class_names = list(labeller.get("class_names") or [])
        if args.get("label_map"):
            mapping = {int(k): int(v) for k, v in dict(args.label_map).items()}
            known = label_maps.setdefault(input_name, {}).setdefault(label, mapping)
            if known != mapping:
                raise SaltError(
                    f"task '{name}': {input_name}.{label} has another label_map in a second "
                    "task; two tasks on one label must map it the same way."
                )
        if args.get("class_names") is None and label != "ftagTruthOriginLabel":
            ref = ref or reference_file(data, subcommand)
            if ref is None:
                raise SaltError(f"task '{name}': no data file to read class names from.")
            args.class_names = class_names_from_file(
                ref, input_map.get(input_name, input_name), label
            )
        n_classes = len(args.class_names) if args.get("class_names") else 8
        label_classes.setdefault(input_name, {})[label] = n_classes
        if args.get("use_class_dict"):
            # fills (and on a saved config, refreshes) class_weights from the class dict
            if not data.class_dict:
                raise SaltError(
                    f"task '{name}' has use_class_dict: true but data.class_dict is not set."
                )
            args.class_weights = load_class_weights(
                data.class_dict, input_name, label, n_classes, input_map
            )
    data.labels = labels
    data.label_classes = label_classes
    data.label_maps = label_maps


def _object_sizes(model_args) -> None:
    """The mask decoder's sizes that follow from the rest: ``loss_config.num_classes`` from the
    object classes (the null class is not counted), an object task's input size from the
    decoder's ``embed_dim``."""
    decoder = model_args.mask_decoder.init_args
    loss = decoder.get("loss_config")
    classes = (model_args.mf_config.get("object") or {}).get("object_classes") or {}
    if isinstance(loss, dict) and "num_classes" not in loss and len(classes) > 1:
        loss["num_classes"] = len(classes) - 1
    for task in model_args.tasks or []:
        args = task.init_args
        dense = args.get("dense_config")
        if args.get("input_name") == "objects" and isinstance(dense, dict):
            dense.setdefault("input_size", decoder.get("embed_dim"))


def check_inputs(config, subcommand: str) -> None:
    """Open the first file of each split in use and check its datasets and variables (fast)."""
    data = config.data
    splits = {"fit": ("train", "val"), "validate": ("val",)}.get(subcommand, ("test",))
    for split in splits:
        spec = data.get(f"{split}_file")
        if not spec:
            raise SaltError(f"data.{split}_file is not set: pass --data.{split}_file PATH.")
        path = resolve_files(spec, split)[0]
        JetDataset(
            path,
            variables=data.variables,
            labels=data.labels,
            batch_size=data.batch_size,
            input_map=data.input_map,
            global_object=data.global_object,
            num_constituents=data.num_inputs,
            split=split,
            # transforms are checked when the datamodule builds them
            **{key: data.get(key) for key in EARLY_CHECKED_OPTIONS},
        )
