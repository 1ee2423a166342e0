"""Several processes training one model: `torchrun` or `accelerate launch` start them and set
RANK / WORLD_SIZE / LOCAL_RANK; one process is the same code with world 1 (every collective a
no-op), so nothing branches on how the run was started."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """The process that logs, writes files and registers models."""
        return self.rank == 0

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over all processes (a new tensor; x itself is unchanged)."""
        if self.world == 1:
            return x
        x = x.detach().clone()
        dist.all_reduce(x)
        return x

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each scalar averaged over the processes (one collective for the lot)."""
        if self.world == 1:
            return values
        t = self.sum(torch.tensor(list(values.values()), dtype=torch.float64, device=self.device))
        return dict(zip(values, (t / self.world).tolist()))

    def gather(self, obj) -> list:
        """obj from every process, in rank order."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def from_env(device: torch.device) -> Dist:
    """The process group the launcher describes, or one process. CUDA processes each take the
    GPU of their LOCAL_RANK (NCCL); CPU processes talk over gloo."""
    world = world_size()
    if world == 1:
        return Dist(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), world, device)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Before the process group exists (the stage runner's bookkeeping): rank 0 or no launcher."""
    return int(os.environ.get("RANK", "0")) == 0
