"""torchrun / DDP helpers: process group set-up and one gradient all-reduce per round.

The trainer does not wrap the model in ``DistributedDataParallel``: each round runs several
backward passes through different heads, and DDP's bucketed hooks would either all-reduce after
every task or need ``no_sync`` plus unused-parameter detection. Instead the accumulated shared
gradients are flattened into one buffer and all-reduced once per round, which is what DDP does
with ``no_sync`` on all but the last backward, without its bookkeeping. A head's gradient is
all-reduced once too, right after its task (it is final then, and the head is on the device,
which nccl needs), so a round costs one collective for the trunk plus one per task. Weights are broadcast
from rank 0 at start, so every rank steps the same model with the same averaged gradient.

Launch: ``torchrun --nproc-per-node 2 -m medfoundry pretrain --database DB --out RUN``
(gloo on CPU, nccl on CUDA; each rank uses ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_distributed", "all_reduce_gradients", "broadcast_module", "barrier", "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1).

    Returns a single-process context when the variables are absent. Uses nccl for CUDA and
    gloo for CPU; reuses a group that is already initialised.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistContext()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    local = int(os.environ.get("LOCAL_RANK", rank))
    return DistContext(rank=rank, world_size=dist.get_world_size(), local_rank=local, backend=dist.get_backend())


def all_reduce_gradients(params: Iterable[torch.nn.Parameter], ctx: DistContext) -> None:
    """Average ``.grad`` over processes with one collective (grads absent everywhere are skipped).

    Every rank must pass the same parameters in the same order with the same gradients present
    (true here: all ranks run the same tasks each round).
    """
    if not ctx.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def broadcast_module(module: torch.nn.Module, ctx: DistContext, device: torch.device | None = None,
                     src: int = 0) -> None:
    """Copy parameters and buffers of rank ``src`` to every rank.

    With nccl, tensors that live on the CPU (inactive heads) travel through ``device``.
    """
    if not ctx.enabled:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if ctx.backend == "nccl" and t.device.type == "cpu" and device is not None:
                tmp = t.data.to(device)
                dist.broadcast(tmp, src=src)
                t.data.copy_(tmp.cpu())
            else:
                dist.broadcast(t.data, src=src)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group once every rank has arrived here.

    Without the barrier a fast rank tears down its gloo pairs (and rank 0 the TCP store) while
    a slower one is still inside its last collective or its own teardown; on a loaded machine
    the slow rank then aborts in C++ ("terminate called without an active exception", exit -6).
    """
    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
