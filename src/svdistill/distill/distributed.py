"""Several processes, one training run: ``torchrun ... -m svdistill distill --engine torch``.

Each rank reads its own shard of the training utterances, chosen from the key
and the epoch (:func:`shard_of`), and of the CV utterances (from the key);
``--minibatch-size`` is per rank. After every local backward pass the ranks
add up their gradients and statistics (``all_reduce``), so every rank applies
the same update from the gradient summed over all N x B frames, exactly what
one process would do with those N x B frames: Kaldi's summed-gradient SGD keeps
its meaning (and Adam divides by the N x B frames). Shards differ in length: a
rank whose data ran out joins the remaining steps with zero gradients until
every rank is done, so no frame is dropped and no rank waits forever. CV
statistics are reduced over ranks; only rank 0 writes the table, checkpoints
and the model. A rank that fails exits with its error, and torchrun stops the
others.

Why not ``DistributedDataParallel``'s wrapper: it averages gradients (Kaldi's
SGD sums them), cannot join ranks with uneven shards inside a step, and the
engine's update is its own (the core's rules), so the one collective per step
it would overlap with the backward pass is issued here directly.
"""
from __future__ import annotations

import os
import zlib
from typing import Optional

from ..errors import Error


def shard_of(key: str, epoch: int, world: int) -> int:
    """The rank that trains utterance ``key`` in ``epoch`` (CV: epoch 0)."""
    return zlib.crc32(f"{epoch}:{key}".encode("utf-8", "replace")) % world


class Dist:
    """This process's place in a torchrun job (``WORLD_SIZE`` > 1)."""

    def __init__(self, rank: int, world: int, local_rank: int) -> None:
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.owns_group = False

    @classmethod
    def from_env(cls) -> Optional["Dist"]:
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            raise Error("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)") from None
        return cls(rank, world, local) if world > 1 else None

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def device(self, device: Optional[str]) -> str:
        """cuda means this rank's GPU (LOCAL_RANK); an explicit cuda:N is kept."""
        if device == "cuda":
            return f"cuda:{self.local_rank}"
        return device or "cpu"

    def start(self, device: str) -> None:
        import torch.distributed as td
        if td.is_initialized():
            if td.get_world_size() != self.world:
                raise Error(f"a process group of {td.get_world_size()} ranks exists, WORLD_SIZE is {self.world}")
            return
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            import torch
            torch.cuda.set_device(torch.device(device))
        try:
            td.init_process_group(backend=backend)
        except (RuntimeError, ValueError) as e:
            raise Error(f"rank {self.rank} of {self.world}: cannot join the process group ({backend}): {e}") from None
        self.owns_group = True

    def stop(self) -> None:
        if self.owns_group:
            import torch.distributed as td
            if td.is_initialized():
                td.destroy_process_group()
            self.owns_group = False

    def all_reduce(self, tensor) -> None:
        import torch.distributed as td
        td.all_reduce(tensor, op=td.ReduceOp.SUM)
