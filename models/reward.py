"""Reward model: a scalar head on the SFT backbone, trained with the Bradley-Terry loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def build_reward_model(backbone_dir: str, tokenizer):
    """AutoModelForSequenceClassification with one label, initialised from the SFT weights.

    The head reads the last non-PAD token; inputs are right-padded and end in EOS, so the
    score is read at EOS.
    """
    from transformers import AutoModelForSequenceClassification

    from models.lm import check_checkpoint_dir

    model = AutoModelForSequenceClassification.from_pretrained(
        check_checkpoint_dir(backbone_dir), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    torch.nn.init.normal_(model.score.weight, std=1.0 / (model.config.hidden_size + 1) ** 0.5)
    return model


def scores(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] scalar rewards of right-padded sequences."""
    return model(input_ids=ids, attention_mask=mask).logits.squeeze(-1).float()


@torch.no_grad()
def sample_scores(model, samples, pad_id: int) -> torch.Tensor:
    """[B] rewards of sampled responses (models.generation.Samples), read at their EOS."""
    from models.generation import repack_right

    return scores(model, *repack_right(samples, pad_id))


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), the negative log-likelihood of the preference."""
    return -F.logsigmoid(chosen - rejected).mean()
