"""One GRPO / RLOO iteration, in the order it runs. Shapes: B = P prompts x k responses
(each prompt's k contiguous), R response tokens.

  1. rollout  k responses to each prompt of the batch (PPO's sampling)
  2. score    the reward model's score, normalised and with PPO's no-EOS penalty
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
from rlhf.models.generation import Samples, entropy, response_logits, sample, token_logprobs
from rlhf.models.grpo import group_advantages, k3_kl
from rlhf.models.lm import autocast
from rlhf.models.ppo import masked_mean, policy_loss
from rlhf.models.ppo_step import (
    ONE_PROCESS,
    ScoreFn,
    mean_stats,
    minibatches,
    optimizer_step,
    step_stats,
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


@torch.no_grad()
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
    """Steps 1-4 for the prompts of this process: group_size responses each; baseline is
    grpo or rloo (rlhf.models.grpo.BASELINES)."""
    lm.eval()
    s = sample(
        lm,
        tok,
        [p for p in prompts for _ in range(cfg.group_size)],
        cfg.max_new_tokens,
        cfg.temperature,
        device,
        synced=dist.sharded,
    )
    mask = s.response_mask.float()
    raw = score(s)
    scores = (raw - norm[0]) / norm[1]
    if cfg.no_eos_penalty is not None:
        scores = torch.where(s.has_eos, scores, torch.full_like(scores, cfg.no_eos_penalty))
    with autocast(device):
        logits = response_logits(lm, s)
        ref_logits = response_logits(ref, s)
    old = token_logprobs(logits, s.response_ids, cfg.temperature)
    ref_lp = token_logprobs(ref_logits, s.response_ids, cfg.temperature)
    kl = ((old - ref_lp) * mask).sum(1)
    reward = scores - cfg.kl_coef * kl if baseline == "rloo" else scores
    stats = {
        "rm_score_raw": raw.mean().item(),
        "score": scores.mean().item(),
        "kl": kl.mean().item(),
        "entropy": masked_mean(entropy(logits, cfg.temperature), mask).item(),
        "response_length": mask.sum(1).mean().item(),
        "no_eos_fraction": (~s.has_eos).float().mean().item(),
        # groups whose k scores were all equal teach nothing
        "flat_groups": (reward.view(-1, cfg.group_size).std(1) == 0).float().mean().item(),
    }
    adv = group_advantages(reward, cfg.group_size, baseline)
    return GroupRollout(s, raw, old, ref_lp, adv, kl, stats)


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
