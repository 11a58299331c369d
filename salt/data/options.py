"""What the loader does to a batch after reading it, as configured under `data:`.

`ReadOptions.parse` turns the config's options (`non_finite_to_num`, `selections`, `transforms`,
`labeller_config`, `label_maps`, `multi_target`, `parameters`, `mf_config`) into checked objects,
and refuses
everything that can be refused without opening a file: the datamodule calls it when it is built,
so a wrong option fails before any file is read. `JetDataset` checks the rest against the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from salt.data.labeller import LABEL, FlavourLabeller, LabellerConfig, as_labeller_config
from salt.data.labelmaps import LabelMap, parse_label_maps
from salt.data.objects import OBJECTS, ObjectConfig
from salt.data.parameters import Parameter, parse_parameters
from salt.data.selections import Selection, parse_selections
from salt.data.targets import MultiTarget, parse_multi_target
from salt.data.transforms import Transform
from salt.errors import SaltError

# jet-level inputs besides the jet-level object's own, read from its dataset (as in salt-ml,
# whatever data.input_map says for them)
EXTRA_INPUTS = ("global", "parameters")

# streams of a batch's random numbers: the parameter draws, then one per transform
_PARAMETER_STREAM, _TRANSFORM_STREAM = 0, 1


@dataclass
class ReadOptions:
    """The parsed options; empty ones change nothing and cost nothing."""

    non_finite_to_num: bool = False
    selections: dict[str, Selection] = field(default_factory=dict)
    transforms: list[Transform] = field(default_factory=list)
    labeller: FlavourLabeller | None = None
    label_maps: dict[str, dict[str, LabelMap]] = field(default_factory=dict)
    multi_target: list[MultiTarget] = field(default_factory=list)
    parameters: list[Parameter] = field(default_factory=list)
    objects: ObjectConfig | None = None
    seed: int = 0

    @classmethod
    def parse(
        cls,
        variables: dict[str, list[str]],
        labels: dict[str, list[str]],
        global_object: str,
        label_classes: dict[str, dict[str, int]] | None = None,
        *,
        non_finite_to_num: bool = False,
        selections: dict[str, list[str] | None] | None = None,
        transforms: Sequence[Transform] | None = None,
        labeller_config: LabellerConfig | dict | None = None,
        label_maps: dict | None = None,
        multi_target: list | None = None,
        parameters: dict | None = None,
        mf_config=None,
        seed: int = 0,
    ) -> ReadOptions:
        """Check the options against the variables and labels of the config (no files)."""
        objects = list(dict.fromkeys([global_object, *variables, *labels]))
        objects = [n for n in objects if n == global_object or n not in EXTRA_INPUTS]
        opts = cls(non_finite_to_num=bool(non_finite_to_num), seed=int(seed) % 2**63)

        opts.selections = parse_selections(selections)
        for name in opts.selections:
            if name == OBJECTS:
                raise SaltError(
                    f"data.selections.{OBJECTS}: the truth objects are not selected (they stay "
                    "in their slots); remove the entry."
                )
            if name == global_object or name not in objects:
                raise SaltError(
                    f"data.selections.{name}: selections apply to constituent types that are read "
                    f"({', '.join(n for n in objects if n != global_object) or 'none'}); jets "
                    "cannot be dropped from a batch. Select jets when preprocessing."
                )

        for transform in transforms or []:
            if not isinstance(transform, Transform):
                raise SaltError(
                    f"data.transforms: {transform!r} is not a salt.data.transforms.Transform; "
                    "name one by its class_path (e.g. salt.data.transforms.GaussianNoise)."
                )
            transform.bind(variables)
            opts.transforms.append(transform)

        config = as_labeller_config(labeller_config)
        if config is not None and config.use_labeller:
            opts.labeller = FlavourLabeller(config)
            wanted = labels.get(global_object, [])
            if labels and LABEL not in wanted:
                raise SaltError(
                    f"data.labeller_config.use_labeller is true, but no task uses "
                    f"{global_object}.{LABEL}. The labeller computes that label only (it works "
                    "for jets, not constituents): classify jets by it, or turn it off."
                )
            n_classes = (label_classes or {}).get(global_object, {}).get(LABEL)
            if n_classes is not None and n_classes != len(opts.labeller.class_names):
                raise SaltError(
                    f"data.labeller_config.class_names has {len(opts.labeller.class_names)} "
                    f"classes but the task classifying by {LABEL} has {n_classes}; give the task "
                    "the same class_names."
                )

        opts.label_maps = parse_label_maps(label_maps)
        for name, fields in opts.label_maps.items():
            for label in fields:
                if labels and label not in labels.get(name, []):
                    raise SaltError(
                        f"data.label_maps.{name}.{label}: no task reads label '{label}' of "
                        f"'{name}' (labels read: {labels.get(name, [])}). Fix the task's label."
                    )

        opts.multi_target = parse_multi_target(multi_target)
        for i, rule in enumerate(opts.multi_target):
            if rule.input_name not in objects:
                raise SaltError(
                    f"data.multi_target[{i}]: input_name '{rule.input_name}' is not an object "
                    f"that is read ({', '.join(objects)})."
                )
            if labels and rule.label not in labels.get(rule.input_name, []):
                raise SaltError(
                    f"data.multi_target[{i}] writes {rule.input_name}.{rule.label}, but no task "
                    f"uses that label (labels of {rule.input_name}: "
                    f"{labels.get(rule.input_name, [])}). Name it in a task's targets."
                )

        opts.parameters = parse_parameters(parameters, variables.get("parameters"))

        opts.objects = ObjectConfig.parse(mf_config)
        if opts.objects is not None:
            name = opts.objects.constituent
            types = [n for n in variables if n != global_object and n not in EXTRA_INPUTS]
            if name not in types:
                raise SaltError(
                    f"data.mf_config.constituent.name is '{name}', which is not a constituent "
                    f"type with inputs (data.variables lists {', '.join(types) or 'none'}): the "
                    "objects are made of the constituents the model sees. Name one of them."
                )
        return opts

    def produced(self, name: str, global_object: str) -> set[str]:
        """Labels of object `name` made while reading, not read from the file."""
        made = {r.custom_target for r in self.multi_target if r.input_name == name}
        if self.labeller is not None and name == global_object:
            made.add(LABEL)
        return made - {None}

    def rng(self, index: int, stream: int) -> np.random.Generator:
        """The random numbers of batch `index` (a `BatchIndex` carries its epoch) for `stream`."""
        epoch = getattr(index, "epoch", 0)
        return np.random.default_rng([self.seed, epoch, int(index), stream])

    def parameter_rng(self, index: int) -> np.random.Generator:
        return self.rng(index, _PARAMETER_STREAM)

    def transform_rng(self, index: int, position: int) -> np.random.Generator:
        return self.rng(index, _TRANSFORM_STREAM + position)
