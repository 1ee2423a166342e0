"""Method `ppo` of the policy stage: PPO against the reward model with the SFT model as
reference, on the loop every online method shares (rlhf.core.policy.online).

What is PPO's own: a value head beside the policy, the reference (a frozen copy of the SFT model,
or the policy itself with its LoRA adapter off), the advantages (per-token KL rewards, GAE,
whitening), the clipped policy and value update, and the adaptive KL controller that moves beta
after each update (rlhf.models.ppo_step). Under `torchrun --nproc_per_node N -m rlhf.flows.cli
stage policy` it trains with DDP (or FSDP, parallel.strategy): each process samples
rollout_batch_size / N prompts.
"""

from __future__ import annotations

from typing import Any

import torch

from rlhf.core.pipeline.context import StageContext
from rlhf.core.policy.online import Setup, setup, train_online, trained_and_reference
from rlhf.core.settings import PPO, Lora, Method, UserError
from rlhf.models.distributed import Dist, world_size
from rlhf.models.generation import Samples
from rlhf.models.ppo import KLController, PolicyWithValue
from rlhf.models.ppo_step import Rollout, advantages, update
from rlhf.models.rollout import Scored, sample_responses


def build_policy(sft_dir: str, tok, cfg: PPO, lora: Lora, dist: Dist, offload_frozen: bool = False):
    """(policy with value head, reference or None), sharded under FSDP. With reference `lora`
    only the adapter and the value head train."""
    lm, ref = trained_and_reference(sft_dir, tok, cfg, lora, dist, offload_frozen)
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return dist.shard(PolicyWithValue(lm).to(dist.device)), ref


class PPOLearner:
    """PPO's part of the loop (rlhf.core.policy.online.OnlineMethod)."""

    def __init__(self, run: Setup, cfg: PPO, lora: Lora, offload_frozen: bool):
        self.run, self.cfg, dist = run, cfg, run.dist
        self.policy, self.ref = build_policy(run.sft_dir, run.tok, cfg, lora, dist, offload_frozen)
        trained: Any = dist.trained(self.policy)  # a module, or what torch.compile makes of it
        if cfg.compile:
            trained = torch.compile(trained, dynamic=True)  # prompt widths change every rollout
        self.trained = trained
        self.opt = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad], lr=cfg.lr, eps=1e-5
        )
        self.kl_ctl = KLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
        self.lm = self.policy.lm
        self.parts = {"policy": self.policy, "optimizer": self.opt, "kl": self.kl_ctl}
        self.prompts_per_iteration = cfg.rollout_batch_size

    def sample(self, prompts: list[str]) -> tuple[list[str], Samples]:
        run = self.run
        return prompts, sample_responses(
            self.lm, run.tok, prompts, self.cfg, run.dist.device, run.dist
        )

    def advantages(self, scored: Scored) -> Rollout:
        beta, dist = self.kl_ctl.beta, self.run.dist
        return advantages(
            self.policy, self.ref, scored, self.cfg, beta=beta, device=dist.device, dist=dist
        )

    def update(self, rollout: Rollout) -> dict[str, float]:
        dist = self.run.dist
        return update(self.trained, self.opt, rollout, self.cfg, device=dist.device, dist=dist)

    def after(self, stats: dict[str, float]) -> dict[str, float]:
        """The controller moves beta after each iteration; the stats keep the beta it used."""
        beta = self.kl_ctl.beta
        self.kl_ctl.update(stats["kl"], self.cfg.rollout_batch_size)
        return {"beta": beta}


def run(ctx: StageContext, method: Method) -> dict:
    cfg = ctx.settings.method_config(PPO)
    world = world_size()
    if cfg.rollout_batch_size % cfg.minibatch_size or cfg.minibatch_size % world:
        raise UserError(
            f"ppo: rollout_batch_size {cfg.rollout_batch_size} must be a multiple of "
            f"minibatch_size {cfg.minibatch_size}, and that of the {world} processes"
        )
    with setup(ctx) as run_:
        learner = PPOLearner(run_, cfg, ctx.settings.lora, ctx.settings.parallel.offload_frozen)
        return train_online(ctx, method, cfg, run_, learner)
