"""Run by test_distributed.py under torchrun: each process takes its half of a saved rollout,
whitens raw advantages with whole-batch statistics and runs one DDP update."""

import sys
from dataclasses import fields

import torch
from torch.nn.parallel import DistributedDataParallel

from rlhf.models.distributed import from_env
from rlhf.models.lm import load_causal_lm
from rlhf.models.ppo import PolicyWithValue, masked_whiten
from rlhf.models.ppo_step import Rollout, update

case = torch.load(sys.argv[1], weights_only=False)
dist = from_env(torch.device("cpu"))
ro, n = case["rollout"], len(case["rollout"].kl)
mine = torch.arange(n).chunk(dist.world)[dist.rank]
local = Rollout(
    *(
        ro.samples.select(mine)
        if f.name == "samples"
        else getattr(ro, f.name)
        if f.name == "stats"
        else getattr(ro, f.name)[mine]
        for f in fields(ro)
    )
)
whitened = masked_whiten(case["raw"][mine], ro.samples.response_mask[mine].float(), dist.sum)
policy = PolicyWithValue(load_causal_lm(case["lm"]))
opt = torch.optim.AdamW(policy.parameters(), lr=case["cfg"].lr)
torch.manual_seed(0)
stats = dist.mean(
    update(DistributedDataParallel(policy), opt, local, case["cfg"], device=dist.device, dist=dist)
)
whitened = dist.gather(whitened)
if dist.main:
    torch.save(
        {"weights": policy.state_dict(), "whitened": torch.cat(whitened), "stats": stats},
        sys.argv[2],
    )
