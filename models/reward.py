"""Reward model: a scalar head on the SFT backbone, trained with the Bradley-Terry loss."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from rlhf.models.generation import repack_right, sample
from rlhf.models.lm import check_checkpoint_dir, fit_vocabulary

SCORE_STATS = "score_stats.json"  # saved beside the weights: PPO's reward normalisation


def build_reward_model(backbone_dir: str, tokenizer):
    """AutoModelForSequenceClassification with one label, initialised from the SFT weights.

    The head reads the last non-PAD token; inputs are right-padded and end in EOS, so the
    score is read at EOS.
    """
    model = AutoModelForSequenceClassification.from_pretrained(
        check_checkpoint_dir(backbone_dir), num_labels=1
    )
    fit_vocabulary(model, tokenizer)
    torch.nn.init.normal_(model.score.weight, std=1.0 / (model.config.hidden_size + 1) ** 0.5)
    return model


def scores(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] scalar rewards of right-padded sequences."""
    return model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float()


def token_scores(
    model, ids: torch.Tensor, allowed: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """[B, T] the score at every position of rows under a [B, 1, T, T] attention mask (True:
    may attend) with their own position ids. The model's output is the last non-PAD
    token's score only, so the head's output is read as it is computed."""
    inner = getattr(model, "module", model)  # a DDP replica's model is its .module
    if inner.config._attn_implementation == "eager":  # eager attention adds its mask
        allowed = torch.zeros(allowed.shape, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(torch.float).min
        )
    out: list[torch.Tensor] = []
    hook = inner.score.register_forward_hook(lambda _module, _args, output: out.append(output))
    try:
        model(input_ids=ids, attention_mask=allowed, position_ids=positions)
    finally:
        hook.remove()
    return out[0].squeeze(-1).float()


@torch.no_grad()
def sample_scores(model, samples, pad_id: int) -> torch.Tensor:
    """[B] rewards of sampled responses (models.generation.Samples), read at their EOS."""
    return scores(model, *repack_right(samples, pad_id))


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected - margin), the negative log-likelihood of the
    preference (a margin asks a clearer preference for a wider gap), plus center_coef *
    mean((r_chosen + r_rejected)^2), which pins the scores' level near 0. A NaN margin marks a
    tie, a draw: -(log sigmoid(gap) + log sigmoid(-gap)) / 2, least at equal scores."""
    if margin is None:
        margin = torch.zeros_like(chosen)
    tie = margin.isnan()
    gap = chosen - rejected - margin.nan_to_num(0.0)
    draw = -(F.logsigmoid(gap) + F.logsigmoid(-gap)) / 2
    loss = torch.where(tie, draw, -F.logsigmoid(gap)).mean()
    if center_coef:
        loss = loss + center_coef * ((chosen + rejected) ** 2).mean()
    return loss


@torch.no_grad()
def reference_score_stats(
    policy,
    rm,
    tok,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float,
    device: torch.device,
    batch_size: int = 64,
) -> dict:
    """Mean and std of the reward on the policy's own samples (the SFT model: PPO's
    reference), sampled as PPO samples."""
    sc = torch.cat(
        [
            sample_scores(
                rm,
                sample(
                    policy, tok, prompts[i : i + batch_size], max_new_tokens, temperature, device
                ),
                tok.pad_token_id,
            )
            for i in range(0, len(prompts), batch_size)
        ]
    ).double()
    std = sc.std().clamp(min=1e-6).item() if len(sc) > 1 else 1.0
    return {"mean": sc.mean().item(), "std": std, "samples": len(sc)}


def read_score_stats(model_dir: Path) -> tuple[float, float]:
    stats = json.loads((Path(model_dir) / SCORE_STATS).read_text())
    return stats["mean"], stats["std"]
