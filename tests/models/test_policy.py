"""Generation and the PPO passes on a real (tiny, untrained) model."""

import pytest
import torch

from rlhf.models.config import PPO
from rlhf.models.generation import response_logits, response_mask, sample, token_logprobs
from rlhf.models.ppo import PolicyWithValue
from tests.models.conftest import rollout


def test_response_mask_stops_after_first_eos():
    r = torch.tensor([[5, 6, 0, 7, 0], [5, 6, 7, 8, 9]])
    mask, has_eos = response_mask(r, eos_id=0)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert has_eos.tolist() == [True, False]


def test_left_padding_does_not_change_a_prompts_logprobs(tok, lm):
    torch.manual_seed(1)
    prompts = ["Write a positive review of the kettle that mentions the lid.", "Hi"]
    s = sample(lm, tok, prompts, max_new_tokens=6, temperature=1.0, device=torch.device("cpu"))
    assert s.query_mask[1].sum() < s.query_mask[0].sum()  # the short prompt is left-padded
    alone = s.select(torch.tensor([1]))
    alone.query_ids = alone.query_ids[:, alone.query_mask[0] == 1]
    alone.query_mask = alone.query_mask[:, alone.query_mask[0] == 1]
    batched = token_logprobs(response_logits(lm, s), s.response_ids, 1.0)[1]
    single = token_logprobs(response_logits(lm, alone), alone.response_ids, 1.0)[0]
    m = s.response_mask[1].bool()
    torch.testing.assert_close(batched[m], single[m], atol=1e-5, rtol=1e-5)


def test_value_head_starts_at_zero_and_ratio_is_one_before_the_first_update(tok, lm):
    policy = PolicyWithValue(lm)
    cfg = PPO(max_new_tokens=6)
    torch.manual_seed(2)
    ro = rollout(policy, lm, lm, tok, cfg, ["Write a review of the lamp."] * 4)
    assert ro.old_values.abs().max() == 0
    logits, _ = policy(**ro.samples.model_inputs())
    fresh = token_logprobs(
        ro.samples.response_part(logits), ro.samples.response_ids, cfg.temperature
    )
    mask = ro.samples.response_mask.bool()
    ratio = (fresh - ro.old_logprobs).exp()[mask]
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-6, rtol=0)
    assert ro.stats["kl"] == pytest.approx(0.0, abs=1e-6)  # policy is the reference here
