"""Stage 7, policy: the aligned policy, trained from the SFT model by the method params.yaml
names (policy.method). The online methods share the loop of rlhf.core.policy.online (the same
prompts, sampling against the reward model, KL accounting, guard and snapshots); every method ends
the same way: the judge's choice of snapshot and registration as `<prefix>-policy` with the method
as a tag (rlhf.core.policy.online.publish).

  ppo         PPO with a value head and an adaptive KL penalty (rlhf.tasks.policy.ppo)
  grpo, rloo  group baselines over k responses per prompt, no value head
              (rlhf.tasks.policy.group)
  dpo         DPO / IPO on the feedback's preference pairs, offline, with the same snapshot
              choice and registration (rlhf.tasks.policy.dpo)
"""

from __future__ import annotations

from rlhf.core.pipeline.context import StageContext
from rlhf.tasks.policy import dpo, group, ppo


def run(ctx: StageContext) -> dict:
    method = ctx.settings.policy.method
    if method == "ppo":
        return ppo.run(ctx)
    if method == "dpo":
        return dpo.run(ctx)
    return group.run(ctx, baseline=method)
