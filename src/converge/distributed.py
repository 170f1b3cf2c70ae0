"""Data-parallel work under ``torchrun``: which process this is, the process group, and agreement.

``torchrun --nproc-per-node N`` starts N copies of a command and tells each its place through the
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` environment variables. Training splits every batch among
the copies (PyTorch's DistributedDataParallel, gloo on CPU, NCCL on CUDA) and ``converge restore``
splits a folder's images; run without ``torchrun``, everything here describes a single process.

Example::

    torchrun --standalone --nproc-per-node 2 -m converge train configs/dncnn-blind-compact.yaml --run-dir RUN
"""

from __future__ import annotations

import datetime
import functools
import itertools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from converge.errors import ConfigError

# How long wait_for_all waits for the other processes: as long as gloo waits in a collective operation.
_MEETING_TIMEOUT = datetime.timedelta(minutes=30)
# How many times this process has called wait_for_all: each meeting has its own keys in the store.
_meetings = itertools.count()


@dataclass(frozen=True)
class Workers:
    """This process's place among the ``world_size`` processes of one command: ``rank`` in
    ``[0, world_size)``, ``local_rank`` on its machine (its GPU index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes the shared outputs (logs, checkpoints, exports)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        """Whether more than one process shares the work."""
        return self.world_size > 1

    def share(self, items: list) -> list:
        """This process's share of ``items``: every ``world_size``-th one, from its ``rank`` on."""
        return items[self.rank :: self.world_size]


def workers() -> Workers:
    """This process's place, from the variables ``torchrun`` sets (one process without them)."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    values = {name: os.environ.get(name) for name in names}
    if values["WORLD_SIZE"] is None:
        return Workers()
    try:
        rank, world_size = int(values["RANK"]), int(values["WORLD_SIZE"])
        local_rank = int(values["LOCAL_RANK"] if values["LOCAL_RANK"] is not None else rank)
    except (TypeError, ValueError):
        shown = ", ".join(f"{name}={values[name]}" for name in names)
        raise ConfigError(f"cannot read this process's place from {shown}: start it with torchrun") from None
    if not (world_size >= 1 and 0 <= rank < world_size and local_rank >= 0):
        raise ConfigError(f"RANK {rank} does not fit WORLD_SIZE {world_size}: start the processes with torchrun")
    return Workers(rank, world_size, local_rank)


def join(device: torch.device) -> Workers:
    """Join the process group of a ``torchrun`` command (a no-op for one process): gloo for a CPU
    device, NCCL for CUDA. Call :func:`leave` when done."""
    place = workers()
    if place.parallel and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(place.local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return place


def leave() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_of(value: float) -> float:
    """The mean of ``value`` over the processes (``value`` itself for one process)."""
    if not dist.is_initialized():
        return value
    total = _shared_scalar(value)
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()


def any_of(flag: bool) -> bool:
    """Whether ``flag`` is true in any process, so that all processes take the same branch."""
    if not dist.is_initialized():
        return flag
    raised = _shared_scalar(float(flag))
    dist.all_reduce(raised, op=dist.ReduceOp.MAX)
    return bool(raised)


def _shared_scalar(value: float) -> torch.Tensor:
    """``value`` as a one-element tensor where the group's backend reduces (NCCL: this process's GPU)."""
    on_gpu = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    return torch.tensor([value], dtype=torch.float64, device=device)


def gathered(value: object) -> list[object]:
    """``value`` from every process, in rank order (``[value]`` for one process)."""
    if not dist.is_initialized():
        return [value]
    values: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def wait_for_all() -> None:
    """Block until every process reaches this point (a no-op for one process).

    The processes meet through ``torchrun``'s key-value store, not the process group's own
    connections: once past it, no process is inside a collective operation, so one may tear the
    group down (:func:`leave`) while another is still here. A gloo barrier does not promise that: the
    first process out may close a connection its peer is still finishing with, which can abort the
    peer (SIGABRT; gloo issue 155, and once in our CI at the end of a resumed two-process run)."""
    if not dist.is_initialized():
        return
    key = f"converge/meeting/{next(_meetings)}"
    if _store().add(key, 1) == dist.get_world_size():
        _store().set(f"{key}/everyone", "1")
    _store().wait([f"{key}/everyone"])


@functools.cache
def _store() -> dist.TCPStore:
    """A client of the key-value store that ``torchrun`` serves at MASTER_ADDR:MASTER_PORT."""
    address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    return dist.TCPStore(address, port, is_master=False, timeout=_MEETING_TIMEOUT)

