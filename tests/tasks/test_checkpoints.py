"""A team's own checkpoint: a tiny random GPT-2, GPT-NeoX, Qwen2 or Llama, each with a tokenizer
shaped like its family's (tests/support/checkpoints.py), runs the whole tiny pipeline from
`pretrain.init_checkpoint`; every model it makes loads with plain transformers."""

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhf.core.settings import load_settings
from rlhf.demo import task as demo
from rlhf.flows.runner import run_stage
from rlhf.tasks import STAGES
from tests.support.checkpoints import FAMILIES, tiny_checkpoint
from tests.support.project import make_project

# GPT-2 (no chat template, learned positions) and Qwen2 (ChatML, no BOS) in the default suite
FAMILY_TESTS = [
    pytest.param(name, marks=() if name in ("gpt2", "qwen2") else pytest.mark.e2e)
    for name in FAMILIES
]


@pytest.mark.parametrize("family", FAMILY_TESTS)
def test_a_local_checkpoint_of_each_family_runs_the_pipeline(tmp_path, family):
    root = make_project(tmp_path / "project", {"pretrain": {"init_checkpoint": "base"}})
    rng = random.Random(0)
    tiny_checkpoint(family, root / "base", [demo.corpus_document(rng) for _ in range(200)])
    settings = load_settings(root / "params.yaml")
    records = {s.name: run_stage(s, settings) for s in STAGES}

    assert records["pretrain"]["metrics"]["trained"] == 0
    art = root / "artifacts"
    tok = AutoTokenizer.from_pretrained(art / "policy/model")
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.chat_template  # the family's own, or the project's where it had none
    policy = AutoModelForCausalLM.from_pretrained(art / "policy/model")
    assert type(policy).__name__.lower().startswith(family.replace("_", ""))
    reward = AutoModelForSequenceClassification.from_pretrained(art / "reward/model")
    with torch.no_grad():
        ids = tok("a review", return_tensors="pt")
        assert reward(**ids).logits.shape == (1, 1)
    assert records["evaluate"]["metrics"]["judge_win_rate_policy_vs_sft"] is not None
    assert records["evaluate"]["metrics"]["eval_prompts"] > 0
