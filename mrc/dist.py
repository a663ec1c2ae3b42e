"""Every process-group call lives here: one code path for 1 process or `torchrun` with many.

`init_distributed` reads the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK). Without it the
run is a world of one and every collective below is a no-op, so callers never branch on it.

A collective that fails because another rank died or stopped answering raises `PeerFailure`.
The type is decided where the collective runs (gloo reports a lost peer as a plain
RuntimeError, NCCL as a DistError), never by reading the message. The stop signals of a
training run (Ctrl-C, a non-finite loss) are agreed on across ranks here too (`StopWatch`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as tdist
from torch import nn

from mrc.errors import MRCError

T = TypeVar("T")


class PeerFailure(MRCError):
    """A collective failed: another rank of the job died, or did not answer within the timeout."""



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


@contextlib.contextmanager
def collective(ctx: DistContext) -> Iterator[None]:
    """Around code whose failure in a job of several ranks means the job lost a peer.

    Out-of-memory is the device's, not the peer's, and passes through unchanged.
    """
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as e:  # tdist.DistError is a RuntimeError too
        if not ctx.is_distributed:
            raise
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PeerFailure(f"rank {ctx.rank}: lost contact with the other ranks ({first_line}); another rank "
                          "failed or stopped answering in time (--dist_timeout), see its error above") from None


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        with collective(ctx):
            tdist.barrier()


def main_first(ctx: DistContext, build: Callable[[], T]) -> T:
    """`build()` on rank 0 first (it fills a cache), then on the other ranks (they reuse it)."""
    result = build() if ctx.is_main else None
    barrier(ctx)
    return result if ctx.is_main else build()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """In-place sum over ranks; returns the tensor for chaining."""
    if ctx.is_distributed:
        with collective(ctx):
            tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """In-place max over ranks; returns the tensor for chaining."""
    if ctx.is_distributed:
        with collective(ctx):
            tdist.all_reduce(tensor, op=tdist.ReduceOp.MAX)
    return tensor


def gather_to_main(obj: Any, ctx: DistContext) -> list[Any] | None:
    """Collect one picklable object per rank on rank 0 (ordered by rank); None elsewhere.

    Only our own processes' objects travel this way (never data from disk).
    """
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    with collective(ctx):
        tdist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's object on every rank."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    with collective(ctx):
        tdist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel when several ranks, the model itself otherwise."""
    if not ctx.is_distributed:
        return model
    device_ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    with collective(ctx):  # DDP broadcasts rank 0's parameters to every rank
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model under a DDP wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def micro_step(model: nn.Module, ctx: DistContext, *, sync: bool) -> Iterator[None]:
    """Around one micro-batch's forward and backward: DDP all-reduces the gradients in the backward
    only when `sync` (the final micro-step of an optimizer step), so the others run under no_sync."""
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        yield
    elif sync:
        with collective(ctx):
            yield
    else:
        with model.no_sync():
            yield


NO_BAD_STEP = 2**62


class StopWatch:
    """Watches for Ctrl-C and for a non-finite loss.

    The loss check stays on the device (the first bad step is kept in a tensor) and is read at
    logging and saving time. Ctrl-C sets a host flag; in a DDP job the ranks must stop at the same
    step, so the flag is all-reduced every step and read one step later, while the GPU already
    runs the next step.
    """

    def __init__(self, ctx: DistContext):
        self.ctx = ctx
        self.interrupted = False
        self.first_bad_step = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=ctx.device)
        self._pending: torch.Tensor | None = None
        self._previous_handler = None
        self._first_signal_at = 0.0

    @contextlib.contextmanager
    def catching_sigint(self) -> Iterator[None]:
        """First Ctrl-C: finish the step, save a checkpoint, stop. A second one (2 s later) aborts.

        The 2 s grace ignores the copy of the signal torchrun forwards to its workers.
        """
        def handler(signum, frame):
            now = time.monotonic()
            if self.interrupted and now - self._first_signal_at > 2.0:
                raise KeyboardInterrupt
            if not self.interrupted:
                self.interrupted, self._first_signal_at = True, now

        try:
            self._previous_handler = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: Ctrl-C keeps its default behaviour
            self._previous_handler = None
        try:
            yield
        finally:
            if self._previous_handler is not None:
                signal.signal(signal.SIGINT, self._previous_handler)

    def watch_loss(self, step: int, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss)
        self.first_bad_step = torch.minimum(self.first_bad_step,
                                            torch.where(bad, step, NO_BAD_STEP))

    def bad_step(self) -> int | None:
        """The first step whose loss was not finite on any rank (host sync: call at log/save time)."""
        negated = -self.first_bad_step.clone()
        all_reduce_max(negated, self.ctx)
        first = -int(negated.item())
        return None if first == NO_BAD_STEP else first

    def stop_requested(self) -> bool:
        """Whether every rank should stop after this step (one step late in a DDP job)."""
        if not self.ctx.is_distributed:
            return self.interrupted
        flag = torch.full((1,), float(self.interrupted), device=self.ctx.device)
        all_reduce_max(flag, self.ctx)
        previous, self._pending = self._pending, flag
        # Host sync on the previous step's flag only: this step's kernels are already queued.
        return previous is not None and bool(previous.item() > 0)
