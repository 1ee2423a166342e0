"""Several processes training one model: `torchrun` or `accelerate launch` start them and set
RANK / WORLD_SIZE / LOCAL_RANK; one process is the same code with world 1 (every collective a
no-op), so nothing branches on how the run was started.

Two ways to share the model: DDP (each process a whole replica) or FSDP2 (`sharded`: each
holds 1/world of every parameter, gradient and optimizer state, and a layer's parameters are
gathered only while it runs). Under FSDP every process must run the same forward passes, and a
whole state dict exists only when gathered (state_dict / load_state_dict here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

WHOLE = StateDictOptions(full_state_dict=True, cpu_offload=True)  # gathered, on rank 0 only


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    sharded: bool = False  # FSDP2 (parallel.strategy fsdp with more than one process)

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

    def trained(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module whose backward synchronises gradients: model itself when sharded
        (shard() made it an FSDP module) or alone, else its DDP wrapper."""
        return DistributedDataParallel(model) if self.world > 1 and not self.sharded else model

    def shard(self, model: torch.nn.Module, *, offload: bool = False) -> torch.nn.Module:
        """FSDP2 in place when sharded: one unit per decoder layer, then one per outermost
        transformers model (a tied embedding and its head stay in one unit). A module around
        such models (a policy with its value head) gets one unit per other child instead of
        one of its own: the LM inside is also called alone (to generate), so it must be a
        root, not a unit under the wrapper. offload keeps the shards in CPU memory (for
        frozen models: no optimizer then runs on them)."""
        if not self.sharded:
            return model
        models = {name: m for name, m in model.named_modules() if hasattr(m, "_no_split_modules")}
        outer = [
            m
            for name, m in models.items()
            if not any(name.startswith(f"{o}.") or (o == "" and name) for o in models)
        ]
        layers = {n for m in outer for n in m._no_split_modules or ()}
        units = [m for m in model.modules() if type(m).__name__ in layers] + outer
        if model not in outer:
            units += [c for c in model.children() if c not in outer and list(c.parameters())]
        policy = CPUOffloadPolicy() if offload else OffloadPolicy()
        for m in units:  # inner units first: a unit excludes the units inside it
            fully_shard(m, offload_policy=policy)
        return model

    def state_dict(self, part, model: torch.nn.Module | None = None) -> dict:
        """part's whole state (a module, or the optimizer of model, or anything with a
        state_dict); when sharded it is gathered from every process's shard, so every
        process must call, and only the main one receives it (the others an empty dict)."""
        if not self.sharded:
            return part.state_dict()
        if isinstance(part, torch.nn.Module):
            return get_model_state_dict(part, options=WHOLE)
        if isinstance(part, torch.optim.Optimizer):
            return get_optimizer_state_dict(trains(part, model), part, options=WHOLE)
        return part.state_dict()

    def load_state_dict(self, part, state: dict, model: torch.nn.Module | None = None) -> None:
        """Load a whole state saved by state_dict (every process passes all of it; when
        sharded each keeps its shard)."""
        whole = StateDictOptions(full_state_dict=True)
        if self.sharded and isinstance(part, torch.nn.Module):
            set_model_state_dict(part, state, options=whole)
        elif self.sharded and isinstance(part, torch.optim.Optimizer):
            set_optimizer_state_dict(trains(part, model), part, state, options=whole)
        else:
            part.load_state_dict(state)


def trains(optimizer: torch.optim.Optimizer, model: torch.nn.Module | None) -> torch.nn.Module:
    """The model a sharded optimizer's state is keyed by (its parameters' names)."""
    if model is None:
        raise TypeError("a sharded optimizer's state needs the model it trains")
    return model


def from_env(device: torch.device, strategy: str = "ddp") -> Dist:
    """The process group the launcher describes, or one process. CUDA processes each take the
    GPU of their LOCAL_RANK (NCCL); CPU processes talk over gloo. strategy: ddp | fsdp."""
    world = world_size()
    if world == 1:
        return Dist(device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), world, device, sharded=strategy == "fsdp")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Before the process group exists (the stage runner's bookkeeping): rank 0 or no launcher."""
    return int(os.environ.get("RANK", "0")) == 0
