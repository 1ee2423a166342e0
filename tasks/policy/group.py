"""Methods `grpo` and `rloo` of the policy stage: k responses per prompt, each response's
advantage against its group, no value head (rlhf.models.grpo_step), on the loop every online
method shares (rlhf.core.policy.online). The reference is a frozen copy of the SFT model; beta
is fixed (no controller). Under torchrun each process samples whole groups for
prompts_per_iteration / N prompts.
"""

from __future__ import annotations

import torch

from rlhf.core.pipeline.context import StageContext
from rlhf.core.policy.online import Setup, setup, train_online
from rlhf.core.settings import Group, Method, UserError
from rlhf.models.distributed import world_size
from rlhf.models.generation import Samples
from rlhf.models.grpo_step import GroupRollout, group_prompts, group_rollout, update_groups
from rlhf.models.lm import load_causal_lm
from rlhf.models.rollout import Scored, sample_responses


class GroupLearner:
    """A group baseline's part of the loop (rlhf.core.policy.online.OnlineMethod); baseline is
    the method's name, grpo or rloo."""

    def __init__(self, run: Setup, cfg: Group, baseline: str, offload_frozen: bool):
        self.run, self.cfg, self.baseline, dist = run, cfg, baseline, run.dist
        self.lm = dist.shard(load_causal_lm(run.sft_dir, run.tok).to(dist.device))
        ref = load_causal_lm(run.sft_dir, run.tok).to(dist.device).eval().requires_grad_(False)
        self.ref = dist.shard(ref, offload=offload_frozen)
        self.trained = dist.trained(self.lm)
        self.opt = torch.optim.AdamW(self.lm.parameters(), lr=cfg.lr, eps=1e-5)
        self.parts = {"policy": self.lm, "optimizer": self.opt}
        self.prompts_per_iteration = cfg.prompts_per_iteration

    def sample(self, prompts: list[str]) -> tuple[list[str], Samples]:
        run, asked = self.run, group_prompts(prompts, self.cfg)
        return asked, sample_responses(self.lm, run.tok, asked, self.cfg, run.dist.device, run.dist)

    def advantages(self, scored: Scored) -> GroupRollout:
        device = self.run.dist.device
        return group_rollout(
            self.lm, self.ref, scored, self.cfg, baseline=self.baseline, device=device
        )

    def update(self, rollout: GroupRollout) -> dict[str, float]:
        dist = self.run.dist
        return update_groups(
            self.trained,
            self.opt,
            rollout,
            self.cfg,
            baseline=self.baseline,
            device=dist.device,
            dist=dist,
        )

    def after(self, stats: dict[str, float]) -> dict[str, float]:
        return {"beta": self.cfg.kl_coef}


def run(ctx: StageContext, method: Method) -> dict:
    cfg = ctx.settings.method_config(Group)
    world = world_size()
    if cfg.prompts_per_iteration % world or cfg.minibatch_size % world:
        raise UserError(
            f"group: prompts_per_iteration {cfg.prompts_per_iteration} and minibatch_size "
            f"{cfg.minibatch_size} must be multiples of the {world} processes"
        )
    run_ = setup(ctx)
    learner = GroupLearner(run_, cfg, method.name, ctx.settings.parallel.offload_frozen)
    return train_online(ctx, method, cfg, run_, learner)
