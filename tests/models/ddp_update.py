"""Run by test_distributed.py under torchrun: each process takes its half of a saved rollout,
whitens raw advantages with whole-batch statistics and runs one update, DDP or FSDP (argv[3]);
the whole state is then gathered, and loaded again into a fresh model and optimizer."""

import sys
from dataclasses import fields

import torch

from rlhf.models.distributed import from_env
from rlhf.models.lm import load_causal_lm
from rlhf.models.ppo import PolicyWithValue, masked_whiten
from rlhf.models.ppo_step import Rollout, update

case = torch.load(sys.argv[1], weights_only=False)
dist = from_env(torch.device("cpu"), sys.argv[3])
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


def build():
    policy = dist.shard(PolicyWithValue(load_causal_lm(case["lm"])))
    return policy, torch.optim.AdamW(policy.parameters(), lr=case["cfg"].lr)


policy, opt = build()
torch.manual_seed(0)
stats = dist.mean(
    update(dist.trained(policy), opt, local, case["cfg"], device=dist.device, dist=dist)
)
whitened = dist.gather(whitened)
weights, moments = dist.state_dict(policy), dist.state_dict(opt, policy)
again, again_opt = build()
state = dist.gather((weights, moments))[0]  # as a resumed run reads the main one's checkpoint
dist.load_state_dict(again, state[0])
dist.load_state_dict(again_opt, state[1], again)
reloaded = dist.state_dict(again), dist.state_dict(again_opt, again)
if dist.main:
    torch.save(
        {
            "weights": weights,
            "moments": moments,
            "reloaded": reloaded,
            "whitened": torch.cat(whitened),
            "stats": stats,
        },
        sys.argv[2],
    )
