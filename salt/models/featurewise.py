"""Parameterised networks: conditioning a model on jet-level parameters (a hypothesis mass, ...).

Two mechanisms, as salt-ml offers them:

* concatenation (the default, Baldi et al., arXiv:1601.07913): the parameters join every init
  net's inputs, like the jet features do;
* featurewise transformations (FiLM, Dumoulin et al., distill.pub/2018/feature-wise-
  transformations): small dense networks of the parameters give a scale and/or a bias per feature
  of one place in the model, ``x -> norm(scale(p) * x + bias(p))``. Places (``layer``):

  - ``input``: the inputs of every init net (after normalisation and the joined jet features),
    one transform per init net; the parameters are then not concatenated;
  - ``encoder``: the tokens entering each encoder layer, one transform per layer;
  - ``global``: the encoder's output tokens, before the pooling and the constituent tasks.

The parameters are normalised like other inputs where the norm dict has an entry for them (under
``parameters`` or the jet dataset they are read from), else passed as they are; salt-ml never
normalises them.

Shapes: B jets, P parameters, F features of the transformed place.
"""

from __future__ import annotations

import logging

import yaml
from torch import Tensor, nn

from salt.errors import SaltError
from salt.models.dense import Dense
from salt.models.dense import activation as make_activation
from salt.models.inputnorm import InputNorm

log = logging.getLogger(__name__)

LAYERS = ("input", "encoder", "global")
DENSE_KEYS = ("output_size", "hidden_layers", "activation", "final_activation", "dropout")


def parameter_norm(names: list[str], norm_dict: str | None, dataset: str) -> InputNorm:
    """The parameters' normalisation: the norm dict's entry for each one that has one (looked up
    under ``parameters``, then under `dataset`), else mean 0 and std 1."""
    means, stds = [0.0] * len(names), [1.0] * len(names)
    found: list[str] = []
    if norm_dict is not None:
        with open(norm_dict) as f:
            content = yaml.safe_load(f) or {}
        section = content.get("parameters") or content.get(dataset) or {}
        found = [n for n in names if isinstance(section.get(n), dict)]
        if found:
            stats = InputNorm.from_norm_dict(
                norm_dict, {"parameters": found}, {"parameters": dataset}
            )["parameters"]
            for name, mean, std in zip(found, stats.mean.tolist(), stats.std.tolist()):
                means[names.index(name)], stds[names.index(name)] = mean, std
    if len(found) < len(names):
        log.info(
            "parameters %s have no norm dict entry: the model reads them as they are",
            [n for n in names if n not in found],
        )
    return InputNorm(names, means, stds, "parameters")


def _dense(config: dict, n_parameters: int, n_features: int, where: str) -> nn.Module:
    config = dict(config)
    unknown = [k for k in config if k not in (*DENSE_KEYS, "input_size")]
    if unknown:
        raise SaltError(f"{where}: unknown keys {unknown}; it takes {list(DENSE_KEYS)}.")
    config.pop("input_size", None)  # always the number of parameters
    size = config.pop("output_size", n_features)
    if size != n_features:
        raise SaltError(
            f"{where} has output_size {size}, but the features it transforms number "
            f"{n_features}; set output_size: {n_features} (or drop it: it follows the layer)."
        )
    final = config.pop("final_activation", None)
    net = Dense(n_parameters, n_features, config.pop("hidden_layers", None), **config)
    if final in (None, False):
        return net
    # salt-ml names the activation after the last layer, e.g. Sigmoid for a scale in (0, 1)
    name = config.get("activation", "SiLU") if final is True else final
    return nn.Sequential(net, make_activation(name))


class FeaturewiseTransform(nn.Module):
    """``x -> norm(scale(p) * x + bias(p))`` with dense networks of the parameters p.

    Parameters
    ----------
    n_parameters
        Parameters per jet (P).
    n_features
        Features of the transformed place (F).
    dense_config_scale, dense_config_bias
        ``{hidden_layers, activation, final_activation, dropout, output_size}`` of the scale and
        bias networks (at least one); output_size, when given, must be F.
    apply_norm
        A LayerNorm over the F features after the transformation.
    where
        Names the transform in messages.
    """

    def __init__(
        self,
        n_parameters: int,
        n_features: int,
        dense_config_scale: dict | None = None,
        dense_config_bias: dict | None = None,
        apply_norm: bool = False,
        where: str = "featurewise net",
    ):
        super().__init__()
        if not dense_config_scale and not dense_config_bias:
            raise SaltError(f"{where}: give dense_config_scale, dense_config_bias or both.")
        self.n_features = n_features
        self.scale = (
            _dense(dense_config_scale, n_parameters, n_features, f"{where}.dense_config_scale")
            if dense_config_scale
            else None
        )
        self.bias = (
            _dense(dense_config_bias, n_parameters, n_features, f"{where}.dense_config_bias")
            if dense_config_bias
            else None
        )
        self.norm = nn.LayerNorm(n_features) if apply_norm else None

    def forward(self, parameters: Tensor, x: Tensor, layout=None) -> Tensor:
        """(B, P) parameters and (B, F) jet features (layout None) or tokens in `layout`
        ((N, F) packed, (B, L, F) padded) -> same shape as x."""

        def spread(values: Tensor) -> Tensor:
            return values if layout is None else layout.per_token(values, x)

        if self.scale is not None:
            x = spread(self.scale(parameters)) * x
        if self.bias is not None:
            x = x + spread(self.bias(parameters))
        return x if self.norm is None else self.norm(x)


class Featurewise(nn.Module):
    """All featurewise transforms of a model, by place.

    Parameters
    ----------
    configs
        ``[{layer: input|encoder|global, dense_config_scale, dense_config_bias, apply_norm}]``.
    n_parameters
        Parameters per jet (the length of data.variables.parameters).
    init_sizes
        Input features of each init net, by input name (for ``input``).
    encoder_layers, embed_dim, out_dim
        Layers and token features in and out of the encoder (0 layers: no encoder).
    """

    def __init__(
        self,
        configs: list[dict],
        n_parameters: int,
        init_sizes: dict[str, int],
        encoder_layers: int = 0,
        embed_dim: int = 0,
        out_dim: int = 0,
    ):
        super().__init__()
        if not n_parameters:
            raise SaltError(
                "model featurewise_nets transform features with networks of the parameters, but "
                "data.variables has no 'parameters': add them (and data.parameters), or remove "
                "featurewise_nets."
            )
        self.inputs = nn.ModuleDict()
        self.layers = nn.ModuleList()
        self.output: FeaturewiseTransform | None = None
        seen: set[str] = set()
        for i, config in enumerate(configs):
            config = dict(config)
            where = f"featurewise_nets[{i}]"
            layer = config.pop("layer", None)
            if layer not in LAYERS:
                raise SaltError(f"{where}: layer '{layer}' is not one of {list(LAYERS)}.")
            unknown = [k for k in config if k not in ("dense_config_scale", "dense_config_bias",
                                                      "apply_norm")]  # fmt: skip
            if unknown:
                raise SaltError(f"{where}: unknown keys {unknown}.")
            if layer in seen:
                raise SaltError(f"{where}: a second featurewise net at layer '{layer}'.")
            seen.add(layer)
            if layer == "input":
                for name, size in init_sizes.items():
                    self.inputs[name] = FeaturewiseTransform(
                        n_parameters, size, **config, where=f"{where} (init net '{name}')"
                    )
            elif not encoder_layers:
                raise SaltError(f"{where}: layer '{layer}' needs an encoder; the model has none.")
            elif layer == "encoder":
                for _ in range(encoder_layers):
                    self.layers.append(
                        FeaturewiseTransform(n_parameters, embed_dim, **config, where=where)
                    )
            else:
                self.output = FeaturewiseTransform(n_parameters, out_dim, **config, where=where)

    @property
    def replaces_concatenation(self) -> bool:
        """Transforms at the inputs take the place of concatenating the parameters there."""
        return len(self.inputs) > 0
