"""One GRPO / RLOO iteration, in the order it runs. Shapes: B = P prompts x k responses
(each prompt's k contiguous), R response tokens.

  1. sample   k responses to each prompt of the batch (rlhf.models.rollout: every online
              method's sampling)
  2. score    the reward model's score, normalised and with the no-EOS penalty (ditto)
  3. no-grad  old and reference logprobs; rloo subtracts beta * KL from the score
  4. baseline each response's advantage against its group (rlhf.models.grpo)
  5. update   epochs of minibatches: the clipped surrogate with that advantage on every token,
              plus, for grpo, beta * the k3 KL estimate to the reference
A process samples whole groups, so a baseline never needs another process's responses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhf.models.config import Group
from rlhf.models.distributed import Dist
from rlhf.models.generation import Samples, entropy, response_logits, token_logprobs
from rlhf.models.grpo import group_advantages, k3_kl
from rlhf.models.lm import autocast
from rlhf.models.ppo import masked_mean, policy_loss
from rlhf.models.ppo_step import mean_stats, minibatches, optimizer_step, step_stats
from rlhf.models.rollout import (
    ONE_PROCESS,
    Scored,
    ScoreFn,
    reference_logits,
    sample_responses,
    score_responses,
)


@dataclass
class GroupRollout:
    samples: Samples
    raw_scores: torch.Tensor  # [B] the reward before normalisation
    old_logprobs: torch.Tensor  # [B, R]
    ref_logprobs: torch.Tensor  # [B, R]
    advantages: torch.Tensor  # [B] one per response
    kl: torch.Tensor  # [B] summed per-token log-ratio to the reference
    stats: dict


def group_prompts(prompts: list[str], cfg: Group) -> list[str]:
    """Each prompt group_size times, a prompt's responses contiguous (step 1 samples them)."""
    return [p for p in prompts for _ in range(cfg.group_size)]


@torch.no_grad()
def group_rollout(
    lm, ref, scored: Scored, cfg: Group, *, baseline: str, device: torch.device
) -> GroupRollout:
    """Steps 3-4 on the scored groups: old and reference logprobs, each response's advantage
    against its group; baseline is grpo or rloo (rlhf.models.grpo.BASELINES)."""
    s = scored.samples
    mask = s.response_mask.float()
    with autocast(device):
        logits = response_logits(lm, s)
        ref_logits = reference_logits(ref, lm, s)
    old = token_logprobs(logits, s.response_ids, cfg.temperature)
    ref_lp = token_logprobs(ref_logits, s.response_ids, cfg.temperature)
    kl = ((old - ref_lp) * mask).sum(1)
    reward = scored.score - cfg.kl_coef * kl if baseline == "rloo" else scored.score
    stats = {
        **scored.stats,
        "kl": kl.mean().item(),
        "entropy": masked_mean(entropy(logits, cfg.temperature), mask).item(),
        # groups whose k scores were all equal teach nothing
        "flat_groups": (reward.view(-1, cfg.group_size).std(1) == 0).float().mean().item(),
    }
    adv = group_advantages(reward, cfg.group_size, baseline)
    return GroupRollout(s, scored.raw, old, ref_lp, adv, kl, stats)


def collect_groups(
    lm,
    ref,
    score: ScoreFn,
    tok,
    prompts: list[str],
    cfg: Group,
    *,
    baseline: str,
    norm: tuple[float, float],
    device: torch.device,
    dist: Dist = ONE_PROCESS,
) -> GroupRollout:
    """Steps 1-4 in one call for the prompts of this process (the policy stage's loop runs
    them one by one)."""
    s = sample_responses(lm, tok, group_prompts(prompts, cfg), cfg, device, dist)
    scored = score_responses(s, score, norm, cfg.no_eos_penalty)
    return group_rollout(lm, ref, scored, cfg, baseline=baseline, device=device)


def update_groups(
    lm,
    opt: torch.optim.Optimizer,
    ro: GroupRollout,
    cfg: Group,
    *,
    baseline: str,
    device: torch.device,
    dist: Dist = ONE_PROCESS,
) -> dict:
    """Step 5. Raises Unstable when a gradient is not finite (its step is not taken)."""
    lm.train()
    steps: list[dict[str, float]] = []
    for idx, s, mask, count in minibatches(
        ro.samples, cfg.epochs, cfg.minibatch_size, device=device, dist=dist
    ):
        with autocast(device):
            logprobs = token_logprobs(response_logits(lm, s), s.response_ids, cfg.temperature)
        adv = ro.advantages[idx, None].expand_as(mask)
        pg, clipfrac, approx_kl = policy_loss(
            logprobs, ro.old_logprobs[idx], adv, mask, cfg.cliprange, count
        )
        kl = masked_mean(k3_kl(logprobs, ro.ref_logprobs[idx]), mask, count=count)
        loss = pg + cfg.kl_coef * kl if baseline == "grpo" else pg
        optimizer_step(opt, loss, lm, cfg.max_grad_norm, policy_loss=pg, kl_loss=kl)
        steps.append(step_stats(pg_loss=pg, kl_loss=kl, clipfrac=clipfrac, approx_kl=approx_kl))
    lm.eval()
    return mean_stats(steps)
