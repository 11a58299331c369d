"""MaskDecoder: learned object queries that each predict one object of the jet (e.g. a hadron).

Shapes: B jets, Q object queries (``num_objects``), N valid tracks of the batch (packed) or L
slots per jet (padded layout, export), D features, C real object classes (index C is "no object").

Each query ends with class logits (C+1), a mask over the jet's tracks (mask logit of track t =
``mask_net(query) . track_t``) and an embedding that regression heads read. Per decoder layer,
pre-norm and residual:

1. queries attend to the jet's tracks. With ``mask_attention`` a query sees only the tracks that
   its current mask selects (sigmoid > 0.9); a query whose mask selects none sees all the jet's
   tracks, and the queries of a jet without tracks get no update from this step;
2. queries attend to each other;
3. a feed-forward update of the queries;
4. with ``bidirectional_ca``, tracks attend to their jet's queries (all of them: upstream
   salt-ml builds a mask for this step whose guard ends up allowing every query), then a
   feed-forward update of the tracks.

Token-wise work on tracks (norms, projections, feed-forward) runs on the packed tokens; each
attention pads to the batch's longest jet with masks, so no padded slot is ever attended to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from salt.errors import SaltError
from salt.models.attention import MultiheadAttention
from salt.models.layout import Packed, Padded
from salt.models.maskformer_loss import MaskFormerLoss, ObjectRegression
from salt.models.object_targets import ObjectTargets
from salt.models.stack import FeedForward

#: md_config keys and their defaults; upstream salt-ml names the first three.
LAYER_DEFAULTS = {
    "n_heads": 8,
    "mask_attention": True,
    "bidirectional_ca": True,
    "mask_threshold": 0.9,
    "ff_dim": None,
    "activation": "SiLU",
    "attn_backend": "sdpa",
}


@dataclass
class ObjectPredictions:
    """One set of object predictions.

    class_logits (B, Q, C+1); mask_logits (N, Q) packed, or (B, L, Q) in a `Padded` layout;
    embed (B, Q, D).
    """

    class_logits: Tensor
    mask_logits: Tensor
    embed: Tensor


@dataclass
class MaskDecoderOutput:
    """What the decoder gives.

    Attributes
    ----------
    objects
        The final predictions.
    tracks
        Track embeddings after the decoder, in the layout of the input (changed only with
        ``bidirectional_ca``).
    layers
        With ``aux_loss``: the predictions entering each decoder layer (the first from the
        initial queries), for the auxiliary losses.
    query_for_target
        With targets: (B, K) the query matched to each true object of the final predictions (-1:
        none).
    """

    objects: ObjectPredictions
    tracks: Tensor
    layers: list[ObjectPredictions] = field(default_factory=list)
    query_for_target: Tensor | None = None

    def padded_masks(self, layout) -> tuple[Tensor, Tensor | None]:
        """Final mask logits as (B, Q, L) and the (B, L) valid mask (None: all slots valid)."""
        masks, valid = layout.pad(self.objects.mask_logits)
        return masks.transpose(1, 2), valid


def _attend(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None, backend: str) -> Tensor:
    """(B, H, Lq, d), (B, H, Lk, d) x2, (B, Lq, Lk) bool or None -> (B, H, Lq, d).

    A row that allows no key (a jet without tracks) attends to every slot instead, so that it
    stays finite on every kernel; callers drop such rows.
    """
    if k.shape[2] == 0:  # no track in the whole batch: nothing to read
        return torch.zeros_like(q)
    mask = None
    if allowed is not None:
        mask = (allowed | ~allowed.any(-1, keepdim=True))[:, None]
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


class CrossAttention(nn.Module):
    """Tokens of one set attend to the tokens of another set of the same jet.

    Each side is given in its own layout (packed tracks, or padded/dense queries); projections run
    in that layout and only the attention itself pads, to the batch's longest jet.
    """

    def __init__(self, embed_dim: int, num_heads: int, backend: str = "sdpa"):
        super().__init__()
        if embed_dim % num_heads:
            raise SaltError(
                f"mask_decoder: embed_dim {embed_dim} is not divisible by n_heads {num_heads}."
            )
        if backend not in ("sdpa", "math"):
            raise SaltError(f"mask_decoder: attn_backend must be sdpa or math, not '{backend}'.")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.backend = backend
        self.q = nn.Linear(embed_dim, embed_dim)
        self.kv = nn.Linear(embed_dim, 2 * embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, x_layout, kv: Tensor, kv_layout, allowed: Tensor | None = None):
        """`x` in `x_layout` attends to `kv` in `kv_layout`; `allowed` (B, Lq, Lk) or None."""
        q = self.q(x).unflatten(-1, (self.num_heads, self.head_dim))
        k, v = self.kv(kv).unflatten(-1, (2, self.num_heads, self.head_dim)).unbind(-3)
        qp, _ = x_layout.pad(q)
        (kp, key_valid), vp = kv_layout.pad(k), kv_layout.pad(v)[0]
        if allowed is None and key_valid is not None:
            allowed = key_valid[:, None, :].expand(-1, qp.shape[1], -1)
        out = _attend(
            qp.transpose(1, 2), kp.transpose(1, 2), vp.transpose(1, 2), allowed, self.backend
        )
        out = x_layout.unpad(out.transpose(1, 2))
        weight = self.out.weight.unflatten(1, (self.num_heads, self.head_dim))
        return torch.einsum("...hd,ehd->...e", out, weight) + self.out.bias


def mask_logits(tokens: Tensor, x: Tensor, layout) -> Tensor:
    """Mask logit of each (track, query) of a jet: (B, Q, D), tracks -> (N, Q) or (B, L, Q)."""
    padded, _ = layout.pad(x)
    return layout.unpad(torch.einsum("bld,bqd->blq", padded, tokens))


class MaskDecoderLayer(nn.Module):
    """One decoder layer (see the module docstring). Arguments as in `LAYER_DEFAULTS`."""

    def __init__(
        self,
        embed_dim: int,
        n_heads: int = 8,
        mask_attention: bool = True,
        bidirectional_ca: bool = True,
        mask_threshold: float = 0.9,
        ff_dim: int | None = None,
        activation: str = "SiLU",
        attn_backend: str = "sdpa",
    ):
        super().__init__()
        if not 0 < mask_threshold < 1:
            raise SaltError(
                f"mask_decoder md_config.mask_threshold must lie in (0, 1), not {mask_threshold}."
            )
        self.mask_attention = mask_attention
        self.bidirectional_ca = bidirectional_ca
        self.logit_threshold = math.log(mask_threshold / (1 - mask_threshold))
        ff_dim = ff_dim or 2 * embed_dim
        self.norm_q = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(3))
        self.norm_kv = nn.LayerNorm(embed_dim)
        self.q_cross = CrossAttention(embed_dim, n_heads, attn_backend)
        self.q_self = MultiheadAttention(
            embed_dim, n_heads, "math" if attn_backend == "math" else "sdpa"
        )
        self.q_ff = FeedForward(embed_dim, ff_dim, activation)
        if bidirectional_ca:
            self.norm_x = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(3))
            self.x_cross = CrossAttention(embed_dim, n_heads, attn_backend)
            self.x_ff = FeedForward(embed_dim, ff_dim, activation)

    def _allowed(self, masks: Tensor | None, layout) -> Tensor | None:
        """(B, Q, L) the tracks each query may attend to; None: all the jet's tracks."""
        if not self.mask_attention or masks is None:
            return None
        padded, valid = layout.pad(masks.detach())  # (B, L, Q)
        selected = padded.transpose(1, 2) > self.logit_threshold
        jet_tracks = torch.ones_like(selected) if valid is None else valid[:, None, :]
        selected = selected & jet_tracks
        # a query selecting none sees all the jet's tracks (logic ops: onnxruntime has no
        # Where on booleans)
        return selected | (jet_tracks & ~selected.any(-1, keepdim=True))

    def forward(
        self, q: Tensor, x: Tensor, layout, masks: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Queries (B, Q, D) and tracks (N, D) (or (B, L, D)) -> both updated.

        `masks` are the current mask logits (N, Q) (or (B, L, Q)), read with ``mask_attention``.
        """
        dense = Padded(None)
        update = self.q_cross(
            self.norm_q[0](q), dense, self.norm_kv(x), layout, self._allowed(masks, layout)
        )
        # queries of a jet without tracks learn nothing from tracks (not even the output bias)
        update = update * _has_tracks(layout, x).to(update.dtype)[:, None, None]
        q = q + update
        q = q + self.q_self(self.norm_q[1](q), dense)
        q = q + self.q_ff(self.norm_q[2](q))
        if self.bidirectional_ca:
            x = x + self.x_cross(self.norm_x[0](x), layout, self.norm_x[1](q), dense)
            x = x + self.x_ff(self.norm_x[2](x))
        return q, x


def _has_tracks(layout, x: Tensor) -> Tensor:
    """(B,) whether each jet has a track (bool, or 0/1 for a padded jet without a mask)."""
    if isinstance(layout, Packed):
        return layout.lengths > 0
    if layout.mask is not None:
        return layout.mask.any(-1)
    # every slot is a track: a jet has one when it has a slot; computed from the data, not the
    # shape, so that an exported graph keeps it for any track count
    return x.new_ones(x.shape[:2]).sum(1).clamp(max=1)


class MaskDecoder(nn.Module):
    """Object queries decoded against the encoder's track embeddings, with the MaskFormer loss.

    Parameters
    ----------
    num_objects
        Queries Q per jet: at most this many objects are found in a jet.
    embed_dim
        D, the features of the encoder's tokens and of the queries.
    num_layers
        Decoder layers.
    md_config
        Per layer: ``n_heads``, ``mask_attention``, ``bidirectional_ca`` (as upstream), and
        ``mask_threshold`` (0.9), ``ff_dim`` (2 D), ``activation`` (SiLU), ``attn_backend``
        (sdpa, or math for export).
    class_net
        Object class head: D -> C+1 logits (last: no object), e.g. a `salt.models.Dense`.
    mask_net
        D -> D: mask logit of track t for a query = ``mask_net(query) . track_t``.
    loss_config
        `MaskFormerLoss` arguments: ``num_classes``, ``loss_weights`` (``object_class_ce``,
        ``mask_ce``, ``mask_dice``, ``mask_focal``, ``regression``), ``matcher_weights``,
        ``null_class_weight``.
    aux_loss
        Also apply the loss (with its own matching) to the predictions entering every layer.
    """

    def __init__(
        self,
        num_objects: int,
        embed_dim: int,
        num_layers: int,
        md_config: Mapping,
        class_net: nn.Module,
        mask_net: nn.Module,
        loss_config: Mapping,
        aux_loss: bool = False,
    ):
        super().__init__()
        unknown = set(md_config) - set(LAYER_DEFAULTS)
        if unknown:
            raise SaltError(
                f"mask_decoder md_config: unknown keys {sorted(unknown)}; known: "
                f"{', '.join(LAYER_DEFAULTS)}."
            )
        loss_config = dict(loss_config)
        unknown = set(loss_config) - {
            "num_classes",
            "loss_weights",
            "matcher_weights",
            "null_class_weight",
        }
        if unknown:
            raise SaltError(
                f"mask_decoder loss_config: unknown keys {sorted(unknown)}; known: num_classes, "
                "loss_weights, matcher_weights, null_class_weight."
            )
        if "num_classes" not in loss_config or "loss_weights" not in loss_config:
            raise SaltError("mask_decoder loss_config needs num_classes and loss_weights.")
        num_classes = int(loss_config["num_classes"])
        self._check_head("class_net", class_net, embed_dim, num_classes + 1)
        self._check_head("mask_net", mask_net, embed_dim, embed_dim)
        if num_objects < 1 or num_layers < 0:
            raise SaltError(
                f"mask_decoder: num_objects must be >= 1 and num_layers >= 0, got {num_objects} "
                f"and {num_layers}."
            )
        self.num_objects = num_objects
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.aux_loss = aux_loss
        self.queries = nn.Parameter(torch.randn(num_objects, embed_dim))
        self.norm_tracks = nn.LayerNorm(embed_dim)
        config = {**LAYER_DEFAULTS, **md_config}
        self.mask_attention = bool(config["mask_attention"])
        self.layers = nn.ModuleList(
            MaskDecoderLayer(embed_dim, **config) for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(embed_dim)
        self.class_net = class_net
        self.mask_net = mask_net
        self.criterion = MaskFormerLoss(**loss_config)

    @staticmethod
    def _check_head(name: str, net: nn.Module, n_in: int, n_out: int) -> None:
        got = (getattr(net, "input_size", n_in), getattr(net, "output_size", n_out))
        if got != (n_in, n_out):
            raise SaltError(
                f"mask_decoder {name}: has input_size {got[0]} and output_size {got[1]}; it "
                f"needs {n_in} and {n_out}"
                + (
                    " (loss_config.num_classes + 1 for no object)."
                    if name == "class_net"
                    else " (embed_dim)."
                )
            )

    def heads(self, q: Tensor, x: Tensor, layout) -> ObjectPredictions:
        """Class logits, mask logits and embeddings from queries (B, Q, D) and tracks."""
        embed = self.norm_out(q)
        return ObjectPredictions(
            self.class_net(embed), mask_logits(self.mask_net(embed), x, layout), embed
        )

    def forward(
        self,
        x: Tensor,
        layout,
        targets: ObjectTargets | None = None,
        regression: ObjectRegression | None = None,
    ) -> tuple[MaskDecoderOutput, dict[str, Tensor] | None]:
        """Decode the objects of every jet, and their losses when `targets` are given.

        Parameters
        ----------
        x
            Encoder output: (N, D) packed tokens with a `Packed` layout, or (B, L, D) with a
            `Padded` one.
        layout
            The tracks' layout.
        targets
            True objects (`salt.models.object_targets.build_object_targets`).
        regression
            Object regression head (see `ObjectRegression`), for the ``regression`` term.

        Returns
        -------
        The outputs, and ``{term: weighted loss}`` (``<term>_layer<i>`` for the auxiliary ones)
        when `targets` are given, else None.
        """
        n_jets = x.shape[0] if x.dim() == 3 else layout.n_jets
        q = self.queries.to(x.dtype).expand(n_jets, -1, -1)
        x = self.norm_tracks(x)
        layers = []
        preds = None
        for layer in self.layers:
            if self.aux_loss or self.mask_attention:
                preds = self.heads(q, x, layout)
                if self.aux_loss:
                    layers.append(preds)
            q, x = layer(q, x, layout, preds.mask_logits if preds is not None else None)
        out = MaskDecoderOutput(self.heads(q, x, layout), x, layers)
        if targets is None:
            return out, None
        final = out.objects
        losses, out.query_for_target = self.criterion(
            final.class_logits, final.mask_logits, final.embed, targets, layout, regression
        )
        for i, aux in enumerate(layers):
            aux_losses, _ = self.criterion(
                aux.class_logits, aux.mask_logits, aux.embed, targets, layout, regression
            )
            losses.update({f"{k}_layer{i}": v for k, v in aux_losses.items()})
        return out, losses
