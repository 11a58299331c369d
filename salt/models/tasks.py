"""Tasks: a head, a loss and the labels it reads. Several are trained together on one encoder.

Every task gets the representation its `input_name` names: the pooled jet vector (B, D) for the
jet-level object, or the constituent tokens of that type in the current layout (packed (N, D),
or padded (B, L, D) for export).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salt.data.yamldicts import load_norm_dict
from salt.errors import SaltError
from salt.labels import TRACK_ORIGINS
from salt.models.dense import Dense
from salt.models.dense import activation as make_activation
from salt.models.layout import Packed


class TaskBase(nn.Module):
    """What every task has.

    Parameters
    ----------
    name
        Unique name; losses are logged as ``train/<name>_loss`` and ``val/<name>_loss``.
    input_name
        The object whose representation the head reads (``jets``, ``tracks``, ...).
    dense_config
        Keyword arguments of the head's `Dense` (input_size, hidden_layers, activation, ...).
        ``context_size``: a constituent task also reads the jet representation (the pooled
        vector, with any global variables), joined to each constituent's features; give its size.
    loss_weight
        Weight of this task's loss in the total.
    """

    def __init__(self, name: str, input_name: str, dense_config: dict, loss_weight: float = 1.0):
        super().__init__()
        self.name = name
        self.input_name = input_name
        self.loss_weight = loss_weight
        self.dense_config = dict(dense_config)
        self.context_size = int(self.dense_config.pop("context_size", 0) or 0)

    @property
    def input_size(self) -> int:
        return int(self.dense_config["input_size"])

    def _head_config(self) -> dict:
        """The Dense arguments of a head that reads the features joined with the context."""
        config = dict(self.dense_config)
        config["input_size"] = self.input_size + self.context_size
        return config

    @staticmethod
    def with_context(x: Tensor, layout, context: Tensor | None) -> Tensor:
        """(..., D) features joined with each one's jet representation (B, C): (..., D + C)."""
        if context is None:
            return x
        return torch.cat([x, layout.per_token(context, x)], dim=-1)

    @property
    def label_fields(self) -> list[str]:
        """Fields of `input_name` this task needs from the files."""
        raise NotImplementedError

    def forward(
        self,
        x: Tensor,
        layout,
        labels: dict[str, Tensor] | None = None,
        context: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Head output and, when labels are given, the loss."""
        raise NotImplementedError

    def predictions(self, output: Tensor, layout, scale: Tensor | None = None) -> dict[str, Tensor]:
        """Outputs to write, named by suffix: probabilities, values, indices."""
        raise NotImplementedError


def _zero_loss(output: Tensor) -> Tensor:
    # keeps the graph connected (DDP needs every parameter used) when a batch has nothing to learn
    return output.sum() * 0.0


class ClassificationTask(TaskBase):
    """Cross entropy over classes, for jets (flavour) or constituents (track origin).

    Parameters
    ----------
    label
        Integer label field: the class index.
    class_names
        Names of the classes, in label order. For jets `salt` fills them from the training
        file's ``flavour_label`` attribute; for ``ftagTruthOriginLabel`` the 8 origins.
    label_map
        ``{value in the file: class index}``, to train on any integer label (e.g. a truth PDG id);
        values not in the map are class indices already. The dataloader applies it; class_names
        are then required.
    use_class_dict
        Weight the classes with data.class_dict: `salt` fills class_weights from it.
    class_weights
        Weights per class (overridden by use_class_dict).
    label_smoothing
        As in torch's CrossEntropyLoss.
    """

    def __init__(
        self,
        name: str,
        input_name: str,
        label: str,
        dense_config: dict,
        class_names: list[str] | None = None,
        loss_weight: float = 1.0,
        use_class_dict: bool = False,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        label_map: dict[int, int] | None = None,
    ):
        super().__init__(name, input_name, dense_config, loss_weight)
        if label_map is not None and class_names is None:
            raise SaltError(
                f"task '{name}': a label_map needs class_names (one name per class index)."
            )
        self.label_map = {int(k): int(v) for k, v in (label_map or {}).items()} or None
        if class_names is None and label == "ftagTruthOriginLabel":
            class_names = list(TRACK_ORIGINS)
        if class_names is None:
            raise SaltError(
                f"task '{name}': class_names are unknown; set them in the task's init_args."
            )
        self.label = label
        self.class_names = list(class_names)
        self.use_class_dict = use_class_dict
        n = len(self.class_names)
        given = self.dense_config.pop("output_size", n)
        if given != n:
            raise SaltError(
                f"task '{name}': dense_config.output_size is {given} but there are {n} classes "
                f"({', '.join(self.class_names)}); drop output_size, it follows the classes."
            )
        self.dense_config["output_size"] = n
        self.net = Dense(**self._head_config())
        weight = None
        if class_weights is not None:
            if len(class_weights) != n:
                raise SaltError(
                    f"task '{name}': {len(class_weights)} class weights for {n} classes."
                )
            weight = torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weight)
        self.label_smoothing = label_smoothing

    @property
    def label_fields(self) -> list[str]:
        return [self.label]

    def forward(self, x, layout, labels=None, context=None):
        logits = self.net(self.with_context(x, layout, context))
        if labels is None:
            return logits, None
        target = labels[self.label]
        # cross entropy's weighted mean over the labelled entries (-1: ignore), written out so
        # that a batch with nothing labelled gives 0 without asking the device whether it is so
        keep = target >= 0
        safe = target.clamp(min=0)
        per = F.cross_entropy(
            logits.float(),
            safe,
            weight=self.class_weights,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        weight = keep.float()
        if self.class_weights is not None:
            weight = weight * self.class_weights[safe]
        return logits, (per * keep).sum() / weight.sum().clamp(min=1e-12)

    def predictions(self, output, layout, scale=None):
        probs = torch.softmax(output.float(), dim=-1)
        return {"probs": probs, "argmax": probs.argmax(-1)}


class VertexingTask(TaskBase):
    """Edge classification of constituent pairs: do tracks i and j come from the same vertex?

    A pair is positive when both carry the same ``ftagTruthVertexIndex`` and it is >= 0 (a
    negative index means no truth vertex: such a track is never paired). Only pairs of valid
    constituents of one jet are scored, each unordered pair once.

    The head is an MLP on ``[h_i, h_j, c]`` (c: the jet representation, with ``context_size``);
    its first layer is split as ``W_l h_i + W_r h_j + W_c c``, so it runs per token (and per jet)
    and only the sum and the later layers run per pair: the same function for a fraction of the
    cost.

    Parameters
    ----------
    label
        The vertex index field.
    dense_config
        ``input_size`` (token features), ``hidden_layers`` (at least one), ``activation``,
        ``context_size``.
    """

    def __init__(
        self,
        name: str,
        input_name: str,
        dense_config: dict,
        label: str = "ftagTruthVertexIndex",
        loss_weight: float = 1.0,
    ):
        super().__init__(name, input_name, dense_config, loss_weight)
        self.label = label
        hidden = list(self.dense_config.get("hidden_layers") or [])
        if not hidden:
            raise SaltError(f"task '{name}': dense_config.hidden_layers needs at least one width.")
        act = self.dense_config.get("activation", "SiLU")
        self.left = nn.Linear(self.input_size, hidden[0])
        self.right = nn.Linear(self.input_size, hidden[0], bias=False)
        self.context = (
            nn.Linear(self.context_size, hidden[0], bias=False) if self.context_size else None
        )
        self.act = make_activation(act)
        dropout = self.dense_config.get("dropout", 0.0)
        self.rest = Dense(hidden[0], 1, hidden[1:], act, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    @property
    def label_fields(self) -> list[str]:
        return [self.label]

    def pair_logits(self, x: Tensor, layout, context: Tensor | None = None) -> Tensor:
        """Packed: (P,) for `layout.pairs()`. Padded: (B, L, L), symmetric, diagonal 0."""
        left, right = self.left(x), self.right(x)
        jet = None if context is None or self.context is None else self.context(context)  # (B, H)
        if isinstance(layout, Packed):
            i, j = layout.pairs()
            first = left[i] + right[j]
            if jet is not None:
                first = first + jet[layout.batch[i]]
            return self.rest(self.drop(self.act(first))).squeeze(-1)
        first = left[:, :, None] + right[:, None, :]
        if jet is not None:
            first = first + jet[:, None, None, :]
        full = self.rest(self.drop(self.act(first))).squeeze(-1)
        upper = torch.triu(full, diagonal=1)
        return upper + upper.transpose(1, 2)

    def forward(self, x, layout, labels=None, context=None):
        logits = self.pair_logits(x, layout, context)
        if labels is None:
            return logits, None
        if logits.numel() == 0:
            return logits, _zero_loss(logits)
        vertex = labels[self.label]
        i, j = layout.pairs()
        target = ((vertex[i] == vertex[j]) & (vertex[i] >= 0)).to(logits.dtype)
        return logits, F.binary_cross_entropy_with_logits(logits.float(), target.float())

    def predictions(self, output, layout, scale=None):
        return {"vertex_index": vertex_index(output, layout)}


def vertex_index(pair_logits: Tensor, layout: Packed) -> Tensor:
    """(N,) per-jet vertex index: the smallest in-jet position of the track's connected component.

    Tracks are joined when their pair probability exceeds 0.5; the components of that graph are
    the vertices. Min-label propagation converges within the longest jet's length.
    """
    i, j = layout.pairs()
    keep = pair_logits > 0
    i, j = i[keep], j[keep]
    labels = torch.arange(layout.n_tokens, device=pair_logits.device)
    for _ in range(max(layout.max_len, 1)):
        low = torch.minimum(labels[i], labels[j])
        new = labels.scatter_reduce(0, i, low, "amin").scatter_reduce(0, j, low, "amin")
        if torch.equal(new, labels):
            break
        labels = new
    return labels - layout.cu_seqlens[layout.batch].long()


class RegressionTask(TaskBase):
    """Regression of one or more targets, scaled for the loss.

    A target goes through, in this order: the `scaler` transform (e.g. a log), the division by
    its `target_denominators` field, and ``(y - mean) / std`` from `scales`. Predictions undo all
    three. Targets that are not finite (no hadron in a light jet) are left out of the loss.

    Parameters
    ----------
    targets
        Float fields of `input_name` to predict.
    scales
        ``{target: [mean, std]}``; targets missing here are looked up in `norm_dict`.
    norm_dict
        UPP's norm dict (filled in by `salt` from data.norm_dict).
    loss
        ``mse``, ``huber`` or ``l1``.
    target_denominators
        One field per target to divide it by (a ratio is easier to learn, e.g. truth pT /
        reconstructed pT); predictions are multiplied back.
    scaler
        ``{target: {op: log|exp|linear, x_scale, x_off, op_scale, op_off}}``: ``y =
        op(x * x_scale + x_off) * op_scale + op_off`` before anything else (all but op optional).
    custom_output_names
        Names that replace the targets in the written outputs (``<model>_<name>``).
    """

    n_outputs_per_target = 1
    LOSSES = ("mse", "huber", "l1")

    def __init__(
        self,
        name: str,
        input_name: str,
        targets: list[str],
        dense_config: dict,
        scales: dict[str, list[float]] | None = None,
        norm_dict: str | None = None,
        loss: str = "mse",
        loss_weight: float = 1.0,
        target_denominators: list[str] | None = None,
        scaler: dict[str, dict] | None = None,
        custom_output_names: list[str] | None = None,
    ):
        super().__init__(name, input_name, dense_config, loss_weight)
        if loss not in self.LOSSES:
            raise SaltError(f"task '{name}': loss must be one of {self.LOSSES}, not '{loss}'.")
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.loss = loss
        self.target_denominators = _per_target(name, "target_denominators", target_denominators,
                                               self.targets)  # fmt: skip
        self.custom_output_names = _per_target(name, "custom_output_names", custom_output_names,
                                               self.targets)  # fmt: skip
        self.scaler = TargetScaler(scaler or {}, self.targets, name)
        scales = dict(scales or {})
        missing = [t for t in self.targets if t not in scales]
        if missing:
            if norm_dict is None:
                raise SaltError(
                    f"task '{name}': no scale for {missing}: give scales: {{target: [mean, std]}}."
                )
            stats = load_norm_dict(norm_dict, {input_name: missing})[input_name]
            scales.update({t: list(stats[t]) for t in missing})
        self.register_buffer("mean", torch.tensor([float(scales[t][0]) for t in self.targets]))
        self.register_buffer("std", torch.tensor([float(scales[t][1]) for t in self.targets]))
        self.dense_config["output_size"] = len(self.targets) * self.n_outputs_per_target
        self.net = Dense(**self._head_config())

    @property
    def label_fields(self) -> list[str]:
        return [*self.targets, *(self.target_denominators or [])]

    def _scaled_targets(self, labels) -> tuple[Tensor, Tensor]:
        y = self.scaler(torch.stack([labels[t] for t in self.targets], -1).float())
        if self.target_denominators:
            y = y / torch.stack([labels[d] for d in self.target_denominators], -1).float()
        y = (y - self.mean) / self.std
        finite = torch.isfinite(y)  # e.g. no hadron in a light jet: nothing to learn
        return torch.where(finite, y, torch.zeros_like(y)), finite

    def forward(self, x, layout, labels=None, context=None):
        out = self.net(self.with_context(x, layout, context))
        if labels is None:
            return out, None
        y, finite = self._scaled_targets(labels)
        return out, self._loss(out.float(), y, finite)

    def _loss(self, out: Tensor, y: Tensor, finite: Tensor) -> Tensor:
        """Mean loss over the finite targets, in scaled units (0, still connected, if none)."""
        fn = {"mse": F.mse_loss, "huber": F.huber_loss, "l1": F.l1_loss}[self.loss]
        return _masked_mean(fn(out, y, reduction="none"), finite)

    def predictions(self, output, layout, scale=None):
        values = output.float()[..., : len(self.targets)] * self.std + self.mean
        if self.target_denominators and scale is not None:
            values = values * scale
        return {"values": self.scaler.inverse(values)}


def _per_target(task: str, key: str, value, targets: list[str]) -> list[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    if len(values) != len(targets):
        raise SaltError(
            f"task '{task}': {key} has {len(values)} entries for {len(targets)} targets "
            f"({', '.join(targets)}); give one per target."
        )
    return values


def _masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of `values` where `keep`; 0 (with gradient) where nothing is kept; no host sync."""
    keep = keep.to(values.dtype)
    return (values * keep).sum() / keep.sum().clamp(min=1.0)


class TargetScaler(nn.Module):
    """Per-target transforms ``op(x * x_scale + x_off) * op_scale + op_off`` and their inverse.

    Parameters
    ----------
    scales
        ``{target: {op: log|exp|linear, x_scale: 1, x_off: 0, op_scale: 1, op_off: 0}}``;
        targets not named are left as they are.
    targets
        The task's targets, in output order.
    task
        The task's name, for messages.
    """

    OPS = ("log", "exp", "linear")
    KEYS = ("op", "x_scale", "x_off", "op_scale", "op_off")

    def __init__(self, scales: dict[str, dict], targets: list[str], task: str = ""):
        super().__init__()
        unknown = [t for t in scales if t not in targets]
        if unknown:
            raise SaltError(f"task '{task}': scaler names {unknown}, which are not its targets.")
        params, ops = [], []
        for target in targets:
            spec = dict(scales.get(target) or {"op": "linear"})
            bad = [k for k in spec if k not in self.KEYS]
            if bad or spec.get("op") not in self.OPS:
                raise SaltError(
                    f"task '{task}': scaler of '{target}' is {spec}; it takes op "
                    f"({', '.join(self.OPS)}) and optionally {', '.join(self.KEYS[1:])}."
                )
            ops.append(self.OPS.index(spec["op"]))
            params.append([float(spec.get(k, d)) for k, d in zip(self.KEYS[1:], (1, 0, 1, 0))])
        self.active = bool(scales)
        self.register_buffer("params", torch.tensor(params, dtype=torch.float32).T.contiguous())
        self.register_buffer("ops", torch.tensor(ops))

    def forward(self, x: Tensor) -> Tensor:
        """(..., n_targets) raw targets -> scaled."""
        if not self.active:
            return x
        x_scale, x_off, op_scale, op_off = self.params
        u = x * x_scale + x_off
        y = torch.where(self.ops == 0, torch.log(u), torch.where(self.ops == 1, torch.exp(u), u))
        return y * op_scale + op_off

    def inverse(self, y: Tensor) -> Tensor:
        """(..., n_targets) scaled -> raw."""
        if not self.active:
            return y
        x_scale, x_off, op_scale, op_off = self.params
        u = (y - op_off) / op_scale
        u = torch.where(self.ops == 0, torch.exp(u), torch.where(self.ops == 1, torch.log(u), u))
        return (u - x_off) / x_scale


class GaussianRegressionTask(RegressionTask):
    """Regression with a predicted width: minimises the Gaussian negative log-likelihood.

    Writes the mean and the standard deviation of every target, in the target's units.
    """

    n_outputs_per_target = 2

    def _loss(self, out: Tensor, y: Tensor, finite: Tensor) -> Tensor:
        mu, log_sigma = out.chunk(2, dim=-1)
        nll = log_sigma + 0.5 * ((y - mu) / log_sigma.exp()) ** 2 + 0.5 * math.log(2 * math.pi)
        return _masked_mean(nll, finite)

    def predictions(self, output, layout, scale=None):
        mu, log_sigma = output.float().chunk(2, dim=-1)
        values, stddev = mu * self.std + self.mean, log_sigma.exp() * self.std
        if self.target_denominators and scale is not None:
            values, stddev = values * scale, stddev * scale
        # the width is given in the target's units only for a linear scaler
        return {"values": self.scaler.inverse(values), "stddev": stddev}
