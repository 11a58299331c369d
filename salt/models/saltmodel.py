"""SaltModel: input normalisation, embeddings, encoder, pooling and tasks, assembled from config.

Shapes: B jets; per constituent type, T stored slots, N valid constituents (packed) or L slots
(padded); D token features; R registers per jet.

Two ways in, one code path:

* training and `salt test`: packed constituents (N, F) with their `valid` (B, T) masks, as the
  dataloader delivers them (padded (B, T, F) inputs with `valid` are packed on entry);
* export: padded (B, L, F) inputs and no `valid`: every slot is a constituent (one jet of n
  tracks, as a C++ client runs the ONNX model).

Several constituent types (tracks, flows, electrons, ...) are embedded by their own init nets and
merged jet by jet into one token set, followed by the encoder's registers; the encoder sees each
jet's tokens together, and every type's tokens are picked out again for its tasks.

Edge features (salt.models.edges) are computed from a type's raw inputs for its ordered pairs of
constituents, embedded by that type's edge init net and placed among the ordered pairs of the
merged token set (packed: P rows; padded: a (B, L, L) grid); the encoder's attention reads them.
Jet-level parameters (salt.models.featurewise) join every init net's inputs, or condition the
model through featurewise transforms.

A mask decoder (MaskFormer, salt.models.maskformer) reads the encoded tokens of the
`data.mf_config` constituent type and predicts objects (e.g. hadrons) per jet beside the other
tasks; a regression task on ``objects`` regresses their properties (salt.models.object_tasks).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from salt.errors import SaltError
from salt.models.edges import build_edges, edge_dim_of
from salt.models.featurewise import Featurewise, parameter_norm
from salt.models.initnet import InitNet
from salt.models.inputnorm import InputNorm
from salt.models.layout import Packed, Padded
from salt.models.maskformer import MaskDecoder
from salt.models.object_tasks import OBJECT_OUTPUTS, ObjectSetup, object_predictions
from salt.models.tasks import RegressionTask, TaskBase
from salt.models.transformer import Transformer

ATTENTION_LAYOUTS = ("packed", "padded")
# jet-level inputs other than the global object's own: joined to the pooled jet vector
GLOBAL_EXTRAS = "global"
# jet-level inputs that condition the model (parameterised networks)
PARAMETERS = "parameters"
JET_LEVEL = (GLOBAL_EXTRAS, PARAMETERS)


class SaltModel(nn.Module):
    """A multi-task model over a jet and its constituents.

    Parameters
    ----------
    init_nets
        One dict per input type: ``{input_name: tracks, output_size: 256, hidden_layers: [256],
        activation: SiLU, attach_global: true}``. The input size follows from the variables.
        A model with only the jet-level init net (DL1) has no encoder and no pooling.
    tasks
        The tasks, each reading the jet representation or the tokens of one constituent type.
    encoder
        Transformer, GATv2 or DeepSets over the constituents of all types together; none: the
        init nets' embeddings are pooled directly (DIPS as salt-ml builds it).
    pool_net
        Pooling from constituents to one vector per jet.
    variables
        Input variables per object type (filled in by `salt` from data.variables). Variables
        under ``global`` are jet variables joined to the pooled vector after the encoder; under
        ``parameters``, the parameters of a parameterised network (see `featurewise_nets`).
    norm_dict
        UPP's norm_dict.yaml (filled in by `salt` from data.norm_dict); None: no normalisation.
        Parameters are normalised with their entry where the norm dict has one (under
        ``parameters`` or the jet dataset), else passed as they are (salt-ml never normalises
        them).
    input_map
        Config name -> dataset name (filled in by `salt`), to find norm dict entries.
    global_object
        Config name of the jet-level object.
    attention
        ``packed``: the encoder sees only valid constituents. ``padded``: it sees every jet padded
        to the stored slot count, as the upstream implementation does (for comparisons).
    edge_features
        ``{type: [feature, ...]}``: edge features computed per ordered pair of constituents of
        that type (filled in by `salt` from data.edge_constructors; see salt.models.edges).
    edge_init_nets
        One dict per type with edge features: ``{input_name: tracks, output_size: 32,
        hidden_layers: [32], activation: SiLU}``; output_size is the encoder's edge_embed_dim.
    featurewise_nets
        ``[{layer: input|encoder|global, dense_config_scale, dense_config_bias, apply_norm}]``:
        featurewise transforms by the parameters (salt.models.featurewise). Without them, or with
        none at ``input``, the parameters are concatenated to every init net's inputs.
    mask_decoder
        A `MaskDecoder` after the encoder, on the tokens of ``mf_config``'s constituent type
        (the encoder's output, before any decoder update); a `RegressionTask` with
        ``input_name: objects`` regresses the decoded objects' properties. Its losses join the
        tasks' (``object_class_ce``, ``mask_ce``, ... and the regression task's name).
    mf_config
        data.mf_config (filled in by `salt`): the truth objects and the constituents' id label.
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
        edge_features: dict[str, list[str]] | None = None,
        edge_init_nets: list[dict] | None = None,
        featurewise_nets: list[dict] | None = None,
        mask_decoder: MaskDecoder | None = None,
        mf_config: dict | None = None,
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

        normed = {k: v for k, v in self.variables.items() if k != PARAMETERS}
        if norm_dict is not None:
            norms = InputNorm.from_norm_dict(norm_dict, normed, self.input_map)
        else:
            norms = {k: InputNorm(v, [0.0] * len(v), [1.0] * len(v), k) for k, v in normed.items()}
        self.norms = nn.ModuleDict(norms)
        # apart from `norms`: a ModuleDict key cannot be `parameters` (a method of nn.Module)
        self.parameter_norm = None
        if PARAMETERS in self.variables:
            dataset = self.input_map.get(PARAMETERS, self.global_object)
            self.parameter_norm = parameter_norm(self.variables[PARAMETERS], norm_dict, dataset)
        self.n_parameters = len(self.variables.get(PARAMETERS, []))

        specs: dict[str, tuple[int, dict]] = {}  # input size (before parameters) and config
        for config in init_nets:
            config = dict(config)
            name = config.pop("input_name", None)
            if name in JET_LEVEL:
                raise SaltError(
                    f"an init net for '{name}': variables under data.variables.{name} are "
                    + (
                        "joined to the pooled jet vector"
                        if name == GLOBAL_EXTRAS
                        else "joined to every init net's inputs (or used by featurewise_nets)"
                    )
                    + ", not embedded; remove that init net."
                )
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
            specs[name] = (size, config)
        if not specs:
            raise SaltError("SaltModel needs at least one init net.")
        self.constituents = [n for n in specs if n != global_object]

        self.encoder = encoder
        self.pool_net = pool_net
        self.tasks = nn.ModuleList(tasks)
        self.num_registers = int(getattr(encoder, "num_registers", 0) or 0)
        self.drop_registers = bool(getattr(encoder, "drop_registers", False))
        self.featurewise = None
        if featurewise_nets:
            layers = len(getattr(encoder, "layers", [])) if encoder is not None else 0
            self.featurewise = Featurewise(
                featurewise_nets,
                self.n_parameters,
                {name: size for name, (size, _) in specs.items()},
                layers,
                getattr(encoder, "embed_dim", 0),
                getattr(encoder, "out_dim", 0),
            )
            if len(self.featurewise.layers) and not isinstance(encoder, Transformer):
                raise SaltError("featurewise_nets at layer 'encoder' need a Transformer encoder.")
        # the parameters join every init net's inputs, unless transforms at the inputs use them
        self.concat_parameters = bool(self.n_parameters) and not (
            self.featurewise is not None and self.featurewise.replaces_concatenation
        )
        extra = self.n_parameters if self.concat_parameters else 0
        self.init_nets = nn.ModuleDict(
            {name: InitNet(name, size + extra, **config) for name, (size, config) in specs.items()}
        )
        self.edges = build_edges(
            edge_features or {}, edge_init_nets or [], self.variables, self.constituents,
            edge_dim_of(encoder),
        )  # fmt: skip
        self.mask_decoder = mask_decoder
        self.objects = None
        if mask_decoder is not None:
            self.objects = ObjectSetup(mf_config or {}, mask_decoder, tasks)
        self._check_sizes()

    # ----------------------------------------------------------------------------- checks
    @property
    def jet_size(self) -> int:
        """Features of the jet representation that jet tasks and `context_size` refer to."""
        if self.constituents:
            size = self.pool_net.output_size
        else:
            size = self.init_nets[self.global_object].output_size
        return size + len(self.variables.get(GLOBAL_EXTRAS, []))

    def _check_sizes(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise SaltError(f"task names must be unique, got {names}.")
        token_size = None
        if self.constituents:
            if self.pool_net is None:
                raise SaltError("a model with constituents needs a pool_net.")
            sizes = {n: self.init_nets[n].output_size for n in self.constituents}
            if self.encoder is not None:
                for name, size in sizes.items():
                    if size != self.encoder.embed_dim:
                        raise SaltError(
                            f"init net '{name}' has output_size {size} but the encoder's "
                            f"embed_dim is {self.encoder.embed_dim}; make them equal."
                        )
                token_size = self.encoder.out_dim
            elif len(set(sizes.values())) > 1:
                raise SaltError(
                    f"init nets of several constituent types feed the pooling directly, so "
                    f"their output sizes must agree: {sizes}."
                )
            else:
                token_size = next(iter(sizes.values()))
            if self.pool_net.input_size != token_size:
                raise SaltError(
                    f"pool_net input_size {self.pool_net.input_size} differs from the "
                    f"{'encoder out_dim' if self.encoder is not None else 'embedding'} "
                    f"{token_size}."
                )
        elif self.encoder is not None:
            raise SaltError("an encoder needs constituents (init nets besides the jets').")
        jet_size = self.jet_size
        if self.objects is not None:
            if self.objects.constituent not in self.constituents:
                raise SaltError(
                    f"data.mf_config.constituent.name is '{self.objects.constituent}', which is "
                    f"not a constituent input of this model ({', '.join(self.constituents)})."
                )
            if self.mask_decoder.embed_dim != token_size:
                raise SaltError(
                    f"mask_decoder embed_dim {self.mask_decoder.embed_dim} differs from the "
                    f"{'encoder out_dim' if self.encoder is not None else 'embedding'} "
                    f"{token_size}; make them equal."
                )
        for task in self.tasks:
            if task.input_name == OBJECT_OUTPUTS:
                if self.objects is None:
                    raise SaltError(
                        f"task '{task.name}' reads 'objects', which only a mask_decoder "
                        "predicts; add model.model.init_args.mask_decoder."
                    )
                continue  # checked by ObjectSetup
            on_jets = task.input_name == self.global_object
            if not on_jets and task.input_name not in self.constituents:
                raise SaltError(
                    f"task '{task.name}' reads '{task.input_name}', which is not an input of "
                    "this model."
                )
            expected = jet_size if on_jets else token_size
            if task.input_size != expected:
                extra = ""
                if on_jets and GLOBAL_EXTRAS in self.variables:
                    n = len(self.variables[GLOBAL_EXTRAS])
                    extra = f" (the pooled vector plus {n} global variables)"
                raise SaltError(
                    f"task '{task.name}' has dense_config.input_size {task.input_size}, but "
                    f"'{task.input_name}' is represented by {expected} features here{extra}."
                )
            if task.context_size and (on_jets or task.context_size != jet_size):
                raise SaltError(
                    f"task '{task.name}' has dense_config.context_size {task.context_size}: "
                    + (
                        "a jet task has no context; remove it."
                        if on_jets
                        else f"the jet representation joined to each constituent has "
                        f"{jet_size} features."
                    )
                )

    # ----------------------------------------------------------------------------- forward
    def _init_input(self, name: str, x: Tensor, layout, jets, params) -> Tensor:
        """An init net's input: normalised features, joined jet features, then the parameters
        (joined, or through the featurewise transform at the inputs)."""
        if name != self.global_object and self.init_nets[name].attach_global:
            x = torch.cat([x, layout.per_token(jets, x)], dim=-1)
        if self.concat_parameters:
            x = torch.cat([x, params if layout is None else layout.per_token(params, x)], dim=-1)
        elif self.featurewise is not None and name in self.featurewise.inputs:
            x = self.featurewise.inputs[name](params, x, layout)
        return x

    def _embed(self, inputs, valid, sizes=None):
        """Normalise and embed each constituent type.

        Returns the normalised jet features and parameters, and per type the tokens, the layout
        and the raw inputs (which the edge features read)."""
        jets = params = None
        if self.global_object in self.variables:
            jets = self.norms[self.global_object](inputs[self.global_object])
        if PARAMETERS in self.variables:
            params = self.parameter_norm(inputs[PARAMETERS])
        tokens, layouts, raw = {}, {}, {}
        for name in self.constituents:
            x = inputs[name]
            if valid is not None:
                if x.dim() == 3:  # padded input with a mask: pack once, here
                    x = x[valid[name]]
                known = (sizes or {}).get(name, {})
                layout = Packed(
                    valid[name],
                    n_tokens=x.shape[0],
                    max_len=known.get("max_len"),
                    n_pairs=known.get("n_pairs"),
                    n_ordered_pairs=known.get("n_ordered_pairs"),
                )
            else:
                layout = Padded(None)
            raw[name] = x
            x = self._init_input(name, self.norms[name](x), layout, jets, params)
            tokens[name] = self.init_nets[name](x)
            layouts[name] = layout
        return jets, params, tokens, layouts, raw

    def _merge(self, tokens: dict[str, Tensor], layouts: dict, valid, sizes=None) -> tuple:
        """All constituent types and the registers in one token set, jet by jet.

        Returns the merged tokens, their layout, where each type's tokens went (None: the merged
        set is that type's own), and the tokens and layout the pooling reads.
        """
        n_reg = self.num_registers
        if len(self.constituents) == 1 and not n_reg:
            name = self.constituents[0]
            return tokens[name], layouts[name], {name: None}, None, layouts[name]
        if valid is None:  # padded: types side by side along the slot axis, registers last
            parts = [tokens[n] for n in self.constituents]
            if n_reg:
                registers = self.encoder.registers.to(parts[0].dtype)  # autocast: bf16 tokens
                parts.append(registers.expand(parts[0].shape[0], -1, -1))
            x = torch.cat(parts, dim=1)
            where, start = {}, 0
            for n in self.constituents:
                where[n] = slice(start, start + tokens[n].shape[1])
                start = start + tokens[n].shape[1]  # not +=: traced, the size is a tensor
            pool = slice(0, start) if n_reg and self.drop_registers else None
            return x, Padded(None), where, pool, Padded(None)

        first = layouts[self.constituents[0]]
        device, n_jets = first.lengths.device, first.n_jets
        lengths = sum(layouts[n].lengths for n in self.constituents)
        n_real = sum(layouts[n].n_tokens for n in self.constituents)
        width = sum(layouts[n].width for n in self.constituents)
        merged_key = "merged" if len(self.constituents) > 1 else self.constituents[0]
        known = (sizes or {}).get(merged_key, {})
        n_ordered = known.get("n_ordered_pairs")
        real = Packed(lengths=lengths, n_tokens=n_real, width=width,
                      max_len=known.get("max_len"), n_ordered_pairs=n_ordered)  # fmt: skip
        if n_reg:
            if n_ordered is not None:  # sum of (n + R)^2 over jets
                n_ordered += 2 * n_reg * n_real + n_jets * n_reg * n_reg
            merged = Packed(lengths=lengths + n_reg, n_tokens=n_real + n_jets * n_reg,
                            max_len=real.max_len + n_reg, width=width + n_reg,
                            n_ordered_pairs=n_ordered)  # fmt: skip
        else:
            merged = real
        start = merged.cu_seqlens.long()
        offset = torch.zeros(n_jets, dtype=torch.long, device=device)
        some = tokens[self.constituents[0]]
        x = some.new_empty((merged.n_tokens, some.shape[-1]))
        where = {}
        for n in self.constituents:
            layout = layouts[n]
            where[n] = start[layout.batch] + offset[layout.batch] + layout.position
            x[where[n]] = tokens[n]
            offset = offset + layout.lengths
        if not n_reg:
            return x, merged, where, None, merged
        registers = self.encoder.registers.to(x.dtype)  # (R, D); autocast: bf16 tokens
        slots = (start[:-1] + offset)[:, None] + torch.arange(n_reg, device=device)  # (B, R)
        x[slots.reshape(-1)] = registers.expand(n_jets, -1, -1).reshape(-1, registers.shape[-1])
        if not self.drop_registers:
            return x, merged, where, None, merged
        # real tokens stay at the front of each jet: their merged index is the jet start + position
        pool = start[real.batch] + real.position
        return x, merged, where, pool, real

    def _encode(self, x: Tensor, layout, edges: Tensor | None, params: Tensor | None) -> Tensor:
        if self.encoder is None:
            return x
        padded = self.attention == "padded" and isinstance(layout, Packed)
        inner = layout
        if padded:
            x, mask = layout.pad(x, length=layout.width)
            inner = Padded(mask)
        extra = {}
        if edges is not None:
            extra["edges"] = edges
        if self.featurewise is not None and len(self.featurewise.layers):
            extra["conditions"] = [
                lambda h, f=f: f(params, h, inner) for f in self.featurewise.layers
            ]
        x = self.encoder(x, inner, **extra)
        if self.featurewise is not None and self.featurewise.output is not None:
            x = self.featurewise.output(params, x, inner)
        return layout.unpad(x) if padded else x

    def run(
        self,
        inputs: dict[str, Tensor],
        valid: dict[str, Tensor] | None = None,
        labels=None,
        sizes: dict[str, dict] | None = None,
    ):
        """Task outputs, losses (when `labels` are given) and the layout each task read.

        `sizes`: the host-side sizes of `salt.models.layout.host_sizes`; with them the packed
        path never waits for the device to report a length.
        """
        jets, params, tokens, layouts, raw = self._embed(inputs, valid, sizes)
        if self.constituents:
            x, layout, where, pool, pool_layout = self._merge(tokens, layouts, valid, sizes)
            edges = None
            if self.edges is not None:
                padded = self.attention == "padded" and valid is not None
                edges = self.edges(raw, layouts, layout, where, padded, self.num_registers)
            x = self._encode(x, layout, edges, params)
            if pool is None:
                pooled = self.pool_net(x, pool_layout)
            else:
                pooled = self.pool_net(x[:, pool] if valid is None else x[pool], pool_layout)
            for name, place in where.items():
                tokens[name] = x if place is None else (x[:, place] if valid is None else x[place])
        else:
            x = self._init_input(self.global_object, jets, None, jets, params)
            pooled = self.init_nets[self.global_object](x)
        if GLOBAL_EXTRAS in self.variables:
            pooled = torch.cat([pooled, self.norms[GLOBAL_EXTRAS](inputs[GLOBAL_EXTRAS])], -1)
        outputs, losses, task_layouts = {}, {}, {}
        if self.objects is not None:
            losses.update(self._decode(tokens, layouts, labels, outputs, task_layouts))
        for task in self.tasks:
            if task.input_name == OBJECT_OUTPUTS:
                continue  # run by the decoder
            if task.input_name == self.global_object:
                features, layout, context = pooled, None, None
            else:
                features, layout = tokens[task.input_name], layouts[task.input_name]
                context = pooled if task.context_size else None
            task_labels = labels.get(task.input_name) if labels is not None else None
            outputs[task.name], loss = task(features, layout, task_labels, context)
            task_layouts[task.name] = layout
            if loss is not None:
                losses[task.name] = loss
        return outputs, losses, task_layouts

    def _decode(self, tokens, layouts, labels, outputs, task_layouts) -> dict[str, Tensor]:
        """Run the mask decoder on its constituents' tokens; its losses when labelled.

        Puts the `MaskDecoderOutput` in ``outputs["objects"]`` and the object regression (B, Q,
        R, scaled) under its task's name.
        """
        name = self.objects.constituent
        x, layout = tokens[name], layouts[name]
        head = self.objects.head()
        targets = None
        if labels is not None and OBJECT_OUTPUTS in labels:
            targets = self.objects.targets(labels, layout)
        out, losses = self.mask_decoder(x, layout, targets, head)
        outputs[OBJECT_OUTPUTS] = out
        task_layouts[OBJECT_OUTPUTS] = layout
        if head is not None:
            outputs[head.task.name] = head.predict(out.objects.embed)
            task_layouts[head.task.name] = None
        return self.objects.rename_losses(losses or {})

    def loss_weight(self, name: str) -> float:
        """The weight of the loss `name` in the total: its task's, 1 for the decoder's terms
        (weighted by loss_config.loss_weights already). An object regression's auxiliary terms
        (``<task>_layer<i>``) take its task's weight too."""
        for task in self.tasks:
            if name == task.name or (
                task.input_name == OBJECT_OUTPUTS and name.startswith(f"{task.name}_layer")
            ):
                return task.loss_weight
        return 1.0

    def forward(
        self,
        inputs: dict[str, Tensor],
        valid: dict[str, Tensor] | None = None,
        labels: dict[str, dict[str, Tensor]] | None = None,
        sizes: dict[str, dict] | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Task outputs by task name, and losses by task name when `labels` are given."""
        outputs, losses, _ = self.run(inputs, valid, labels, sizes)
        return outputs, losses

    def task_predictions(
        self,
        outputs: dict[str, Tensor],
        layouts: dict,
        inputs: dict[str, Tensor],
        labels: dict[str, dict[str, Tensor]] | None = None,
        skip: tuple[type, ...] = (),
    ) -> dict[str, dict[str, Tensor]]:
        """Writable predictions per task (probabilities, values, vertex indices) from `run`.

        Tasks of the types in `skip` are left out (the export computes vertex indices its own way).

        A regression target divided by a denominator during training is multiplied back: by the
        denominator's raw input value when it is an input variable (so the exported graph does it
        too), else by its label.
        """
        out = {}
        if self.objects is not None:
            out[OBJECT_OUTPUTS] = object_predictions(
                outputs[OBJECT_OUTPUTS], layouts[OBJECT_OUTPUTS]
            )
        for task in self.tasks:
            if isinstance(task, skip):
                continue
            scale = None
            if isinstance(task, RegressionTask) and task.target_denominators:
                scale = self._denominators(task, inputs, labels)
            out[task.name] = task.predictions(outputs[task.name], layouts[task.name], scale)
        return out

    def _denominators(self, task: RegressionTask, inputs, labels) -> Tensor | None:
        names = self.variables.get(task.input_name, [])
        columns = []
        for denominator in task.target_denominators:
            if denominator in names:
                columns.append(inputs[task.input_name][..., names.index(denominator)])
            elif labels is not None and denominator in labels.get(task.input_name, {}):
                columns.append(labels[task.input_name][denominator].float())
            else:
                return None
        return torch.stack(columns, -1)

    @torch.no_grad()
    def predict(
        self,
        inputs: dict[str, Tensor],
        valid: dict[str, Tensor] | None = None,
        labels: dict[str, dict[str, Tensor]] | None = None,
        sizes: dict[str, dict] | None = None,
    ) -> dict[str, dict[str, Tensor]]:
        """Writable predictions per task: probabilities, values, vertex indices."""
        outputs, _, layouts = self.run(inputs, valid, sizes=sizes)
        return self.task_predictions(outputs, layouts, inputs, labels)
