"""torchrun / DistributedDataParallel support: process group, samplers, rank-0-only writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedContext",
    "all_gather_objects",
    "barrier",
    "cleanup_distributed",
    "init_distributed",
    "launch_rank",
    "reduce_mean",
    "unwrap",
    "world_size",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a (possibly single-process) run.

    Attributes:
        rank: Global rank (0 for a single process).
        world_size: Number of processes.
        local_rank: Rank on this node (selects the GPU).
        device: Device this process computes on.
        enabled: True when a process group is running.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    enabled: bool

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs and shows progress bars."""
        return self.rank == 0


def launch_rank() -> int:
    """The global rank ``torchrun`` gave this process (its ``RANK``; 0 without torchrun).

    Readable before the process group starts, e.g. to let only rank 0 lock the output folder.
    """
    return int(os.environ.get("RANK", "0"))


def init_distributed(device: str | None = None) -> DistributedContext:
    """Start the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    NCCL on GPU, gloo on CPU. Each process takes the GPU of its ``LOCAL_RANK``.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).

    Returns:
        The :class:`DistributedContext` of this process.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = launch_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.device(device).type == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible")
    if use_cuda:
        torch_device = torch.device("cuda", local_rank if world_size > 1 else 0)
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device(device)
    if world_size <= 1:
        return DistributedContext(0, 1, 0, torch_device, enabled=False)
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, torch_device, enabled=True)


def cleanup_distributed() -> None:
    """Destroy the process group if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar values over processes (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[key]) for key in keys], device=device)
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.tolist(), strict=True))


def all_gather_objects(item: Any) -> list[Any]:
    """Gather one picklable object from every process (``[item]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [item]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, item)
    return gathered


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
