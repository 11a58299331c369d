"""How the constituents of a batch of jets are laid out, and the set operations on each layout.

Two layouts, one interface, so that every encoder, pooling and task is written once:

* `Packed`: only the valid constituents, jet after jet: ``x`` is ``(N, ...)`` with N the number of
  valid constituents in the batch. This is the training layout: no compute goes to padding.
* `Padded`: ``x`` is ``(B, L, ...)`` with a mask ``(B, L)`` (True = valid), or no mask when every
  slot is valid (one jet at a time, as ONNX runs it).

Both offer `pad`/`unpad` (to and from a padded view), `sum` and `softmax` over the constituents of
each jet, `attention`, and the pairs of constituents within a jet: unordered pairs i < j (for
vertexing), and ordered pairs (i, j) including i == j (edges, `biased_attention`). The packed
layout lists the ordered pairs of valid constituents only, sum over jets of n^2 rows (P); the
padded one holds them as a (B, L, L) grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from salt.models.attention import (
    attend,
    attend_biased,
    attend_pairs,
    attend_varlen,
    segment_softmax,
    varlen_usable,
)


def _neg_fill(scores: Tensor) -> float:
    # a finite fill keeps a jet whose every slot is masked finite (uniform weights), where -inf
    # would give NaN; exp(min - max) is still exactly 0 next to any valid entry
    return torch.finfo(scores.dtype).min


class Packed:
    """Valid constituents packed jet after jet.

    Parameters
    ----------
    valid
        (B, T) bool, True for a real constituent; the packed order is slot order within a jet.
    lengths
        (B,) constituents per jet, instead of `valid` (for token sets that `SaltModel` builds,
        such as several constituent types and registers merged per jet).
    n_tokens, max_len
        N and the longest jet, when the caller knows them (reading them off a device tensor
        waits for the device).
    width
        Slots per jet of the padded form (default: T of `valid`, else the longest jet).
    n_pairs, n_ordered_pairs
        Number of within-jet pairs i < j, and of ordered pairs (i, j) including i == j, when the
        caller knows them (see `host_sizes`).
    """

    def __init__(
        self,
        valid: Tensor | None = None,
        *,
        lengths: Tensor | None = None,
        n_tokens: int | None = None,
        max_len: int | None = None,
        width: int | None = None,
        n_pairs: int | None = None,
        n_ordered_pairs: int | None = None,
    ):
        if (valid is None) == (lengths is None):
            raise ValueError("Packed takes exactly one of valid and lengths")
        self.valid = valid
        self.lengths = valid.sum(1) if valid is not None else lengths  # (B,)
        self.n_jets = self.lengths.shape[0]
        self.cu_seqlens = F.pad(self.lengths.cumsum(0), (1, 0)).to(torch.int32)  # (B+1,)
        self.n_tokens = int(self.cu_seqlens[-1]) if n_tokens is None else n_tokens
        if max_len is None:
            max_len = int(self.lengths.max()) if self.n_jets else 0
        self.max_len = max_len
        self.width = width or (valid.shape[1] if valid is not None else max_len)
        device = self.lengths.device
        jets = torch.arange(self.n_jets, device=device)
        self.batch = torch.repeat_interleave(jets, self.lengths, output_size=self.n_tokens)  # (N,)
        self.position = (
            torch.arange(self.n_tokens, device=device) - self.cu_seqlens[self.batch].long()
        )  # (N,)
        self.n_pairs = n_pairs
        self.n_ordered_pairs = n_ordered_pairs
        self._pairs: tuple[Tensor, Tensor] | None = None
        self._ordered: tuple[Tensor, Tensor] | None = None
        self._slots: tuple[int, Tensor, Tensor] | None = None

    # ----------------------------------------------------------------------------- layout
    def pad(self, x: Tensor, length: int | None = None) -> tuple[Tensor, Tensor]:
        """(N, ...) -> ((B, L, ...) zero-padded, (B, L) mask); L = longest jet unless given."""
        length = self.max_len if length is None else length
        out = x.new_zeros((self.n_jets, length, *x.shape[1:]))
        out[self.batch, self.position] = x
        mask = torch.arange(length, device=x.device)[None, :] < self.lengths[:, None]
        return out, mask

    def unpad(self, x: Tensor) -> Tensor:
        """(B, L, ...) -> (N, ...)."""
        return x[self.batch, self.position]

    def scatter(self, x: Tensor, fill: float = 0.0) -> Tensor:
        """(N, ...) -> (B, T, ...) in the slots of the original `valid` layout."""
        out = x.new_full((*self.valid.shape, *x.shape[1:]), fill)
        out[self.valid] = x
        return out

    def per_token(self, jet_values: Tensor, like: Tensor | None = None) -> Tensor:
        """(B, F) -> (N, F): each constituent gets its jet's value."""
        return jet_values[self.batch]

    # ----------------------------------------------------------------------------- set ops
    def sum(self, x: Tensor) -> Tensor:
        """(N, ...) -> (B, ...): sum over each jet's constituents (0 for an empty jet)."""
        out = x.new_zeros((self.n_jets, *x.shape[1:]))
        return out.index_add(0, self.batch, x)

    def mean(self, x: Tensor) -> Tensor:
        """(N, ...) -> (B, ...)."""
        counts = self.lengths.clamp(min=1).to(x.dtype)
        return self.sum(x) / counts.view(-1, *([1] * (x.dim() - 1)))

    def softmax(self, scores: Tensor) -> Tensor:
        """(N, H) -> (N, H): softmax over the constituents of each jet."""
        return segment_softmax(scores, self.batch, self.n_jets)

    def attention(
        self, q: Tensor, k: Tensor, v: Tensor, backend: str = "auto", dropout: float = 0.0
    ) -> Tensor:
        """(N, H, d) each -> (N, H, d): attention among the constituents of each jet.

        On a GPU the packed tokens go straight to varlen flash attention. Elsewhere they are padded
        to the batch's longest jet (not to the stored 40 slots), attended, and packed again.
        """
        if varlen_usable(q, backend, dropout):
            return attend_varlen(q, k, v, self.cu_seqlens, self.max_len)
        # at least one slot, even in a batch without any constituent
        length = max(self.max_len, 1)
        (qp, mask), kp, vp = self.pad(q, length), self.pad(k, length)[0], self.pad(v, length)[0]
        # an empty jet would give a row with nothing to attend to: let it see its (zero) first
        # slot; its output is dropped by unpad anyway
        mask = mask.clone()
        mask[:, 0] = True
        out = attend(
            qp.transpose(1, 2),
            kp.transpose(1, 2),
            vp.transpose(1, 2),
            mask,
            "math" if backend == "math" else "sdpa",
            dropout,
        )
        return self.unpad(out.transpose(1, 2))

    def pairs(self) -> tuple[Tensor, Tensor]:
        """Token indices (i, j), i < j, of every pair of constituents within the same jet.

        Pairs are listed jet after jet, and within a jet by j, then i: (0,1), (0,2), (1,2),
        (0,3), ... so that the pairs of a jet of n constituents are the first n(n-1)/2 entries of
        one table for the batch's longest jet. Built without reading anything off the device.
        """
        if self._pairs is None:
            device = self.lengths.device
            counts = self.lengths * (self.lengths - 1) // 2  # (B,)
            n_pairs = self.n_pairs
            if n_pairs is None:
                n_pairs = int(counts.sum())
            jets = torch.arange(self.n_jets, device=device)
            jet = torch.repeat_interleave(jets, counts, output_size=n_pairs)  # (P,)
            first = F.pad(counts.cumsum(0), (1, 0))[jet]
            q = torch.arange(n_pairs, device=device) - first  # pair number within its jet
            i, j = _pair_of(q)
            start = self.cu_seqlens[jet].long()
            self._pairs = (start + i, start + j)
        return self._pairs

    def ordered_pairs(self) -> tuple[Tensor, Tensor]:
        """Token indices (i, j) of every ordered pair of constituents of a jet, i == j included.

        (P,) each, P = sum over jets of n^2: jet after jet, and within a jet row by row (query
        i, then key j), so that pair (a, b) of a jet sits at `pair_index`. Built without reading
        anything off the device when `n_ordered_pairs` is known.
        """
        if self._ordered is None:
            device = self.lengths.device
            counts = self.lengths * self.lengths  # (B,)
            n_pairs = self.n_ordered_pairs
            if n_pairs is None:
                n_pairs = int(counts.sum())
            jets = torch.arange(self.n_jets, device=device)
            jet = torch.repeat_interleave(jets, counts, output_size=n_pairs)  # (P,)
            within = torch.arange(n_pairs, device=device) - self._pair_start()[jet]
            n = self.lengths[jet]
            start = self.cu_seqlens[jet].long()
            self._ordered = (start + within // n, start + within % n)
        return self._ordered

    def _pair_start(self) -> Tensor:
        """(B,) index of each jet's first ordered pair."""
        return F.pad((self.lengths * self.lengths).cumsum(0), (1, 0))[:-1]

    def pair_index(self, a: Tensor, b: Tensor) -> Tensor:
        """Row of the ordered pair of tokens (a, b) in `ordered_pairs`; both of one jet."""
        jet = self.batch[a]
        return self._pair_start()[jet] + self.position[a] * self.lengths[jet] + self.position[b]

    def pair_slots(self) -> tuple[int, Tensor, Tensor]:
        """L (the longest jet), and (P,) each ordered pair's jet and its cell ``i * L + j`` in
        the jet's (L, L) grid when the jets are padded to L."""
        if self._slots is None:
            i, j = self.ordered_pairs()
            jet = self.batch[i]
            self._slots = (self.max_len, jet, self.position[i] * self.max_len + self.position[j])
        return self._slots

    def biased_attention(
        self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, gate: Tensor, dropout: float = 0.0
    ) -> tuple[Tensor, Tensor]:
        """(N, H, d) each, with (P, H) bias and gate per ordered pair -> (N, H, d) and the (P, H)
        biased scores (see `salt.models.attention.attend_pairs`)."""
        _, jet, cell = self.pair_slots()
        qp, kp, vp = (self.pad(t)[0].transpose(1, 2) for t in (q, k, v))
        query, _ = self.ordered_pairs()
        out, scores = attend_pairs(qp, kp, vp, bias, gate, jet, cell, query, self.n_tokens, dropout)
        return self.unpad(out.transpose(1, 2)), scores


def _pair_of(q: Tensor) -> tuple[Tensor, Tensor]:
    """(i, j) of pair number q in the order (0,1), (0,2), (1,2), (0,3), ...: j(j-1)/2 <= q."""
    j = ((1 + torch.sqrt(1 + 8 * q.double())) / 2).floor().long()
    # float rounding can land one off near the edges of a column: step back or forward
    j = j - (j * (j - 1) // 2 > q).long()
    j = j + ((j + 1) * j // 2 <= q).long()
    return q - j * (j - 1) // 2, j


def host_sizes(valid: dict[str, Tensor], merged: list[str] | None = None) -> dict[str, dict]:
    """What the packed layouts need to know before the batch goes to the device, as host ints.

    For each constituent type: its longest jet, its number of within-jet pairs i < j and of
    ordered pairs (i, j) with i == j; for the types in `merged` (encoded together), the longest
    jet and the ordered pairs over all of them (registers not counted). Computed on the CPU copy
    of `valid` (B, T), so the training step never waits for the device to report a size.
    """
    sizes: dict[str, dict] = {}
    lengths = {name: mask.sum(1) for name, mask in valid.items()}
    for name, n in lengths.items():
        sizes[name] = {
            "max_len": int(n.max()) if len(n) else 0,
            "n_pairs": int((n * (n - 1) // 2).sum()),
            "n_ordered_pairs": int((n * n).sum()),
        }
    if merged and len(merged) > 1:
        total = sum(lengths[name] for name in merged)
        sizes["merged"] = {
            "max_len": int(total.max()) if len(total) else 0,
            "n_ordered_pairs": int((total * total).sum()),
        }
    return sizes


class Padded:
    """Constituents in fixed slots.

    Parameters
    ----------
    mask
        (B, L) bool, True for a real constituent; None when every slot is real.
    """

    def __init__(self, mask: Tensor | None = None):
        self.mask = mask

    def pad(self, x: Tensor, length: int | None = None) -> tuple[Tensor, Tensor | None]:
        return x, self.mask

    def unpad(self, x: Tensor) -> Tensor:
        return x

    def per_token(self, jet_values: Tensor, like: Tensor) -> Tensor:
        """(B, F) -> (B, L, F): each slot gets its jet's value; L from `like` (B, L, ...)."""
        return jet_values[:, None, :].expand(-1, like.shape[1], -1)

    def _weights(self, x: Tensor) -> Tensor | None:
        if self.mask is None:
            return None
        return self.mask.to(x.dtype).view(*self.mask.shape, *([1] * (x.dim() - 2)))

    def sum(self, x: Tensor) -> Tensor:
        """(B, L, ...) -> (B, ...)."""
        w = self._weights(x)
        return (x if w is None else x * w).sum(1)

    def mean(self, x: Tensor) -> Tensor:
        if self.mask is None:
            return x.mean(1)
        counts = self.mask.sum(1).clamp(min=1).to(x.dtype)
        return self.sum(x) / counts.view(-1, *([1] * (x.dim() - 2)))

    def softmax(self, scores: Tensor) -> Tensor:
        """(B, L, H) -> (B, L, H): softmax over the slots of each jet, masked."""
        if self.mask is not None:
            scores = scores.masked_fill(~self.mask[..., None], _neg_fill(scores))
        weights = torch.softmax(scores, dim=1)
        if self.mask is not None:
            weights = weights * self.mask[..., None].to(weights.dtype)
        return weights

    def attention(
        self, q: Tensor, k: Tensor, v: Tensor, backend: str = "auto", dropout: float = 0.0
    ) -> Tensor:
        """(B, L, H, d) each -> (B, L, H, d)."""
        backend = "sdpa" if backend in ("auto", "varlen") else backend
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        out = attend(q, k, v, self.mask, backend, dropout)
        return out.transpose(1, 2)

    def pair_mask(self) -> Tensor | None:
        """(B, L, L) bool, True where both slots of a pair are real; None when all are."""
        if self.mask is None:
            return None
        return self.mask[:, :, None] & self.mask[:, None, :]

    def biased_attention(
        self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, gate: Tensor, dropout: float = 0.0
    ) -> tuple[Tensor, Tensor]:
        """(B, L, H, d) each, with (B, L, L, H) bias and gate -> (B, L, H, d) and the
        (B, L, L, H) biased scores."""
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        bias, gate = bias.permute(0, 3, 1, 2), gate.permute(0, 3, 1, 2)
        out, scores = attend_biased(q, k, v, bias, gate, self.mask, dropout)
        return out.transpose(1, 2), scores.permute(0, 2, 3, 1)
