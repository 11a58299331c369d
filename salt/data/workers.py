"""Dataloader worker processes: how many to start, and how each lives and dies with the run."""

from __future__ import annotations

import ctypes
import os
import signal
import threading


def die_with_parent(_worker_id: int) -> None:
    """Worker init: have the kernel kill this worker when the main process dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: torch's own watchdog still ends orphaned workers
        pass
    # A SIGTERM or Ctrl-C sent to every process (a terminal, scancel, `kill` of the group) must
    # not kill the workers: torch would abort the batch in flight and salt could save no
    # checkpoint; the main process stops them once it has saved (salt.callbacks.interrupt). A
    # SIGTERM from the main process itself (torch's or multiprocessing's shutdown) still ends the
    # worker at once, as torch's own handler would.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def end_when_the_parent_says_so() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)

    threading.Thread(target=end_when_the_parent_says_so, daemon=True).start()


# Most worker processes `auto` starts. The upstream loader on a 16-core H100 node gained from 0
# to 15 workers (209k to 603k jets/s, shared/PITFALLS.md); more processes than that only add
# memory and start-up time for a few batches each.
MAX_AUTO_WORKERS = 15
# Fewest CPUs (per training process) for which `auto` starts workers on a GPU run: on 2 cores
# the read-ahead thread of the training process beats 1 and 2 workers by 1.5-2.5x (README,
# benchmarks/dataloader.py), since moving a batch between processes costs more than reading it.
MIN_CPUS_FOR_WORKERS = 4


def auto_workers(cpus: int, on_gpu: bool) -> int:
    """The workers `data.num_workers: auto` starts for a process that may use `cpus` CPUs.

    A CPU run keeps 0 (read-ahead in the training process): its own compute wants every core. A
    GPU run with at least `MIN_CPUS_FOR_WORKERS` CPUs reads with all of them but one (left to the
    training process, which feeds the GPU), at most `MAX_AUTO_WORKERS`.
    """
    if not on_gpu or cpus < MIN_CPUS_FOR_WORKERS:
        return 0
    return min(cpus - 1, MAX_AUTO_WORKERS)


def worker_advice(num_workers: int, cpus: int, on_gpu: bool) -> str | None:
    """A warning about `data.num_workers` for a run with `cpus` usable CPUs, or None."""
    if num_workers > cpus:
        return (
            f"data.num_workers = {num_workers} but this process may use {cpus} CPUs: the "
            f"workers will compete for them. Use --data.num_workers {cpus} or fewer (or auto)."
        )
    suggested = auto_workers(cpus, on_gpu)
    if num_workers == 0 and suggested:
        return (
            f"data.num_workers = 0 on a GPU run with {cpus} CPUs: the GPU may wait for data. "
            f"Try --data.num_workers auto (here: {suggested})."
        )
    return None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which batch systems restrict)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
