"""PPO and the Trainer loop on a CUDA device with bf16 autocast: the same code as on CPU."""

import copy
import random

import pytest
import torch

from rlhf.core.settings import Pretrain
from rlhf.demo import task as demo
from rlhf.models.config import PPO
from rlhf.models.ppo import PolicyWithValue
from rlhf.models.ppo_step import Actors, collect, update
from rlhf.tasks.pretrain import train_base
from tests.models.conftest import rm_scores

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_ppo_iterations_run_on_cuda_with_bf16(tok, lm):
    device = torch.device("cuda")
    policy = PolicyWithValue(copy.deepcopy(lm)).to(device)
    ref = copy.deepcopy(lm).to(device).eval()
    score_fn = rm_scores(lm, tok, device)
    cfg = PPO(max_new_tokens=8, rollout_batch_size=16, minibatch_size=8, ppo_epochs=2)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    prompts = ["Write a positive review of the lamp that mentions the cable."] * 16
    before = [p.detach().clone() for p in policy.parameters()]
    for _ in range(3):
        ro = collect(
            Actors(policy, ref, score_fn, tok),
            prompts,
            cfg,
            beta=0.05,
            norm=(0.0, 1.0),
            device=device,
        )
        assert ro.samples.response_ids.is_cuda
        stats = update(policy, opt, ro, cfg, device=device)
        assert all(torch.isfinite(torch.tensor(v)) for v in {**ro.stats, **stats}.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, _ = policy(**ro.samples.model_inputs())
    assert logits.dtype == torch.bfloat16


def test_pretraining_runs_on_cuda_with_bf16(tmp_path):
    """The supervised stages' Trainer loop on the GPU (bf16 autocast comes from the Trainer)."""
    rng = random.Random(0)
    docs = [demo.corpus_document(rng) for _ in range(300)]
    cfg = Pretrain(vocab_size=320, steps=20, batch_size=8, warmup_steps=2, eval_every=10)
    model, _, m = train_base(
        docs, cfg, seed=0, device=torch.device("cuda"), work=tmp_path, log=lambda m, s: None
    )
    assert next(model.parameters()).is_cuda and m["steps"] == 20
    assert m["eval_perplexity"] < 2 * m["unigram_perplexity"]
    assert torch.isfinite(torch.tensor(m["train_loss"]))
