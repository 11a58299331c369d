"""SaltModel: input normalisation, embeddings, encoder, pooling and tasks, assembled from config.

Shapes: B jets; per constituent type, T stored slots, N valid constituents (packed) or L slots
(padded); D token features.

Two ways in, one code path:

* training and `salt test`: packed constituents (N, F) with their `valid` (B, T) masks, as the
  dataloader delivers them (padded (B, T, F) inputs with `valid` are packed on entry);
* export: padded (B, L, F) inputs and no `valid`: every slot is a constituent (one jet of n
  tracks, as a C++ client runs the ONNX model).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from salt.errors import SaltError
from salt.models.initnet import InitNet
from salt.models.inputnorm import InputNorm
from salt.models.layout import Packed, Padded
from salt.models.tasks import TaskBase

ATTENTION_LAYOUTS = ("packed", "padded")


class SaltModel(nn.Module):
    """A multi-task model over a jet and its constituents.

    Parameters
    ----------
    init_nets
        One dict per input type: ``{input_name: tracks, output_size: 256, hidden_layers: [256],
        activation: SiLU, attach_global: true}``. The input size follows from the variables.
        A model with only the jet-level init net (DL1) has no encoder and no pooling.
    tasks
        The tasks, each reading the pooled jet vector or the tokens of one constituent type.
    encoder
        Transformer, GATv2 or DeepSets over the constituents of all types together.
    pool_net
        Pooling from constituents to one vector per jet.
    variables
        Input variables per object type (filled in by `salt` from data.variables).
    norm_dict
        UPP's norm_dict.yaml (filled in by `salt` from data.norm_dict); None: no normalisation.
    input_map
        Config name -> dataset name (filled in by `salt`), to find norm dict entries.
    global_object
        Config name of the jet-level object.
    attention
        ``packed``: the encoder sees only valid constituents. ``padded``: it sees every jet padded
        to the stored slot count, as the upstream implementation does (for comparisons).
    """

    def __init__(
        self,
        init_nets: list[dict],
        tasks: list[TaskBase],
        encoder: nn.Module | None = None,
        pool_net: nn.Module | None = None,
        variables: dict[str, list[str]] | None = None,
        norm_dict: str | None = None,
        input_map: dict[str, str] | None = None,
        global_object: str = "jets",
        attention: str = "packed",
    ):
        super().__init__()
        if variables is None:
            raise SaltError("SaltModel needs the input variables (data.variables).")
        if attention not in ATTENTION_LAYOUTS:
            raise SaltError(f"model attention '{attention}' is not one of {ATTENTION_LAYOUTS}.")
        self.variables = {k: list(v) for k, v in variables.items()}
        self.global_object = global_object
        self.attention = attention
        self.input_map = dict(input_map or {})

        if norm_dict is not None:
            norms = InputNorm.from_norm_dict(norm_dict, self.variables, self.input_map)
        else:
            norms = {
                k: InputNorm(v, [0.0] * len(v), [1.0] * len(v), k)
                for k, v in self.variables.items()
            }
        self.norms = nn.ModuleDict(norms)

        self.init_nets = nn.ModuleDict()
        for config in init_nets:
            config = dict(config)
            name = config.pop("input_name", None)
            if name not in self.variables:
                raise SaltError(
                    f"init net for '{name}': data.variables has no '{name}' (it has "
                    f"{', '.join(self.variables)})."
                )
            attach = config.get("attach_global", True) and name != global_object
            attach = attach and global_object in self.variables
            config["attach_global"] = attach
            size = len(self.variables[name])
            if attach:
                size += len(self.variables[global_object])
            config.pop("input_size", None)
            self.init_nets[name] = InitNet(name, size, **config)
        self.constituents = [n for n in self.init_nets if n != global_object]
        if not self.init_nets:
            raise SaltError("SaltModel needs at least one init net.")

        self.encoder = encoder
        self.pool_net = pool_net
        self.tasks = nn.ModuleList(tasks)
        self._check_sizes()

    # ----------------------------------------------------------------------------- checks
    def _check_sizes(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise SaltError(f"task names must be unique, got {names}.")
        if not self.constituents:
            jet_size = self.init_nets[self.global_object].output_size
            token_size = None
        else:
            if self.encoder is None or self.pool_net is None:
                raise SaltError("a model with constituents needs an encoder and a pool_net.")
            for name in self.constituents:
                if self.init_nets[name].output_size != self.encoder.embed_dim:
                    raise SaltError(
                        f"init net '{name}' has output_size {self.init_nets[name].output_size} "
                        f"but the encoder's embed_dim is {self.encoder.embed_dim}; make them equal."
                    )
            token_size = self.encoder.out_dim
            if self.pool_net.input_size != token_size:
                raise SaltError(
                    f"pool_net input_size {self.pool_net.input_size} differs from the encoder's "
                    f"out_dim {token_size}."
                )
            jet_size = self.pool_net.output_size
        for task in self.tasks:
            expected = jet_size if task.input_name == self.global_object else token_size
            if task.input_name not in (self.global_object, *self.constituents):
                raise SaltError(
                    f"task '{task.name}' reads '{task.input_name}', which is not an input of "
                    "this model."
                )
            if task.input_size != expected:
                raise SaltError(
                    f"task '{task.name}' has dense_config.input_size {task.input_size}, but "
                    f"'{task.input_name}' is represented by {expected} features here."
                )

    # ----------------------------------------------------------------------------- forward
    def _embed(self, inputs, valid):
        """Normalise and embed each constituent type; returns tokens and layouts per type."""
        jets = None
        if self.global_object in self.variables:
            jets = self.norms[self.global_object](inputs[self.global_object])
        tokens, layouts = {}, {}
        for name in self.constituents:
            x = inputs[name]
            if valid is not None:
                if x.dim() == 3:  # padded input with a mask: pack once, here
                    x = x[valid[name]]
                layout = Packed(valid[name])
            else:
                layout = Padded(None)
            x = self.norms[name](x)
            if self.init_nets[name].attach_global:
                x = torch.cat([x, layout.per_token(jets, x)], dim=-1)
            tokens[name] = self.init_nets[name](x)
            layouts[name] = layout
        return jets, tokens, layouts

    def _merge(self, tokens, layouts, valid):
        """All constituent types in one token set, jet by jet; and where each type went."""
        if len(self.constituents) == 1:
            name = self.constituents[0]
            return tokens[name], layouts[name], {name: None}
        if valid is None:  # padded: types side by side along the slot axis
            x = torch.cat([tokens[n] for n in self.constituents], dim=1)
            bounds, start = {}, 0
            for n in self.constituents:
                bounds[n] = slice(start, start + tokens[n].shape[1])
                start += tokens[n].shape[1]
            return x, Padded(None), bounds
        combined = torch.cat([valid[n] for n in self.constituents], dim=1)
        layout = Packed(combined)
        index = torch.zeros(combined.shape, dtype=torch.long, device=combined.device)
        index[combined] = torch.arange(layout.n_tokens, device=combined.device)
        x = tokens[self.constituents[0]].new_empty((layout.n_tokens, self.encoder.embed_dim))
        where, start = {}, 0
        for n in self.constituents:
            width = valid[n].shape[1]
            where[n] = index[:, start : start + width][valid[n]]
            x[where[n]] = tokens[n]
            start += width
        return x, layout, where

    def _encode(self, x: Tensor, layout) -> Tensor:
        if self.attention == "padded" and isinstance(layout, Packed):
            padded, mask = layout.pad(x, length=layout.valid.shape[1])
            return layout.unpad(self.encoder(padded, Padded(mask)))
        return self.encoder(x, layout)

    def run(self, inputs: dict[str, Tensor], valid: dict[str, Tensor] | None = None, labels=None):
        """Task outputs, losses (when `labels` are given) and the layout each task read."""
        jets, tokens, layouts = self._embed(inputs, valid)
        if self.constituents:
            x, layout, where = self._merge(tokens, layouts, valid)
            x = self._encode(x, layout)
            pooled = self.pool_net(x, layout)
            for name, place in where.items():
                tokens[name] = x if place is None else x[place]
        else:
            pooled = self.init_nets[self.global_object](jets)
        outputs, losses, task_layouts = {}, {}, {}
        for task in self.tasks:
            if task.input_name == self.global_object:
                features, layout = pooled, None
            else:
                features, layout = tokens[task.input_name], layouts[task.input_name]
            task_labels = labels.get(task.input_name) if labels is not None else None
            outputs[task.name], loss = task(features, layout, task_labels)
            task_layouts[task.name] = layout
            if loss is not None:
                losses[task.name] = loss
        return outputs, losses, task_layouts

    def forward(
        self,
        inputs: dict[str, Tensor],
        valid: dict[str, Tensor] | None = None,
        labels: dict[str, dict[str, Tensor]] | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Task outputs by task name, and losses by task name when `labels` are given."""
        outputs, losses, _ = self.run(inputs, valid, labels)
        return outputs, losses

    @torch.no_grad()
    def predict(
        self, inputs: dict[str, Tensor], valid: dict[str, Tensor] | None = None
    ) -> dict[str, dict[str, Tensor]]:
        """Writable predictions per task: probabilities, values, vertex indices."""
        outputs, _, layouts = self.run(inputs, valid)
        return {t.name: t.predictions(outputs[t.name], layouts[t.name]) for t in self.tasks}
