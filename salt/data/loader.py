"""SaltDataLoader: batches in the sampler's order, with the reading overlapped with training.

One process reads fastest when HDF5 is never idle: a background thread does nothing but the
raw reads (`JetDataset.read_raw`; HDF5 releases the GIL while it reads and decompresses), up to
`depth` batches ahead into buffers it reuses, while the consumer converts each batch
(`JetDataset.convert`). With `benchmarks/dataloader.py` on a 2-core machine (1M-jet LZ4 file,
GN2's inputs, batches of 1000, no workers): reading and converting in turn delivers ~57% of the
bare read rate, this split ~80%. A pool of threads that each read and convert whole batches
does worse than the split: it leaves HDF5 idle while all of them convert.

On a GPU the loader also prepares what the training step would otherwise ask the device for:
each batch carries the host-side sizes of its packed layouts (`salt.models.layout.host_sizes`,
computed in the worker that made the batch, or here), is pinned, and is copied to the GPU one
batch ahead on a side stream (`salt.data.prefetch`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils import signal_handling
from torch.utils.data._utils.pin_memory import pin_memory

from salt.data.dataset import JetDataset, _to_tensors
from salt.data.prefetch import to_device_ahead
from salt.errors import SaltError
from salt.models.layout import host_sizes


def read_ahead(dataset: JetDataset, order: Iterable[int], depth: int = 3) -> Iterator[dict]:
    """Batches `dataset.read_batch(i)` for `i` in `order`, raw reads done ahead by a thread.

    The thread holds no handle of its own beyond the dataset's (per process), starts with the
    first batch asked for and is joined when the iteration ends, fails or is abandoned
    (closing the generator, or letting it be collected).
    """
    ready: queue.Queue = queue.Queue()
    free: queue.Queue = queue.Queue()
    for _ in range(depth):
        free.put(dataset.new_buffers())
    stop = threading.Event()

    def read() -> None:
        try:
            for index in order:
                buffers = free.get()
                if stop.is_set():
                    return
                ready.put((index, dataset.read_raw(index, buffers), buffers))
        except BaseException as err:  # raised again in the consumer
            ready.put(err)
            return
        ready.put(None)

    # a daemon: an abandoned, never collected iteration must not hold up the interpreter's exit
    thread = threading.Thread(target=read, name="salt-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            index, raw, buffers = item
            batch = dataset.convert(index, raw)
            free.put(buffers)
            yield batch
    finally:
        stop.set()
        free.put(None)  # wakes the thread if it waits for a buffer
        thread.join()


class SaltDataLoader(DataLoader):
    """The training dataloader: whole batches in the sampler's order.

    * With ``num_workers == 0`` and ``read_ahead > 0``, a background thread reads that many
      batches ahead (`read_ahead`); the sampler knows the epoch's order in advance.
    * With workers, each batch crosses to the training process as plain numpy arrays through the
      worker's pipe, which for these few mid-sized arrays is cheaper than torch's one
      shared-memory file per tensor; the tensors are rebuilt here without a copy.
    * Pinning (``pin_memory``, GPU runs only) happens here, on whole batches.
    * With `constituents` (the types the model encodes together), every batch carries
      ``batch["sizes"]``: the host ints its packed layouts need (`host_sizes`), computed from the
      host copy of ``valid`` (in the worker, with workers); the model's own hook then skips.
    * With a CUDA `device`, batches are copied there one batch ahead of the consumer
      (`salt.data.prefetch.to_device_ahead`): Lightning finds them on the device already.
    * The sampler's indices carry their epoch (`salt.data.sampler.BatchIndex`) to wherever the
      batch is read, so its random draws (transforms, parameters) are the same in a worker, in
      the read-ahead thread and after a resume.

    Lightning checkpoints it: a checkpoint written mid-epoch (on SIGTERM, say) resumes with the
    batches that epoch had not yet seen, instead of starting the epoch over.
    """

    def __init__(
        self,
        dataset: JetDataset,
        *args,
        num_workers: int = 0,
        pin_memory: bool = False,
        read_ahead: int = 0,
        progress=None,
        constituents: list[str] | None = None,
        device: torch.device | str | None = None,
        **kwargs,
    ):
        self.read_ahead = read_ahead if num_workers == 0 else 0
        self.pin_batches = pin_memory
        self.constituents = None if constituents is None else list(constituents)
        self.device = None if device is None else torch.device(device)
        if num_workers > 0:
            kwargs["collate_fn"] = WorkerCollate(self.constituents)
        super().__init__(dataset, *args, num_workers=num_workers, pin_memory=False, **kwargs)
        self._progress = progress  # callable: batches of the current epoch already trained on

    def __iter__(self) -> Iterator[dict]:
        if self.read_ahead > 0:
            # the sampler hands out this epoch's order (after any resume skip) in one go
            batches = read_ahead(self.dataset, list(self.sampler), self.read_ahead)
            host = self._finish(batches, to_tensors=True)
        else:
            host = self._finish(super().__iter__(), to_tensors=self.num_workers > 0)
        if self.device is None:
            return host
        return to_device_ahead(host, self.device)

    def _finish(self, batches: Iterator[dict], to_tensors: bool) -> Iterator[dict]:
        try:
            for batch in batches:
                if to_tensors:
                    batch = _to_tensors(batch)
                if self.constituents is not None and batch["valid"] and "sizes" not in batch:
                    batch["sizes"] = host_sizes(batch["valid"], self.constituents)
                yield pin_memory(batch) if self.pin_batches else batch
        except Exception as err:
            if self.num_workers > 0:
                _kill_workers(batches)
                self._iterator = None  # a next epoch starts fresh workers
            if isinstance(err, SaltError):
                # torch re-raises a worker's error with the worker's traceback folded into the
                # message; a user should see only what went wrong
                raise SaltError(_worker_message(str(err))) from None
            raise
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops a read-ahead thread now, not when collected

    def state_dict(self) -> dict:
        done = self._progress() if self._progress is not None else 0
        return {"epoch": self.sampler.epoch, "batches_done": int(done)}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.epoch = int(state["epoch"])
        done = int(state["batches_done"])
        # a checkpoint written at the end of an epoch has nothing left to skip
        self.sampler.skip = done if done < len(self.sampler.order()) else 0


def _kill_workers(iterator) -> None:
    """Stop the workers of a torch multiprocessing iterator now, whatever state they are in.

    After a worker's error torch's own shutdown finds the workers deaf to its request to leave
    and waits 5 s per worker before it terminates them; the run is over anyway.
    """
    if getattr(iterator, "_shutdown", True):
        return
    if iterator._worker_pids_set:
        # torch's SIGCHLD handler would take the deaths below for crashes
        signal_handling._remove_worker_pids(id(iterator))
        iterator._worker_pids_set = False
    for worker in iterator._workers:
        if worker.is_alive():
            worker.kill()
            worker.join()
    iterator._shutdown_workers()  # closes the queues; the workers are gone already


class WorkerCollate:
    """Worker-side collate: the batch's tensors as the numpy arrays they wrap (no copy).

    A few mid-sized numpy arrays cross the worker's pipe in one pickle, cheaper than torch's
    one shared-memory file per tensor. With `constituents`, the batch's host sizes are added
    here, in the worker, as plain ints (see `SaltDataLoader`).
    """

    def __init__(self, constituents: list[str] | None = None):
        self.constituents = constituents

    def __call__(self, batch: dict) -> dict:
        if self.constituents is not None and batch["valid"]:
            batch["sizes"] = host_sizes(batch["valid"], self.constituents)
        return _as_numpy(batch)


def _as_numpy(batch):
    if isinstance(batch, dict):
        return {k: _as_numpy(v) for k, v in batch.items()}
    return batch.numpy() if isinstance(batch, torch.Tensor) else batch


def _worker_message(text: str) -> str:
    marker = "SaltError: "
    if "Original Traceback" in text and marker in text:
        return text.rsplit(marker, 1)[1].strip()
    return text
