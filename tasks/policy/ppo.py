"""Method `ppo` of the policy stage: PPO against the reward model with the SFT model as
reference.

The iteration itself is models/ppo_step.py (rollout, score, no-grad passes, GAE, update); the
loop around it (resume, guard, snapshots, the judge's choice of snapshot, registration) is the
one every online method shares, rlhf.core.policy.online. This module sets PPO up for it:
policy + value head, the reference (frozen copy or LoRA adapter off) and the adaptive KL
controller. Run under `torchrun --nproc_per_node N -m rlhf.flows.cli stage policy` it trains
with DDP (or FSDP, parallel.strategy): each process samples rollout_batch_size / N prompts.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from rlhf.core.pipeline.context import StageContext
from rlhf.core.policy.online import Learner, load_inputs, seed_processes, train_online
from rlhf.core.settings import PPO, UserError
from rlhf.models.distributed import Dist
from rlhf.models.lm import load_causal_lm
from rlhf.models.ppo import KLController, PolicyWithValue
from rlhf.models.ppo_step import Actors, collect, update


def build_policy(sft_dir: str, tok, cfg: PPO, dist: Dist, offload_frozen: bool = False):
    """(policy with value head, reference or None), sharded under FSDP. With reference `lora`
    only the adapter and the value head train, and the reference is the policy with its
    adapter off."""
    if cfg.reference == "lora" and dist.sharded:
        raise UserError(
            "ppo.reference lora cannot be sharded (parallel.strategy fsdp): the adapter "
            "already keeps a single copy of the weights; use reference copy or strategy ddp"
        )
    lm = load_causal_lm(sft_dir, tok)
    ref = None
    if cfg.reference == "lora":
        lm = get_peft_model(
            lm,
            LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha,
                target_modules="all-linear",
                lora_dropout=0.0,
            ),
        )
    else:
        ref = load_causal_lm(sft_dir, tok).to(dist.device).eval().requires_grad_(False)
        ref = dist.shard(ref, offload=offload_frozen)
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return dist.shard(PolicyWithValue(lm).to(dist.device)), ref


def run(ctx: StageContext) -> dict:
    cfg = ctx.settings.ppo
    dist, batches = seed_processes(ctx.settings)
    device = dist.device
    if cfg.rollout_batch_size % cfg.minibatch_size or cfg.minibatch_size % dist.world:
        raise UserError(
            f"ppo: rollout_batch_size {cfg.rollout_batch_size} must be a multiple "
            f"of minibatch_size {cfg.minibatch_size}, and that of the {dist.world} "
            "processes"
        )
    inputs = load_inputs(ctx, dist)
    policy, ref = build_policy(
        inputs.sft_dir, inputs.tok, cfg, dist, ctx.settings.parallel.offload_frozen
    )
    trained: Any = dist.trained(policy)  # a module, or what torch.compile makes of it
    if cfg.compile:
        trained = torch.compile(trained, dynamic=True)  # prompt widths change every rollout
    opt = torch.optim.AdamW(
        [p for p in policy.parameters() if p.requires_grad], lr=cfg.lr, eps=1e-5
    )
    kl_ctl = KLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    actors = Actors(policy=policy, ref=ref, score=inputs.score, tok=inputs.tok)

    def kl_step(rollout: dict) -> dict:
        """The controller moves beta after each iteration; the stats keep the beta it used."""
        beta = kl_ctl.beta
        kl_ctl.update(rollout["kl"], cfg.rollout_batch_size)
        return {"beta": beta}

    learner = Learner(
        method="ppo",
        lm=policy.lm,
        parts={"policy": policy, "optimizer": opt, "kl": kl_ctl},
        collect=lambda batch: collect(
            actors, batch, cfg, beta=kl_ctl.beta, norm=inputs.norm, device=device, dist=dist
        ),
        update=lambda ro: update(trained, opt, ro, cfg, device=device, dist=dist),
        after=kl_step,
    )
    return train_online(
        ctx,
        learner,
        cfg,
        inputs,
        dist=dist,
        batches=batches,
        prompts_per_iteration=cfg.rollout_batch_size,
    )
