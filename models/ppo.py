"""PPO for language models: value head, rewards with a per-token KL penalty, GAE, losses,
and the KL controllers. Shapes: B responses, R response tokens."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel


class PolicyWithValue(nn.Module):
    """A causal LM plus a scalar value head on its last hidden state (zero-initialised, so the
    first value estimates are 0 and the head cannot disturb the policy before it learns)."""

    def __init__(self, lm: PreTrainedModel):
        super().__init__()
        self.lm = lm
        self.v_head = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep: int = 0):
        """(logits [B, K, V], values [B, K]) at the last K = logits_to_keep positions (0: all)."""
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            logits_to_keep=logits_to_keep,
        )
        return out.logits, self.v_head(out.hidden_states[-1][:, -logits_to_keep:]).squeeze(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None, count=None) -> torch.Tensor:
    """Mean over the real tokens; count replaces their number (a loss averaged over the tokens
    of every process's minibatch, where DDP then averages the gradients over processes)."""
    return (x * mask).sum(dim) / (mask.sum(dim) if count is None else count).clamp(min=1)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, total=identity) -> torch.Tensor:
    """Zero mean, unit variance over the real tokens; zero elsewhere. total sums a statistic
    over processes, so every process whitens with the statistics of the whole batch."""
    n = total(mask.sum()).clamp(min=1)
    mean = total((x * mask).sum()) / n
    var = total(((x - mean) ** 2 * mask).sum()) / n
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def kl_rewards(
    score: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -beta * (log pi - log ref) everywhere, plus the score at the last
    real token. Returns (rewards [B, R], per-token KL [B, R])."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -beta * kl
    last = mask.sum(1).long().clamp(min=1) - 1  # index of the EOS (or the final token)
    rewards[torch.arange(len(score)), last] += score
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over masked tokens; returns (advantages, returns).

    Rewards and values are zero after the end of each response, so the recursion treats the
    token after EOS as terminal with no special case."""
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, advantages + values


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange: float, count=None):
    """Clipped surrogate (averaged over `count` tokens, default the mask's); also the clip
    fraction and the approx KL (k3 estimator)."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask, count=count)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(ratio - 1 - log_ratio, mask)
    return loss, clipfrac, approx_kl


def value_loss(values, old_values, returns, mask, cliprange_value: float, count=None):
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    return 0.5 * masked_mean(
        torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask, count=count
    )


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    var_r = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    resid = returns - values
    var_e = masked_mean((resid - masked_mean(resid, mask)) ** 2, mask)
    return float(1 - var_e / var_r.clamp(min=1e-8))


class KLController:
    """Fixed beta, or the adaptive controller of Ziegler et al. (2019) when target is set:
    beta grows when the measured KL runs above target and shrinks when below."""

    def __init__(self, beta: float, target: float | None = None, horizon: int = 10000):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_samples: int) -> None:
        if self.target is None:
            return
        error = max(-0.2, min(0.2, kl / self.target - 1))
        self.beta *= 1 + error * n_samples / self.horizon

    def state_dict(self) -> dict:
        return {"beta": self.beta, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.beta, self.target, self.horizon = state["beta"], state["target"], state["horizon"]
