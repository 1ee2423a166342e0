"""One PPO iteration, in the order it runs. Shapes: B responses, R response tokens.

  1. sample   responses to a batch of prompts (rlhf.models.rollout: every online method's)
  2. score    the reward (the RM at EOS), normalised by its mean/std on reference samples;
              a fixed penalty replaces the score of a response that never emitted EOS (ditto)
  3. no-grad  old logprobs and values (policy) and reference logprobs, logits / temperature
  4. rewards  -beta * per-token KL, plus the score at the last real token; GAE; whitening
  5. update   several epochs of minibatches: clipped policy loss + clipped value loss

Under several processes each holds its share of the batch; whitening statistics, the loss
normaliser and the reported stats are taken over the whole batch (`dist`), so N processes
compute what one process would on the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.models.config import PPO
from rlhf.models.distributed import Dist
from rlhf.models.generation import Samples, entropy, token_logprobs
from rlhf.models.lm import autocast
from rlhf.models.ppo import (
    PolicyWithValue,
    explained_variance,
    gae,
    kl_rewards,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)
from rlhf.models.rollout import (
    ONE_PROCESS,
    Scored,
    ScoreFn,
    reference_logits,
    sample_responses,
    score_responses,
)


@dataclass(frozen=True)
class Actors:
    """The models one iteration runs with."""

    policy: PolicyWithValue  # the policy it trains, with its value head
    ref: PreTrainedModel | None  # the frozen reference; None: the policy's LoRA adapter off
    score: ScoreFn  # the reward of each response (the reward model read at EOS)
    tok: PreTrainedTokenizerBase


class Unstable(Exception):
    """An update produced a non-finite gradient: its step must not be kept."""


@dataclass
class Rollout:
    samples: Samples
    raw_scores: torch.Tensor  # [B] the reward before normalisation
    old_logprobs: torch.Tensor  # [B, R]
    old_values: torch.Tensor  # [B, R]
    advantages: torch.Tensor  # [B, R] whitened
    returns: torch.Tensor  # [B, R]
    kl: torch.Tensor  # [B] summed per-token KL to the reference
    stats: dict


@torch.no_grad()
def advantages(
    policy: PolicyWithValue,
    ref: PreTrainedModel | None,
    scored: Scored,
    cfg: PPO,
    *,
    beta: float,
    device: torch.device,
    dist: Dist = ONE_PROCESS,
) -> Rollout:
    """Steps 3-4 on scored samples: old logprobs and values, reference logprobs, rewards and
    advantages. beta: the KL coefficient now."""
    s = scored.samples
    policy.eval()
    mask = s.response_mask.float()
    with autocast(device):
        logits, values = policy(**s.model_inputs())
        ref_logits = reference_logits(ref, policy.lm, s)
    logits, values = s.response_part(logits).float(), s.response_part(values).float()
    old_logprobs = token_logprobs(logits, s.response_ids, cfg.temperature)
    ref_logprobs = token_logprobs(ref_logits.float(), s.response_ids, cfg.temperature)
    rewards, kl = kl_rewards(scored.score, old_logprobs, ref_logprobs, mask, beta)
    adv, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    stats = {
        **scored.stats,
        "non_score_reward": (-beta * kl).sum(1).mean().item(),
        "kl": kl.sum(1).mean().item(),
        "entropy": masked_mean(entropy(logits, cfg.temperature), mask).item(),
    }
    return Rollout(
        s,
        scored.raw,
        old_logprobs,
        values * mask,
        masked_whiten(adv, mask, dist.sum),
        returns,
        kl.sum(1),
        stats,
    )


def collect(
    actors: Actors,
    prompts: list[str],
    cfg: PPO,
    *,
    beta: float,
    norm: tuple[float, float],
    device: torch.device,
    dist: Dist = ONE_PROCESS,
) -> Rollout:
    """Steps 1-4 in one call (the policy stage's loop runs them one by one)."""
    s = sample_responses(actors.policy.lm, actors.tok, prompts, cfg, device, dist)
    scored = score_responses(s, actors.score, norm, cfg.no_eos_penalty)
    return advantages(actors.policy, actors.ref, scored, cfg, beta=beta, device=device, dist=dist)


def minibatches(
    samples: Samples, epochs: int, size: int, *, device: torch.device, dist: Dist
) -> Iterator[tuple[torch.Tensor, Samples, torch.Tensor, torch.Tensor]]:
    """epochs passes of shuffled minibatches of size responses over all processes: (indices,
    their samples, response mask, the minibatch's response tokens per process)."""
    n = len(samples.response_ids)
    for _ in range(epochs):
        for idx in torch.randperm(n).split(size // dist.world):
            idx = idx.to(device)
            s = samples.select(idx)
            mask = s.response_mask.float()
            yield idx, s, mask, dist.sum(mask.sum()) / dist.world


def optimizer_step(
    opt: torch.optim.Optimizer,
    loss: torch.Tensor,
    model: torch.nn.Module,
    max_grad_norm: float,
    **parts: torch.Tensor,
) -> None:
    """Backward, clip, step. After backward the gradients are the same on every process, so
    all agree on raising Unstable for a non-finite gradient, whose step is not taken; parts
    (the loss's terms) name what the error shows."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if not torch.isfinite(grad_norm):
        shown = ", ".join(f"{k.replace('_', ' ')} {v.item():.4g}" for k, v in parts.items())
        raise Unstable(f"non-finite gradient ({shown})")
    opt.step()


def step_stats(**values: torch.Tensor) -> dict[str, float]:
    return {k: v.item() for k, v in values.items()}


def mean_stats(steps: list[dict[str, float]]) -> dict[str, float]:
    """Each statistic's mean over the update's minibatch steps."""
    return {k: sum(step[k] for step in steps) / len(steps) for k in steps[0]}


def update(
    policy: torch.nn.Module,
    opt: torch.optim.Optimizer,
    ro: Rollout,
    cfg: PPO,
    *,
    device: torch.device,
    dist: Dist = ONE_PROCESS,
) -> dict:
    """Step 5: ppo_epochs passes of shuffled minibatches over one rollout. policy may be the
    DDP wrapper, which averages gradients over processes in backward. Raises Unstable when a
    gradient is not finite (its step is not taken; the caller restores the last good state)."""
    policy.train()
    steps: list[dict[str, float]] = []
    for idx, s, mask, count in minibatches(
        ro.samples, cfg.ppo_epochs, cfg.minibatch_size, device=device, dist=dist
    ):
        with autocast(device):
            logits, values = policy(**s.model_inputs())
        logprobs = token_logprobs(s.response_part(logits).float(), s.response_ids, cfg.temperature)
        values = s.response_part(values).float()
        pg, clipfrac, approx_kl = policy_loss(
            logprobs, ro.old_logprobs[idx], ro.advantages[idx], mask, cfg.cliprange, count
        )
        vf = value_loss(
            values, ro.old_values[idx], ro.returns[idx], mask, cfg.cliprange_value, count
        )
        optimizer_step(
            opt, pg + cfg.vf_coef * vf, policy, cfg.max_grad_norm, policy_loss=pg, value_loss=vf
        )
        steps.append(step_stats(pg_loss=pg, vf_loss=vf, clipfrac=clipfrac, approx_kl=approx_kl))
    policy.eval()
    stats = mean_stats(steps)
    stats["explained_variance"] = explained_variance(
        ro.old_values, ro.returns, ro.samples.response_mask.float()
    )
    return stats
