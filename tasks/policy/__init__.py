"""Stage 7, policy: the aligned policy, trained from the SFT model against the reward model by
the method params.yaml names (policy.method). Every method shares the loop of rlhf.core.online:
the same prompts, sampling, KL accounting, guard, snapshots, the judge's choice of snapshot and
registration as `<prefix>-policy` with the method as a tag.

  ppo         PPO with a value head and an adaptive KL penalty (rlhf.tasks.policy.ppo)
  grpo, rloo  group baselines over k responses per prompt, no value head
              (rlhf.tasks.policy.group)
"""

from __future__ import annotations

from rlhf.core.context import StageContext
from rlhf.tasks.policy import group, ppo


def run(ctx: StageContext) -> dict:
    method = ctx.settings.policy.method
    if method == "ppo":
        return ppo.run(ctx)
    return group.run(ctx, baseline=method)
