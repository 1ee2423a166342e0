"""Methods `grpo` and `rloo` of the policy stage: k responses per prompt, each response's
advantage against its group, no value head (rlhf.models.grpo_step), on the loop every online
method shares (rlhf.core.policy.online). The reference is a frozen copy of the SFT model, or
the policy with its LoRA adapter off (reference lora); beta is fixed (no controller). Under
torchrun each process samples whole groups for prompts_per_iteration / N prompts.
"""

from __future__ import annotations

import torch

from rlhf.core.pipeline.context import StageContext
from rlhf.core.policy.online import Setup, setup, train_online, trained_and_reference
from rlhf.core.settings import Group, Lora, Method, UserError
from rlhf.models.distributed import world_size
from rlhf.models.generation import Samples
from rlhf.models.grpo_step import GroupRollout, group_prompts, group_rollout, update_groups
from rlhf.models.rollout import Scored, sample_responses


class GroupLearner:
    """A group baseline's part of the loop (rlhf.core.policy.online.OnlineMethod); baseline is
    the method's name, grpo or rloo."""

    def __init__(self, run: Setup, cfg: Group, baseline: str, lora: Lora, offload_frozen: bool):
        self.run, self.cfg, self.baseline, dist = run, cfg, baseline, run.dist
        lm, self.ref = trained_and_reference(run.sft_dir, run.tok, cfg, lora, dist, offload_frozen)
        self.lm = dist.shard(lm.to(dist.device))
        self.trained = dist.trained(self.lm)
        trainable = [p for p in self.lm.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(trainable, lr=cfg.lr, eps=1e-5)
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
    settings = ctx.settings
    with setup(ctx) as run_:
        learner = GroupLearner(
            run_, cfg, method.name, settings.lora, settings.parallel.offload_frozen
        )
        return train_online(ctx, method, cfg, run_, learner)
