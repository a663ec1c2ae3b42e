"""Every process-group call lives here: one code path for 1 process or `torchrun` with many.

`init_distributed` reads the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK). Without it the
run is a world of one and every collective below is a no-op, so callers never branch on it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as tdist
from torch import nn

from mrc.errors import MRCError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints, writes files and decodes."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise MRCError(f"environment variable {name}={value!r} is not an integer; launch with torchrun "
                       f"or unset it") from None


def init_distributed(*, no_cuda: bool = False, timeout_s: int = 1800) -> DistContext:
    """Join the torchrun process group when launched by torchrun; pick this rank's device.

    timeout_s bounds every collective, so a rank that died makes the others fail with an error
    instead of hanging forever (torchrun also stops the remaining workers when one exits).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() and not no_cuda
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise MRCError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                           f"lower --nproc_per_node")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                 timeout=datetime.timedelta(seconds=timeout_s),
                                 **({"device_id": device} if use_cuda else {}))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def destroy(ctx: DistContext) -> None:
    """Leave the process group (safe to call in a world of one)."""
    if ctx.is_distributed and tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        tdist.barrier()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """In-place sum over ranks; returns the tensor for chaining."""
    if ctx.is_distributed:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """In-place max over ranks; returns the tensor for chaining."""
    if ctx.is_distributed:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.MAX)
    return tensor


def gather_to_main(obj: Any, ctx: DistContext) -> list[Any] | None:
    """Collect one picklable object per rank on rank 0 (ordered by rank); None elsewhere.

    Only our own processes' objects travel this way (never data from disk).
    """
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    tdist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's object on every rank."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel when several ranks, the model itself otherwise."""
    if not ctx.is_distributed:
        return model
    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model under a DDP wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def maybe_no_sync(model: nn.Module, skip_sync: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on non-final accumulation micro-steps."""
    if skip_sync and isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield
