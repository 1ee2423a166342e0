"""The PPO details on tiny tensors, where the right answer can be worked out by hand."""

import pytest
import torch

from rlhf.models.ppo import KLController, gae, kl_rewards, masked_whiten, policy_loss, value_loss


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[1.0, 0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 1.0, 9.0]])  # the 9.0 sits after the end: ignored
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    gamma, lam = 1.0, 0.95
    d2 = 2.0 - 1.0  # terminal: no next value
    d1 = 0.0 + 1.0 - 0.2
    d0 = 1.0 + 0.2 - 0.5
    a2, a1 = d2, d1 + lam * d2
    a0 = d0 + lam * a1
    adv, ret = gae(rewards, values, mask, gamma, lam)
    assert adv[0].tolist() == pytest.approx([a0, a1, a2, 0.0])
    assert ret[0, :3].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 1.0])


def test_score_lands_on_last_real_token_and_kl_is_per_token():
    logp = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -2.0, -3.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0], [-1.0, -2.0, -3.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards, kl = kl_rewards(torch.tensor([5.0, 7.0]), logp, ref, mask, beta=0.1)
    assert kl[0].tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert rewards[0].tolist() == pytest.approx([-0.05, 5.0, 0.0])
    assert rewards[1].tolist() == pytest.approx([0.0, 0.0, 7.0])


def test_kl_is_zero_when_policy_equals_reference():
    logp = torch.randn(4, 6)
    rewards, kl = kl_rewards(torch.zeros(4), logp, logp.clone(), torch.ones(4, 6), beta=0.5)
    assert kl.abs().max() == 0 and rewards.abs().max() == 0


def test_whitening_ignores_masked_positions():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, mask)
    assert w[0, 3] == 0
    assert w[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert w[0, :3].pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_policy_loss_clips_the_ratio():
    old = torch.zeros(1, 2)
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    new = torch.log(torch.tensor([[1.5, 1.5]]))  # ratio 1.5 on both tokens
    loss, clipfrac, _ = policy_loss(new, old, adv, mask, cliprange=0.2)
    # token 0: positive advantage, gain capped at 1.2; token 1: negative, full 1.5 penalty
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert clipfrac.item() == pytest.approx(0.5)
    loss1, clip1, kl1 = policy_loss(old, old, adv, mask, 0.2)
    assert clip1.item() == 0 and kl1.item() == 0


def test_value_loss_uses_the_pessimistic_clipped_term():
    old = torch.zeros(1, 1)
    ret = torch.ones(1, 1)
    assert value_loss(
        torch.full((1, 1), 0.9), old, ret, torch.ones(1, 1), 0.2
    ).item() == pytest.approx(0.5 * 0.8**2)


def test_adaptive_kl_controller_moves_towards_target_and_fixed_does_not():
    ctl = KLController(0.1, target=1.0, horizon=100)
    ctl.update(kl=5.0, n_samples=10)
    assert ctl.beta == pytest.approx(0.1 * 1.02)
    ctl.update(kl=0.0, n_samples=10)
    assert ctl.beta < 0.1 * 1.02
    fixed = KLController(0.1)
    fixed.update(kl=5.0, n_samples=10)
    assert fixed.beta == 0.1
