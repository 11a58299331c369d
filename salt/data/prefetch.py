"""Batches delivered on the GPU, the next one already on its way while the current one trains.

`to_device_ahead` wraps an iterator of host batches (tensors, pinned for an asynchronous copy,
and anything else, such as the host-side ``sizes``, left as it is). On a CUDA device each batch
is copied with ``non_blocking`` on a side stream and an event marks the end of its copy; when the
batch is handed over, the consumer's stream waits for that event (on the device: the host never
waits) and every tensor is recorded on the consumer's stream, so that the caching allocator does
not hand its memory to the side stream's next copies while kernels that read it are still
queued. Lightning's own transfer then finds the tensors on the device already: ``Tensor.to`` of
a tensor on its device returns it as it is.

Lightning fetches one batch ahead of the step it runs; together with `depth` batches copied
ahead here, the copy of a batch overlaps at least one whole training step.

On any other device (CPU tests), tensors are copied plainly, in the same order of events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

import torch


def map_tensors(batch, fn: Callable[[torch.Tensor], torch.Tensor]):
    """The nested dicts of `batch` with `fn` applied to every tensor; other values kept."""
    if isinstance(batch, dict):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    return fn(batch) if isinstance(batch, torch.Tensor) else batch


class _CudaTransport:
    """Copies on a side stream; the consumer's stream waits for each batch on the device."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def send(self, batch: dict) -> tuple[dict, torch.cuda.Event]:
        # host tensors have no producer on the device: the copy need not wait for the consumer
        with torch.cuda.stream(self.stream):
            moved = map_tensors(batch, lambda t: t.to(self.device, non_blocking=True))
            done = torch.cuda.Event()
            done.record(self.stream)
        return moved, done

    def receive(self, moved: dict, done: torch.cuda.Event) -> dict:
        consumer = torch.cuda.current_stream(self.device)
        consumer.wait_event(done)
        map_tensors(moved, lambda t: _record(t, consumer))
        return moved


def _record(tensor: torch.Tensor, stream: torch.cuda.Stream) -> torch.Tensor:
    if tensor.device.type == "cuda":
        tensor.record_stream(stream)
    return tensor


class _PlainTransport:
    """Synchronous copies, for devices without streams (and for testing the order of events)."""

    def __init__(self, device: torch.device):
        self.device = device

    def send(self, batch: dict) -> tuple[dict, None]:
        return map_tensors(batch, lambda t: t.to(self.device, copy=True)), None

    def receive(self, moved: dict, done: None) -> dict:
        return moved


def to_device_ahead(
    batches: Iterable[dict], device: torch.device | str, depth: int = 1
) -> Iterator[dict]:
    """`batches` with their tensors on `device`, copies of the next `depth` batches in flight.

    Batch k is handed over only after the copy of batch k + `depth` has been started, so that
    copy runs while batch k trains. The order and the content of the batches do not change.
    Closing the returned generator closes `batches` (a read-ahead thread or workers stop).
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    device = torch.device(device)
    transport = _CudaTransport(device) if device.type == "cuda" else _PlainTransport(device)
    pending: deque = deque()
    iterator = iter(batches)
    try:
        for batch in iterator:
            pending.append(transport.send(batch))
            if len(pending) > depth:
                yield transport.receive(*pending.popleft())
        while pending:
            yield transport.receive(*pending.popleft())
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
