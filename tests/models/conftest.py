"""Tiny real models shared by the model tests: a BPE tokenizer on demo text, a Llama LM."""

import random
from functools import partial

import pytest
import torch
from transformers import AutoModelForSequenceClassification, LlamaConfig

from rlhf.demo import task as demo
from rlhf.models.config import Architecture
from rlhf.models.lm import build_causal_lm
from rlhf.models.ppo_step import Actors, collect
from rlhf.models.reward import sample_scores
from rlhf.models.tokenizer import train_tokenizer

MICRO = Architecture(
    hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=128
)


@pytest.fixture(scope="session")
def tok():
    rng = random.Random(0)
    return train_tokenizer([demo.corpus_document(rng) for _ in range(200)], vocab_size=300)


@pytest.fixture(scope="module")
def lm(tok):
    torch.manual_seed(0)
    return build_causal_lm(tok, MICRO).eval()


def tiny_reward_model(lm):
    """A real sequence classifier with the LM's shape (untrained)."""
    config = LlamaConfig(**{**lm.config.to_dict(), "num_labels": 1})
    return AutoModelForSequenceClassification.from_config(config).eval()


def rm_scores(lm, tok, device="cpu"):
    """The PPO score function of a tiny (untrained) reward model."""
    return partial(sample_scores, tiny_reward_model(lm).to(device), pad_id=tok.pad_token_id)


PROMPTS = ["Write a positive review of the lamp that mentions the cable.", "Review the kettle."] * 4


def rollout(policy, ref, lm, tok, cfg, prompts=PROMPTS):
    """One PPO rollout of `policy` on CPU, scored by a tiny untrained reward model shaped like
    lm, at KL coefficient 0.1 against `ref` (None: the policy's LoRA adapter off)."""
    actors = Actors(policy, ref, rm_scores(lm, tok), tok)
    return collect(actors, prompts, cfg, beta=0.1, norm=(0.0, 1.0), device=torch.device("cpu"))
