"""Data-parallel training under ``torchrun`` (torch.distributed), and nothing at all without it.

``torchrun --nproc_per_node N -m autocompress train …`` starts N processes; each finds its rank in the environment
``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), joins one process group
(gloo on the CPU, nccl on CUDA, a device per local rank) and trains its share of every batch through
DistributedDataParallel. The split keeps a world of N equal to one process: every rank draws the same permutation
and augmentation from the same seed, takes its contiguous slice of each *global* batch, and scales its summed loss
so that DDP's gradient average is the global batch's mean — the same global batches, learning-rate schedule and
steps per epoch for any N (so a checkpoint resumes with any world size). Only rank 0 writes files; the others wait
on a barrier. A rank that dies makes the others stop with one line instead of hanging (gloo and nccl raise once the
process group's timeout passes).

torch.distributed is used as PyTorch ships it (launcher, process group, DDP); this module only decides the
backend and device per rank and the batch split, which DDP leaves to the caller.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from autocompress.errors import AutoCompressError

TIMEOUT_S = float(os.environ.get("AUTOCOMPRESS_DIST_TIMEOUT_S", "120"))  # how long a rank waits for a lost peer


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job: ``rank`` of ``size`` (1: no torchrun, nothing distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def shard(self, count: int) -> slice:
        """This rank's contiguous part of ``count`` items (the first ranks take one more when it does not divide)."""
        base, extra = divmod(count, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


SINGLE = World()


def world() -> World:
    """The world torchrun set up for this process (``SINGLE`` when not started by torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return SINGLE
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the torchrun job (once per process) and return the world and this rank's device: ``cuda`` becomes
    ``cuda:LOCAL_RANK``; the CPU stays the CPU. Without torchrun: the single world and ``device`` unchanged."""
    here = world()
    if not here.active:
        return here, device
    if device.type == "cuda":
        device = torch.device("cuda", here.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group(
                backend="nccl" if device.type == "cuda" else "gloo",
                timeout=datetime.timedelta(seconds=TIMEOUT_S),
            )
        except Exception as exc:  # a rendezvous that cannot form: a wrong endpoint, a missing node
            raise AutoCompressError(
                f"a torchrun job must reach its rendezvous (MASTER_ADDR {os.environ.get('MASTER_ADDR')}, "
                f"MASTER_PORT {os.environ.get('MASTER_PORT')}), but rank {here.rank} of {here.size} could not "
                f"({type(exc).__name__}); check --rdzv-endpoint / --master-addr and that every node started."
            ) from None
        signal.signal(signal.SIGTERM, _stopped_by_launcher(here))
    return here, device


def _stopped_by_launcher(here: World) -> Any:
    """torchrun ends the other ranks with SIGTERM when one fails: each says so in one line instead of vanishing."""

    def handler(signum: int, frame: Any) -> None:
        raise AutoCompressError(
            f"rank {here.rank} of {here.size} was stopped because another rank of the torchrun job ended (see "
            "torchrun's report for which); resume from the last checkpoint (--resume RUN, or the same export)."
        )

    return handler


def wrap(model: nn.Module, here: World, device: torch.device) -> nn.Module:
    """``model`` under DistributedDataParallel in a torchrun job (parameters broadcast from rank 0), else itself."""
    if not here.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def sum_all(values: list[float], here: World) -> list[float]:
    """``values`` summed over the ranks (themselves without torchrun)."""
    if not here.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    with lost_peers(here):
        dist.all_reduce(tensor)
    return tensor.tolist()


def sum_gradients(module: nn.Module, here: World) -> None:
    """Sum ``module``'s gradients over the ranks (in place): for training that calls sub-networks functionally
    (the adaptive package's union training), where DDP's forward hooks never see the module."""
    if not here.active:
        return
    with lost_peers(here):
        for param in module.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)


def barrier(here: World) -> None:
    """Wait for every rank (no-op without torchrun): rank 0 has written what the others may read next."""
    if here.active:
        with lost_peers(here):
            dist.barrier()


@contextlib.contextmanager
def lost_peers(here: World) -> Iterator[None]:
    """Turn the error a collective raises when a peer rank died (or stopped answering within the timeout) into one
    line that says how to go on."""
    try:
        yield
    except (RuntimeError, dist.DistError) as exc:
        if not here.active:
            raise
        raise AutoCompressError(
            f"every rank of a torchrun job must take part, but rank {here.rank} of {here.size} lost a peer "
            f"({type(exc).__name__} in a collective); the run stopped at its last checkpoint: resume it (--resume "
            "RUN, or the same export) with torchrun or without."
        ) from None


def from_main(value: str, here: World) -> str:
    """Rank 0's ``value`` on every rank (e.g. the run folder it chose; a name with the time in it differs per rank)."""
    if not here.active:
        return value
    box = [value]
    with lost_peers(here):
        dist.broadcast_object_list(box, src=0)
    return str(box[0])


def close(here: World) -> None:
    """Leave the process group (at the end of a command)."""
    if here.active and dist.is_initialized():
        dist.destroy_process_group()
