"""Critic-free policy gradient with group baselines: k responses per prompt, each response's
advantage measured against the other responses to the same prompt, no value head.

  GRPO (Shao et al., 2024)      A_i = (r_i - mean_j r_j) / std_j r_j; the KL to the reference
                                is a loss term (the k3 estimator, per token)
  RLOO (Ahmadian et al., 2024)  A_i = r_i - mean_{j != i} r_j, with r_i the score minus
                                beta * the response's KL to the reference (KL in the reward)

Shapes: B = P prompts x k responses, each prompt's k responses contiguous; R response tokens.
"""

from __future__ import annotations

import torch

BASELINES = ("grpo", "rloo")
STD_EPS = 1e-4  # a group whose k scores are equal has zero advantages, not 0/0


def group_advantages(scores: torch.Tensor, k: int, baseline: str) -> torch.Tensor:
    """One advantage per response [B] from its score [B] and its group's."""
    if k < 2:
        raise ValueError(f"a group baseline needs k >= 2 responses per prompt, not {k}")
    g = scores.view(-1, k)  # [P, k]
    if baseline == "grpo":
        adv = (g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + STD_EPS)
    elif baseline == "rloo":
        adv = g - (g.sum(1, keepdim=True) - g) / (k - 1)
    else:
        raise ValueError(f"unknown baseline {baseline!r} ({' | '.join(BASELINES)})")
    return adv.reshape(-1)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate exp(d) - d - 1 with d = log ref - log pi: never
    negative, unbiased under samples from pi, and its gradient pulls towards the reference."""
    d = ref_logprobs - logprobs
    return d.exp() - d - 1
