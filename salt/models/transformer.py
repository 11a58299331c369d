"""Transformer encoder over the constituents of each jet (GN2, GN3), with optional registers.

Three ways to place the norms in a layer (``norm_type``):

* ``pre`` (default): ``x + attn(norm(x))``, then ``x + ff(norm(x))``; the stack ends with a norm.
* ``post``: ``norm(x + attn(x))``, then ``norm(x + ff(x))``.
* ``hybrid``: the first layer is pre-norm; later layers attend without a norm in front but with
  RMS-normalised queries, keys and values, then normalise the residual stream before the
  feed-forward block (``y = norm(x); y + ff(y)``). GN3 uses it with RMSNorm.

With edges (``edge_embed_dim``, GN2XE): every ordered pair of a jet's tokens carries an edge
embedding, (P, E) packed or (B, L, L, E) padded, that biases and gates each head's attention
(see salt.models.attention). With ``update_edges`` the edges form a second residual stream:
``e <- e + W s``, where s are the layer's biased attention scores of the pair (one per head),
and each layer reads its edges through a norm (``norm(e)``); the last layer, whose edges would go
nowhere, does not update them. salt-ml replaces the edges by a projection of the scores instead,
which keeps only one number per head of every pair after the first layer; the residual keeps
all E features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from salt.models.attention import MultiheadAttention
from salt.models.stack import FeedForward, LayerStack, make_norm

NORM_TYPES = ("pre", "post", "hybrid")


class EncoderLayer(nn.Module):
    """Self-attention and a feed-forward block, each residual; token-wise parts ignore the layout.

    Parameters
    ----------
    embed_dim, num_heads, ff_dim
        Token features, attention heads, hidden width of the feed-forward block.
    activation, dropout, gated
        Of the feed-forward block (``gated``: a gated linear unit); dropout also follows each block.
    attn_backend, attn_dropout
        Attention kernel (see salt.models.attention) and dropout on the attention weights.
    norm, norm_type
        ``LayerNorm`` or ``RMSNorm``; ``pre``, ``post`` or ``hybrid`` (see the module docstring).
    depth
        Position of the layer in the stack (the hybrid scheme treats the first layer apart).
    edge_dim, update_edges
        Edge embedding features (0: no edges) and whether the layer updates the edges.
    edge_norm
        Read the edges through a norm (in stacks whose edges change from layer to layer).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ff_dim: int,
        activation: str = "SiLU",
        dropout: float = 0.0,
        attn_backend: str = "auto",
        norm: str = "LayerNorm",
        norm_type: str = "pre",
        gated: bool = False,
        attn_dropout: float = 0.0,
        depth: int = 0,
        edge_dim: int = 0,
        update_edges: bool = False,
        edge_norm: bool = False,
    ):
        super().__init__()
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type '{norm_type}' is not one of {NORM_TYPES}")
        self.mode = "pre" if norm_type == "hybrid" and depth == 0 else norm_type
        qkv_norm = self.mode == "hybrid"
        self.attn = MultiheadAttention(
            embed_dim, num_heads, attn_backend, attn_dropout, qk_norm=qkv_norm, v_norm=qkv_norm,
            edge_dim=edge_dim, update_edges=update_edges,
        )  # fmt: skip
        self.edge_norm = make_norm(norm, edge_dim) if edge_norm else None
        self.ff = FeedForward(embed_dim, ff_dim, activation, dropout, gated)
        self.norm1 = make_norm(norm, embed_dim) if self.mode != "hybrid" else nn.Identity()
        self.norm2 = make_norm(norm, embed_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, layout, edges: Tensor | None = None):
        """(N, D) packed or (B, L, D) padded -> same shape.

        With `edges` ((P, E) for the layout's ordered pairs, or (B, L, L, E)): returns
        ``(x, edges)``, the edges updated when the layer updates them.
        """
        h = self.norm1(x) if self.mode == "pre" else x
        if edges is None:
            attend, update = self.attn(h, layout), None
        else:
            seen = edges if self.edge_norm is None else self.edge_norm(edges)
            attend, update = self.attn(h, layout, seen)
        if self.mode == "pre":
            x = x + self.drop(attend)
            x = x + self.drop(self.ff(self.norm2(x)))
        elif self.mode == "post":
            x = self.norm1(x + self.drop(attend))
            x = self.norm2(x + self.drop(self.ff(x)))
        else:
            x = self.norm2(x + self.drop(attend))
            x = x + self.drop(self.ff(x))
        if edges is None:
            return x
        return x, (edges if update is None else edges + update)


class Transformer(LayerStack):
    """A stack of encoder layers.

    Parameters
    ----------
    embed_dim
        Token features; the init nets must produce this many.
    num_layers
        Encoder layers.
    num_heads
        Attention heads per layer.
    out_dim
        Features out (a linear projection after the last layer); default embed_dim.
    ff_dim
        Hidden width of each feed-forward block; default 2 * embed_dim.
    activation
        torch.nn class name of the feed-forward activation.
    dropout
        Dropout in and after the feed-forward blocks and after attention.
    final_norm
        Normalise after the last layer.
    attn_backend
        ``auto``, ``math``, ``sdpa`` or ``varlen`` (see salt.models.attention).
    norm
        ``LayerNorm`` or ``RMSNorm``.
    norm_type
        ``pre``, ``post`` or ``hybrid`` (see the module docstring).
    gated
        Gated linear units in the feed-forward blocks.
    attn_dropout
        Dropout on the attention weights.
    num_registers
        Learned tokens appended to every jet's constituents (arXiv:2309.16588): the encoder can
        store jet-wide information there, and no jet is ever empty. `SaltModel` adds them.
    drop_registers
        Leave the registers out of the pooling (they always stay out of constituent tasks).
    edge_embed_dim
        Features of the edge embedding of each pair of tokens (0: no edges). `SaltModel` builds
        the edges from its edge init nets; pairs with a register (or across constituent types)
        start from a zero embedding.
    update_edges
        Update the edges in every layer (see the module docstring).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 8,
        out_dim: int | None = None,
        ff_dim: int | None = None,
        activation: str = "SiLU",
        dropout: float = 0.0,
        final_norm: bool = True,
        attn_backend: str = "auto",
        norm: str = "LayerNorm",
        norm_type: str = "pre",
        gated: bool = False,
        attn_dropout: float = 0.0,
        num_registers: int = 0,
        drop_registers: bool = False,
        edge_embed_dim: int = 0,
        update_edges: bool = False,
    ):
        if num_registers < 0:
            raise ValueError(f"num_registers must be 0 or more, got {num_registers}")
        if update_edges and not edge_embed_dim:
            raise ValueError("update_edges needs edges: set edge_embed_dim")
        layers = [
            EncoderLayer(
                embed_dim,
                num_heads,
                ff_dim or 2 * embed_dim,
                activation,
                dropout,
                attn_backend,
                norm,
                norm_type,
                gated,
                attn_dropout,
                depth,
                edge_embed_dim,
                # the last layer's edges would go nowhere (and leave unused parameters to DDP)
                update_edges and depth < num_layers - 1,
                update_edges,
            )
            for depth in range(num_layers)
        ]
        super().__init__(layers, embed_dim, out_dim, final_norm, norm)
        self.num_registers = num_registers
        self.drop_registers = drop_registers
        if num_registers:
            # small values: registers start as near-empty slots the encoder learns to fill
            self.registers = nn.Parameter(torch.randn(num_registers, embed_dim) * 1e-4)
        self.edge_embed_dim = edge_embed_dim
        self.update_edges = update_edges

    def forward(
        self,
        x: Tensor,
        layout,
        edges: Tensor | None = None,
        conditions: list[Callable[[Tensor], Tensor]] | None = None,
    ) -> Tensor:
        """(N, embed_dim) packed or (B, L, embed_dim) padded -> (..., out_dim).

        `edges`: (P, edge_embed_dim) for the layout's ordered pairs, or (B, L, L, edge_embed_dim).
        `conditions`: one function per layer applied to the tokens entering it (the
        featurewise transforms of salt.models.featurewise).
        """
        if edges is not None and not self.edge_embed_dim:
            raise ValueError("edges given to a Transformer built without edge_embed_dim")
        for depth, layer in enumerate(self.layers):
            if conditions is not None:
                x = conditions[depth](x)
            if edges is None:
                x = layer(x, layout)
            else:
                x, edges = layer(x, layout, edges)
        return self.out_proj(self.final_norm(x))
