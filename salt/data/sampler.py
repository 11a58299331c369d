"""Weak shuffling: the order of whole batches changes every epoch; a batch's jets stay together.

Random access to single jets would read every HDF5 chunk many times over; shuffling the order of
contiguous batches keeps reads sequential inside a batch while still mixing the data across
epochs (UPP already shuffles the jets when it writes the file).
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler

from salt.errors import SaltError


class BatchIndex(int):
    """A batch index that also carries the epoch it is drawn for.

    It travels from the sampler to `JetDataset.__getitem__` (through a worker's index queue,
    too), so that what a batch's random draws depend on, the seed, the epoch and the index, is
    known wherever the batch is read. Anything else sees a plain int.
    """

    epoch: int

    def __new__(cls, index: int, epoch: int = 0) -> BatchIndex:
        obj = super().__new__(cls, index)
        obj.epoch = int(epoch)
        return obj

    def __reduce__(self):
        return BatchIndex, (int(self), self.epoch)

    def __repr__(self) -> str:
        return f"BatchIndex({int(self)}, epoch={self.epoch})"


class BatchOrderSampler(Sampler[int]):
    """Yields batch indices of a `JetDataset`, shuffled per epoch from `(seed, epoch)`.

    Under distributed training every rank gets a disjoint share of the same permutation, and all
    ranks the same number of batches (the few left over are dropped for that epoch; a different
    few every epoch when shuffling).

    Parameters
    ----------
    num_batches
        Batches in the dataset.
    shuffle
        Shuffle the batch order each epoch (training) or keep file order (validation, test).
    seed
        Base seed; the permutation of epoch `e` depends only on `(seed, e)`.
    rank, world_size
        This process's share under distributed training.
    """

    def __init__(
        self,
        num_batches: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if world_size > num_batches:
            raise SaltError(
                f"{num_batches} batches cannot be shared among {world_size} processes: use a "
                "smaller batch size, more jets, or fewer devices."
            )
        self.num_batches = num_batches
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        # batches of the current epoch already consumed before a mid-epoch checkpoint
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def order(self, epoch: int | None = None) -> np.ndarray:
        """All batch indices of this rank for `epoch`, before any skip."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_batches)
        else:
            perm = np.arange(self.num_batches)
        per_rank = self.num_batches // self.world_size
        return perm[self.rank :: self.world_size][:per_rank]

    def __iter__(self):
        # a generator: the skip goes to the iterator that is consumed, not to one that is only
        # made (torch's worker iterator makes two and keeps the second)
        order = self.order()[self.skip :]
        self.skip = 0
        epoch = self.epoch
        for index in order.tolist():
            yield BatchIndex(index, epoch)

    def __len__(self) -> int:
        # the whole epoch, also when resuming: Lightning counts the batches already done
        return self.num_batches // self.world_size
