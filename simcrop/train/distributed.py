"""Process-group set-up from `torchrun` environment variables, and a resumable distributed sampler.

Single process when WORLD_SIZE is unset or 1. Otherwise `init_process_group` from the env
(MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK): NCCL on CUDA, gloo on CPU.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group named by the environment (or stay single-process) and pick the device.

    device: None picks cuda:<LOCAL_RANK> when CUDA is available, else CPU; "cpu" forces CPU (tests).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    cuda = torch.cuda.is_available() and device != "cpu"
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://",
                                rank=rank, world_size=world_size)
    return DistInfo(rank, local_rank, world_size, device)


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a tensor (returned as a new tensor; identity when single-process)."""
    values = values.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any rank (a collective: call it on all ranks)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def parameter_digest(named: dict) -> str:
    """sha256 over the names, dtypes, shapes and bytes of tensors {name: tensor}, in name order."""
    digest = hashlib.sha256()
    for name in sorted(named):
        tensor = named[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def trained_parameters(model: nn.Module) -> dict:
    """The parameters training updates (requires_grad), by name: what DDP keeps equal on every rank.
    (Buffers are not: each rank updates running statistics from its own batch after DDP's broadcast.)"""
    return {name: p for name, p in unwrap(model).named_parameters() if p.requires_grad}


def rank_digests(model: nn.Module) -> list[str]:
    """Every rank's `parameter_digest` of its trained parameters, in rank order (a collective)."""
    own = parameter_digest(trained_parameters(model))
    if not dist.is_initialized():
        return [own]
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, own)
    return digests


def wrap_ddp(model: nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """DDP when distributed, else the model itself. Frozen parameters (requires_grad False) are
    ignored by DDP, so a frozen text encoder needs no `find_unused_parameters`."""
    if not info.distributed:
        return model
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class StepSampler(Sampler):
    """Endless stream of (index, epoch) for one rank, resumable at any sample.

    Each epoch is a permutation of range(n) drawn from a generator seeded with seed + epoch (the same
    on every rank), padded by wrapping to a multiple of world_size and dealt out rank::world_size, as
    `DistributedSampler` does. `start` is the number of samples this rank has already consumed
    (step x batch_size x accumulation): the stream begins there without loading anything.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 start: int = 0):
        if n < 1:
            raise ValueError(f"StepSampler needs at least one sample; got n={n}")
        self.n, self.seed, self.rank, self.world_size = n, int(seed), rank, world_size
        self.shuffle, self.start = shuffle, int(start)
        self.per_rank = math.ceil(n / world_size)

    def epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch)).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            for index in self.epoch_indices(epoch)[offset:]:
                yield index, epoch
            epoch, offset = epoch + 1, 0
