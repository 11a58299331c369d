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
    loss_weight
        Weight of this task's loss in the total.
    """

    def __init__(self, name: str, input_name: str, dense_config: dict, loss_weight: float = 1.0):
        super().__init__()
        self.name = name
        self.input_name = input_name
        self.loss_weight = loss_weight
        self.dense_config = dict(dense_config)

    @property
    def input_size(self) -> int:
        return int(self.dense_config["input_size"])

    @property
    def label_fields(self) -> list[str]:
        """Fields of `input_name` this task needs from the files."""
        raise NotImplementedError

    def forward(
        self, x: Tensor, layout, labels: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Head output and, when labels are given, the loss."""
        raise NotImplementedError

    def predictions(self, output: Tensor, layout) -> dict[str, Tensor]:
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
    ):
        super().__init__(name, input_name, dense_config, loss_weight)
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
        self.net = Dense(output_size=n, **self.dense_config)
        self.dense_config["output_size"] = n
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

    def forward(self, x, layout, labels=None):
        logits = self.net(x)
        if labels is None:
            return logits, None
        target = labels[self.label]
        if not (target >= 0).any():
            return logits, _zero_loss(logits)
        loss = F.cross_entropy(
            logits.float(),
            target,
            weight=self.class_weights,
            ignore_index=-1,
            label_smoothing=self.label_smoothing,
        )
        return logits, loss

    def predictions(self, output, layout):
        probs = torch.softmax(output.float(), dim=-1)
        return {"probs": probs, "argmax": probs.argmax(-1)}


class VertexingTask(TaskBase):
    """Edge classification of constituent pairs: do tracks i and j come from the same vertex?

    A pair is positive when both carry the same ``ftagTruthVertexIndex`` and it is >= 0 (a
    negative index means no truth vertex: such a track is never paired). Only pairs of valid
    constituents of one jet are scored, each unordered pair once.

    The head is an MLP on ``[h_i, h_j]``; its first layer is split as ``W_l h_i + W_r h_j``, so
    it runs per token and only the sum and the later layers run per pair: the same function for a
    fraction of the cost.

    Parameters
    ----------
    label
        The vertex index field.
    dense_config
        ``input_size`` (token features), ``hidden_layers`` (at least one), ``activation``.
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
        self.act = make_activation(act)
        self.rest = Dense(hidden[0], 1, hidden[1:], act)

    @property
    def label_fields(self) -> list[str]:
        return [self.label]

    def pair_logits(self, x: Tensor, layout) -> Tensor:
        """Packed: (P,) for `layout.pairs()`. Padded: (B, L, L), symmetric, diagonal 0."""
        left, right = self.left(x), self.right(x)
        if isinstance(layout, Packed):
            i, j = layout.pairs()
            return self.rest(self.act(left[i] + right[j])).squeeze(-1)
        full = self.rest(self.act(left[:, :, None] + right[:, None, :])).squeeze(-1)
        upper = torch.triu(full, diagonal=1)
        return upper + upper.transpose(1, 2)

    def forward(self, x, layout, labels=None):
        logits = self.pair_logits(x, layout)
        if labels is None:
            return logits, None
        if logits.numel() == 0:
            return logits, _zero_loss(logits)
        vertex = labels[self.label]
        i, j = layout.pairs()
        target = ((vertex[i] == vertex[j]) & (vertex[i] >= 0)).to(logits.dtype)
        return logits, F.binary_cross_entropy_with_logits(logits.float(), target.float())

    def predictions(self, output, layout):
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
    """Regression of one or more targets, scaled to mean 0 and std 1 for the loss.

    Parameters
    ----------
    targets
        Float fields of `input_name` to predict.
    scales
        ``{target: [mean, std]}``; targets missing here are looked up in `norm_dict`.
    norm_dict
        UPP's norm dict (filled in by `salt` from data.norm_dict).
    loss
        ``mse`` or ``huber``.
    """

    n_outputs_per_target = 1

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
    ):
        super().__init__(name, input_name, dense_config, loss_weight)
        if loss not in ("mse", "huber"):
            raise SaltError(f"task '{name}': loss must be 'mse' or 'huber', not '{loss}'.")
        self.targets = list(targets)
        self.loss = loss
        scales = dict(scales or {})
        missing = [t for t in self.targets if t not in scales]
        if missing:
            if norm_dict is None:
                raise SaltError(
                    f"task '{name}': no scale for {missing}: give scales: {{target: [mean, std]}}."
                )
            stats = load_norm_dict(norm_dict, {input_name: missing})[input_name]
            scales.update({t: list(stats[t]) for t in missing})
        self.register_buffer("mean", torch.tensor([scales[t][0] for t in self.targets]))
        self.register_buffer("std", torch.tensor([scales[t][1] for t in self.targets]))
        self.dense_config.pop("output_size", None)
        n_out = len(self.targets) * self.n_outputs_per_target
        self.net = Dense(output_size=n_out, **self.dense_config)

    @property
    def label_fields(self) -> list[str]:
        return list(self.targets)

    def _scaled_targets(self, labels) -> tuple[Tensor, Tensor]:
        y = torch.stack([labels[t] for t in self.targets], -1).float()
        y = (y - self.mean) / self.std
        finite = torch.isfinite(y)  # e.g. no hadron in a light jet: nothing to learn
        return torch.where(finite, y, torch.zeros_like(y)), finite

    def forward(self, x, layout, labels=None):
        out = self.net(x)
        if labels is None:
            return out, None
        y, finite = self._scaled_targets(labels)
        if not finite.any():
            return out, _zero_loss(out)
        return out, self._loss(out.float(), y, finite)

    def _loss(self, out: Tensor, y: Tensor, finite: Tensor) -> Tensor:
        """Mean loss over the finite targets; everything in scaled units."""
        fn = F.mse_loss if self.loss == "mse" else F.huber_loss
        return fn(out[finite], y[finite])

    def predictions(self, output, layout):
        return {"values": output.float() * self.std + self.mean}


class GaussianRegressionTask(RegressionTask):
    """Regression with a predicted width: minimises the Gaussian negative log-likelihood.

    Writes the mean and the standard deviation of every target, in the target's units.
    """

    n_outputs_per_target = 2

    def _loss(self, out: Tensor, y: Tensor, finite: Tensor) -> Tensor:
        mu, log_sigma = out.chunk(2, dim=-1)
        nll = log_sigma + 0.5 * ((y - mu) / log_sigma.exp()) ** 2 + 0.5 * math.log(2 * math.pi)
        return nll[finite].mean()

    def predictions(self, output, layout):
        mu, log_sigma = output.float().chunk(2, dim=-1)
        return {"values": mu * self.std + self.mean, "stddev": log_sigma.exp() * self.std}
