"""Methods `grpo` and `rloo` of the policy stage: k responses per prompt, each response's
advantage against its group, no value head (rlhf.models.grpo_step), on the loop every online
method shares (rlhf.core.policy.online). The reference is a frozen copy of the SFT model. Under
torchrun each process samples whole groups for prompts_per_iteration / N prompts.
"""

from __future__ import annotations

import torch

from rlhf.core.pipeline.context import StageContext
from rlhf.core.policy.online import Learner, load_inputs, seed_processes, train_online
from rlhf.core.settings import UserError
from rlhf.models.grpo_step import collect_groups, update_groups
from rlhf.models.lm import load_causal_lm


def run(ctx: StageContext, baseline: str) -> dict:
    cfg = ctx.settings.group
    dist, batches = seed_processes(ctx.settings)
    device = dist.device
    if cfg.prompts_per_iteration % dist.world or cfg.minibatch_size % dist.world:
        raise UserError(
            f"group: prompts_per_iteration {cfg.prompts_per_iteration} and minibatch_size "
            f"{cfg.minibatch_size} must be multiples of the {dist.world} processes"
        )
    inputs = load_inputs(ctx, dist)
    lm = dist.shard(load_causal_lm(inputs.sft_dir, inputs.tok).to(device))
    ref = load_causal_lm(inputs.sft_dir, inputs.tok).to(device).eval().requires_grad_(False)
    ref = dist.shard(ref, offload=ctx.settings.parallel.offload_frozen)
    trained = dist.trained(lm)
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, eps=1e-5)
    learner = Learner(
        method=baseline,
        lm=lm,
        parts={"policy": lm, "optimizer": opt},
        collect=lambda batch: collect_groups(
            lm,
            ref,
            inputs.score,
            inputs.tok,
            batch,
            cfg,
            baseline=baseline,
            norm=inputs.norm,
            device=device,
            dist=dist,
        ),
        update=lambda ro: update_groups(
            trained, opt, ro, cfg, baseline=baseline, device=device, dist=dist
        ),
        after=lambda rollout: {"beta": cfg.kl_coef},  # fixed: no controller
    )
    return train_online(
        ctx,
        learner,
        cfg,
        inputs,
        dist=dist,
        batches=batches,
        prompts_per_iteration=cfg.prompts_per_iteration,
    )
