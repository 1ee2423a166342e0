"""Stage 7, policy: the aligned policy, trained from the SFT model by the method params.yaml
names (policy.method), as the method table declares it (rlhf.core.settings.METHODS): its
section, its inputs and its trainer, called as trainer(ctx, method).

The online methods share the loop of rlhf.core.policy.online (the same prompts, sampling against
the reward model, KL accounting, guard and snapshots); every method ends the same way: the
judge's choice of snapshot and registration as `<prefix>-policy` with the method as a tag
(rlhf.core.policy.publish).

  ppo         PPO with a value head and an adaptive KL penalty (rlhf.tasks.policy.ppo)
  grpo, rloo  group baselines over k responses per prompt, no value head
              (rlhf.tasks.policy.group)
  dpo         DPO / IPO on the feedback's preference pairs, offline (rlhf.tasks.policy.dpo)
"""

from __future__ import annotations

from rlhf.core.pipeline.context import StageContext
from rlhf.core.pipeline.plugins import load_object


def run(ctx: StageContext) -> dict:
    method = ctx.settings.method
    return load_object(method.trainer, f"policy.method {method.name}")(ctx, method)
