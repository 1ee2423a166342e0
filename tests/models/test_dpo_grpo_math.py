"""DPO's and the group baselines' details on tiny tensors, against hand computations."""

import math

import pytest
import torch

from rlhf.models.batching import IGNORE
from rlhf.models.dpo import dpo_loss, preference_logits, sequence_logprobs
from rlhf.models.grpo import group_advantages, k3_kl


def test_sequence_logprobs_sum_only_the_labelled_tokens():
    logits = torch.zeros(1, 4, 3)  # uniform over 3 tokens: log p = -log 3 everywhere
    labels = torch.tensor([[IGNORE, IGNORE, 2, 1]])  # two response tokens
    assert sequence_logprobs(logits, labels).item() == pytest.approx(-2 * math.log(3))


def test_dpo_loss_and_gradient_match_hand_computation():
    chosen = torch.tensor([-3.0, -5.0], requires_grad=True)
    rejected = torch.tensor([-4.0, -2.0], requires_grad=True)
    ref_c, ref_r = torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0])
    beta = 0.5
    h = preference_logits(chosen, rejected, ref_c, ref_r)
    assert h.tolist() == pytest.approx([(0.5) - (-1.0), (-1.0) - (1.0)])  # 1.5, -2.0
    loss = dpo_loss(h, beta)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = -(math.log(sig(0.75)) + math.log(sig(-1.0))) / 2
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    # d/dchosen_i = -beta * (1 - sigmoid(beta h_i)) / B; rejected gets the opposite sign
    grad = [-beta * (1 - sig(beta * x)) / 2 for x in (1.5, -2.0)]
    assert chosen.grad.tolist() == pytest.approx(grad)
    assert rejected.grad.tolist() == pytest.approx([-g for g in grad])


def test_ipo_loss_is_zero_at_its_target_margin():
    beta = 0.25
    h = torch.tensor([1 / (2 * beta)])
    assert dpo_loss(h, beta, "ipo").item() == pytest.approx(0.0)
    assert dpo_loss(torch.tensor([0.0]), beta, "ipo").item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="unknown DPO loss"):
        dpo_loss(h, beta, "kto")


def test_grpo_advantages_are_standardised_within_each_group():
    scores = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    adv = group_advantages(scores, k=3, baseline="grpo")
    # group 1: mean 2, std (unbiased) 1; group 2: all equal, so no signal
    assert adv[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-3)
    assert adv[3:].tolist() == [0.0, 0.0, 0.0]


def test_rloo_baseline_leaves_each_response_out():
    scores = torch.tensor([1.0, 2.0, 6.0, 0.0])
    adv = group_advantages(scores, k=4, baseline="rloo")
    assert adv.tolist() == pytest.approx([1 - 8 / 3, 2 - 7 / 3, 6 - 3 / 3, 0 - 9 / 3])
    with pytest.raises(ValueError, match="k >= 2"):
        group_advantages(scores, k=1, baseline="rloo")


def test_k3_kl_is_zero_at_the_reference_and_positive_elsewhere():
    logp = torch.tensor([-1.0, -2.0])
    assert k3_kl(logp, logp).tolist() == [0.0, 0.0]
    kl = k3_kl(logp, torch.tensor([-1.5, -1.0]))
    assert kl.tolist() == pytest.approx([math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1 - 1])
    assert (kl > 0).all()
