"""Edge features: relations between two constituents of a jet, computed on the fly, and their
embedding.

Shapes: B jets, N packed constituents of one type, P ordered pairs (i, j) of constituents of a
jet (i == j included; P = sum over jets of n^2), L slots of a padded jet, F raw variables of the
type, K edge features, E edge embedding features.

Features (names and definitions as salt-ml documents them), from the raw, not normalised, values
of the constituents' variables; deta = eta_j - eta_i, dphi = phi_j - phi_i wrapped into (-pi, pi]:

* ``dR`` = log sqrt(deta^2 + dphi^2)                        needs eta, phi
* ``kt`` = log(min(pt_i, pt_j) sqrt(deta^2 + dphi^2))       needs pt, eta, phi
* ``z`` = log(min(pt_i, pt_j) / (pt_i + pt_j))              needs pt
* ``isSelfLoop`` = 1 if i == j else 0
* ``subjetIndex`` = 1 if both share a subjet index >= 0 else 0   needs subjetIndex
* ``mass`` = log of the pair's invariant mass (m^2 clamped at 1e-8)   needs pt, eta, phi, energy

The logarithms leave offsets that depend on the units (kt and mass of MeV-valued inputs sit near
7-11 with a spread near 1). `EdgeNorm` standardises the continuous features with statistics of
the first training batch, then keeps them fixed (in the checkpoint and the exported graph):
training and inference compute the same function, whatever the units. Values that are not finite
(dR, kt of a self pair: log 0) become 0 after standardisation, the feature's mean; isSelfLoop
marks those pairs anyway. salt-ml feeds the raw logarithms, with non-finite values set to 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from salt.errors import SaltError
from salt.models.dense import Dense
from salt.models.layout import Packed

# feature -> the constituent variables it needs
EDGE_FEATURES: dict[str, tuple[str, ...]] = {
    "dR": ("eta", "phi"),
    "kt": ("pt", "eta", "phi"),
    "z": ("pt",),
    "isSelfLoop": (),
    "subjetIndex": ("subjetIndex",),
    "mass": ("pt", "eta", "phi", "energy"),
}
CONTINUOUS = ("dR", "kt", "z", "mass")


def check_edge_features(input_name: str, features: list[str], variables: list[str]) -> None:
    """Refuse unknown features and features whose variables are not inputs of `input_name`."""
    if not features:
        raise SaltError(f"edge features of '{input_name}': the list is empty; name at least one.")
    for name in features:
        if name not in EDGE_FEATURES:
            raise SaltError(
                f"edge feature '{name}' of '{input_name}' is unknown; choose from "
                f"{', '.join(EDGE_FEATURES)}."
            )
    if len(set(features)) != len(features):
        raise SaltError(f"edge features of '{input_name}' name a feature twice: {features}.")
    for name in features:
        missing = [v for v in EDGE_FEATURES[name] if v not in variables]
        if missing:
            listed = ", ".join(f"'{v}'" for v in missing)
            raise SaltError(
                f"edge feature '{name}' needs {input_name} variable{'s' * (len(missing) > 1)} "
                f"{listed}: add {'them' if len(missing) > 1 else 'it'} to "
                f"data.variables.{input_name} (edge features are computed from the inputs' raw "
                f"values), or drop '{name}' from data.edge_constructors."
            )


def needed_variables(features: list[str]) -> list[str]:
    """The constituent variables `features` read, in a fixed order."""
    order = ("pt", "eta", "phi", "energy", "subjetIndex")
    wanted = {v for f in features for v in EDGE_FEATURES[f]}
    return [v for v in order if v in wanted]


def pair_features(
    a: dict[str, Tensor], b: dict[str, Tensor], self_loop: Tensor, features: list[str]
) -> Tensor:
    """Raw edge features of pairs (a, b): (...,) tensors per variable -> (..., K).

    `a` and `b` hold the variables of the first and second constituent of each pair (any shapes
    that broadcast, e.g. (P,) packed or (B, L, 1) and (B, 1, L) padded); `self_loop` is True
    where a and b are the same constituent. Non-finite values are left as they come.
    """
    out = []
    if {"dR", "kt"} & set(features):
        deta = b["eta"] - a["eta"]
        dphi = b["phi"] - a["phi"]
        dphi = torch.atan2(torch.sin(dphi), torch.cos(dphi))  # wrapped both ways: symmetric
        log_dr = 0.5 * torch.log(deta * deta + dphi * dphi)
    if {"kt", "z"} & set(features):
        pt_min = torch.minimum(a["pt"], b["pt"])
    for name in features:
        if name == "dR":
            value = log_dr
        elif name == "kt":
            value = torch.log(pt_min) + log_dr
        elif name == "z":
            value = torch.log(pt_min / (a["pt"] + b["pt"]))
        elif name == "isSelfLoop":
            value = self_loop.float()
        elif name == "subjetIndex":
            value = ((a["subjetIndex"] == b["subjetIndex"]) & (a["subjetIndex"] >= 0)).float()
        else:  # mass
            value = _pair_mass(a, b)
        out.append(torch.broadcast_to(value, torch.broadcast_shapes(value.shape, self_loop.shape)))
    return torch.stack(out, -1)


def _pair_mass(a: dict[str, Tensor], b: dict[str, Tensor]) -> Tensor:
    # m^2 is a small difference of large numbers for nearly collinear pairs: float32 would
    # leave rounding noise of the order of E * 1e-7 * E there, so this one runs in float64
    a = {k: v.double() for k, v in a.items()}
    b = {k: v.double() for k, v in b.items()}
    energy = a["energy"] + b["energy"]
    px = a["pt"] * torch.cos(a["phi"]) + b["pt"] * torch.cos(b["phi"])
    py = a["pt"] * torch.sin(a["phi"]) + b["pt"] * torch.sin(b["phi"])
    pz = a["pt"] * _sinh(a["eta"]) + b["pt"] * _sinh(b["eta"])
    mass2 = energy * energy - px * px - py * py - pz * pz
    return (0.5 * torch.log(mass2.clamp(min=1e-8))).float()


def _sinh(x: Tensor) -> Tensor:
    # written out: the pinned ONNX exporter has no aten::sinh
    return (torch.exp(x) - torch.exp(-x)) / 2


class EdgeNorm(nn.Module):
    """Standardises the continuous edge features with fixed statistics of the first training
    batch (binary features pass as 0/1); non-finite values become 0.

    The statistics are buffers: they travel in checkpoints and exported graphs. Estimated once,
    in the first forward pass in training mode, over the valid pairs and finite values; until
    then (a model that has never trained) the features pass unscaled.

    Parameters
    ----------
    features
        The edge features, in column order.
    """

    def __init__(self, features: list[str]):
        super().__init__()
        self.features = list(features)
        n = len(features)
        self.register_buffer("scaled", torch.tensor([f in CONTINUOUS for f in features]))
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))
        self.register_buffer("ready", torch.tensor(False))
        self._ready = False  # a host copy of `ready`: reading the buffer would wait for a GPU

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ready = bool(self.ready)

    @torch.no_grad()
    def _estimate(self, values: Tensor, keep: Tensor) -> None:
        weight = keep.to(values.dtype).reshape(-1, values.shape[-1])
        flat = torch.where(keep, values, 0.0).reshape(-1, values.shape[-1])
        count = weight.sum(0).clamp(min=1.0)
        mean = flat.sum(0) / count
        std = (((flat - mean) ** 2 * weight).sum(0) / count).sqrt()
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        self.mean.copy_(torch.where(self.scaled, mean, 0.0))
        self.std.copy_(torch.where(self.scaled, std, 1.0))
        self.ready.fill_(True)
        self._ready = True

    def forward(self, values: Tensor, valid: Tensor | None = None) -> Tensor:
        """(..., K) raw features -> (..., K); `valid` (...) marks the real pairs (None: all)."""
        finite = torch.isfinite(values)
        if self.training and not self._ready:
            keep = finite if valid is None else finite & valid[..., None]
            self._estimate(values, keep)
        scaled = (torch.where(finite, values, 0.0) - self.mean) / self.std
        return torch.where(finite, scaled, 0.0)


class EdgeEmbedding(nn.Module):
    """Edge features of one constituent type, standardised and embedded by a dense network.

    Parameters
    ----------
    input_name
        The constituent type (``tracks``).
    features
        Edge features to compute (see the module docstring).
    variables
        The type's input variables, in column order (the edge features read the raw values).
    output_size
        Edge embedding features (the encoder's edge_embed_dim).
    hidden_layers, activation, dropout
        Of the dense network.
    """

    def __init__(
        self,
        input_name: str,
        features: list[str],
        variables: list[str],
        output_size: int,
        hidden_layers: list[int] | None = None,
        activation: str = "SiLU",
        dropout: float = 0.0,
    ):
        super().__init__()
        check_edge_features(input_name, features, variables)
        self.input_name = input_name
        self.features = list(features)
        self.output_size = output_size
        self.reads = needed_variables(features)
        self.columns = [variables.index(v) for v in self.reads]
        self.norm = EdgeNorm(features)
        self.net = Dense(
            len(features), output_size, hidden_layers, activation, final_activation=True,
            dropout=dropout,
        )  # fmt: skip

    def _columns(self, x: Tensor) -> dict[str, Tensor]:
        return {v: x[..., c].float() for v, c in zip(self.reads, self.columns)}

    def packed(self, x: Tensor, layout: Packed) -> Tensor:
        """(N, F) raw inputs -> (P, E) for `layout.ordered_pairs()`."""
        i, j = layout.ordered_pairs()
        cols = self._columns(x)
        a = {v: c[i] for v, c in cols.items()}
        b = {v: c[j] for v, c in cols.items()}
        raw = pair_features(a, b, i == j, self.features)
        return self.net(self.norm(raw))

    def padded(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, L, F) raw inputs -> (B, L, L, E) for every pair of slots; `mask` (B, L) marks the
        real ones (None: all), whose pairs alone enter the statistics of the norm."""
        cols = self._columns(x)
        a = {v: c[:, :, None] for v, c in cols.items()}
        b = {v: c[:, None, :] for v, c in cols.items()}
        slots = torch.arange(x.shape[1], device=x.device)
        self_loop = (slots[:, None] == slots[None, :]).expand(x.shape[0], -1, -1)
        valid = None if mask is None else mask[:, :, None] & mask[:, None, :]
        raw = pair_features(a, b, self_loop, self.features)
        return self.net(self.norm(raw, valid))


def merge_packed(
    edges: dict[str, Tensor], layouts: dict[str, Packed], where: dict, merged: Packed
) -> Tensor:
    """Edges of each type's ordered pairs, (P_t, E), placed among the merged token set's
    ordered pairs: (P, E). Pairs of two tokens of different types, or with a register, get a
    zero embedding (their attention bias and gate are then the learned constants of each
    layer; with update_edges, the layers fill them in)."""
    some = next(iter(edges.values()))
    out = some.new_zeros((merged.ordered_pairs()[0].shape[0], some.shape[-1]))
    for name, e in edges.items():
        i, j = layouts[name].ordered_pairs()
        out = out.index_copy(0, merged.pair_index(where[name][i], where[name][j]), e)
    return out


def merge_padded(
    edges: dict[str, Tensor],
    masks: dict[str, Tensor],
    offsets: dict[str, Tensor],
    width: int,
) -> Tensor:
    """Edges of each type on its own padded grid, (B, L_t, L_t, E) with (B, L_t) masks of the
    real slots (packed to the front of each jet), placed on the merged grid (B, W, W, E): slot p
    of type t in jet b is merged slot ``offsets[t][b] + p``. Pairs across types and with
    registers get a zero embedding."""
    some = next(iter(edges.values()))
    n_jets, size = some.shape[0], some.shape[-1]
    out = some.new_zeros((n_jets, width * width, size))
    for name, e in edges.items():
        mask = masks[name]
        e = e * (mask[:, :, None] & mask[:, None, :])[..., None].to(e.dtype)
        length = e.shape[1]
        slot = (offsets[name][:, None] + torch.arange(length, device=e.device)).clamp(max=width - 1)
        flat = (slot[:, :, None] * width + slot[:, None, :]).reshape(n_jets, -1, 1)
        out = out.scatter_add(1, flat.expand(-1, -1, size), e.reshape(n_jets, -1, size))
    return out.view(n_jets, width, width, size)


def merge_blocks(edges: dict[str, Tensor], slices: dict[str, slice], width: int) -> Tensor:
    """Edges of each type, (B, n_t, n_t, E), as diagonal blocks of the merged grid (B, W, W, E)
    (the export path: every slot is real, types side by side)."""
    some = next(iter(edges.values()))
    out = some.new_zeros((some.shape[0], width, width, some.shape[-1]))
    for name, e in edges.items():
        out[:, slices[name], slices[name]] = e
    return out


class EdgeSet(nn.Module):
    """The edge embeddings of every constituent type with edge features, assembled for the
    encoder's token set.

    Parameters
    ----------
    nets
        One `EdgeEmbedding` per type.
    constituents
        All constituent types, in the order they are merged.
    """

    def __init__(self, nets: dict[str, EdgeEmbedding], constituents: list[str]):
        super().__init__()
        self.nets = nn.ModuleDict(nets)
        self.constituents = list(constituents)

    def forward(
        self,
        raw: dict[str, Tensor],
        layouts: dict,
        merged,
        where: dict,
        padded: bool = False,
        num_registers: int = 0,
    ) -> Tensor:
        """Edges of the merged token set, from each type's raw inputs.

        Parameters
        ----------
        raw
            Raw inputs per type: (N_t, F_t) packed, or (B, n_t, F_t) with every slot real.
        layouts, merged, where
            Each type's layout, the merged one, and where each type's tokens went in it (as
            `SaltModel` merges them; None: the merged set is the type's own).
        padded
            Packed inputs, but the encoder runs on every stored slot (``attention: padded``):
            the edges are computed for every pair of slots, as the upstream implementation does.
        num_registers
            Registers at the end of each jet (export path).

        Returns
        -------
        (P, E) for the merged layout's ordered pairs (packed); (B, W, W, E) otherwise.
        """
        names = list(self.nets)
        alone = where.get(names[0]) is None  # one type, no registers: no placing needed
        if isinstance(merged, Packed) and not padded:
            edges = {n: self.nets[n].packed(raw[n], layouts[n]) for n in names}
            return edges[names[0]] if alone else merge_packed(edges, layouts, where, merged)
        if not isinstance(merged, Packed):  # export: every slot real, types side by side
            edges = {n: self.nets[n].padded(raw[n]) for n in names}
            if alone:
                return edges[names[0]]
            width = sum(raw[n].shape[1] for n in self.constituents) + num_registers
            return merge_blocks(edges, where, width)
        edges, masks, offsets = {}, {}, {}
        offset = torch.zeros_like(merged.lengths)
        for n in self.constituents:
            if n in self.nets:
                x, masks[n] = layouts[n].pad(raw[n], length=layouts[n].width)
                edges[n], offsets[n] = self.nets[n].padded(x, masks[n]), offset
            offset = offset + layouts[n].lengths
        return edges[names[0]] if alone else merge_padded(edges, masks, offsets, merged.width)


def build_edges(
    features: dict[str, list[str]],
    configs: list[dict],
    variables: dict[str, list[str]],
    constituents: list[str],
    edge_dim: int,
) -> EdgeSet | None:
    """The model's `EdgeSet` from the edge features per type (data.edge_constructors) and the
    edge init nets, checked against each other and the encoder's edge_embed_dim; None: no edges.
    """
    nets: dict[str, EdgeEmbedding] = {}
    for config in configs:
        config = dict(config)
        name = config.pop("input_name", None)
        if name not in constituents:
            raise SaltError(
                f"edge init net for '{name}': it is not a constituent type of this model "
                f"(those with init nets: {', '.join(constituents) or 'none'})."
            )
        if name not in features:
            raise SaltError(
                f"edge init net for '{name}', but no edge features of '{name}' are computed: "
                f"add data.edge_constructors: [{{input_name: {name}, edge_features: [dR, ...]}}] "
                "or remove the edge init net."
            )
        if name in nets:
            raise SaltError(f"two edge init nets for '{name}'.")
        config.pop("input_size", None)  # the number of edge features
        nets[name] = EdgeEmbedding(name, list(features[name]), variables[name], **config)
    missing = [n for n in features if n not in nets]
    if missing:
        raise SaltError(
            f"edge features of {missing} (data.edge_constructors) have no edge init net: add "
            f"model edge_init_nets: [{{input_name: {missing[0]}, output_size: ...}}]."
        )
    if nets and not edge_dim:
        raise SaltError(
            "edge init nets embed edge features, but the encoder takes no edges: set the "
            "Transformer's edge_embed_dim to their output_size."
        )
    if edge_dim and not nets:
        raise SaltError(
            f"the encoder has edge_embed_dim {edge_dim} but the model has no edge init nets (and "
            "data.edge_constructors): add them, or set edge_embed_dim: 0."
        )
    for name, net in nets.items():
        if net.output_size != edge_dim:
            raise SaltError(
                f"edge init net '{name}' has output_size {net.output_size} but the encoder's "
                f"edge_embed_dim is {edge_dim}; make them equal."
            )
    return EdgeSet(nets, constituents) if nets else None


def edge_dim_of(encoder: nn.Module | None) -> int:
    """The encoder's edge embedding size (0: it takes no edges)."""
    return int(getattr(encoder, "edge_embed_dim", 0) or 0)
