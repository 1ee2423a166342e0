"""The GRPO / RLOO iteration on a tiny real model: the passes agree, and a rewarded token is
learned with either baseline."""

import copy

import pytest
import torch

from rlhf.models.config import Group
from rlhf.models.grpo_step import collect_groups, update_groups
from tests.models.conftest import PROMPTS, rm_scores

CPU = torch.device("cpu")


@pytest.mark.parametrize("baseline", ["grpo", "rloo"])
def test_the_update_starts_from_the_rollouts_logprobs(tok, lm, baseline):
    cfg = Group(max_new_tokens=6, temperature=0.7, group_size=2)
    policy = copy.deepcopy(lm)
    torch.manual_seed(0)
    ro = collect_groups(
        policy,
        lm,
        rm_scores(lm, tok),
        tok,
        PROMPTS,
        cfg,
        baseline=baseline,
        norm=(0.0, 1.0),
        device=CPU,
    )
    assert ro.advantages.shape == (len(PROMPTS) * 2,)
    assert ro.kl.abs().max() < 1e-5  # the policy is still the reference
    stats = update_groups(
        policy, torch.optim.SGD(policy.parameters(), lr=0.0), ro, cfg, baseline=baseline, device=CPU
    )
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-7) and stats["clipfrac"] == 0.0


@pytest.mark.integration  # trains for 30 iterations per baseline
@pytest.mark.parametrize("baseline", ["grpo", "rloo"])
def test_a_policy_rewarded_for_one_token_learns_to_emit_it(tok, lm, baseline):
    target = tok(" great", add_special_tokens=False)["input_ids"][0]

    def share_of_target(s):
        return ((s.response_ids == target) * s.response_mask).sum(1) / s.response_mask.sum(1)

    cfg = Group(
        max_new_tokens=8,
        group_size=6,
        minibatch_size=24,
        epochs=2,
        lr=1e-2,
        kl_coef=0.0,
        no_eos_penalty=None,
    )
    torch.manual_seed(0)
    policy = copy.deepcopy(lm)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    shares = []
    for _ in range(30):
        ro = collect_groups(
            policy,
            lm,
            share_of_target,
            tok,
            PROMPTS,
            cfg,
            baseline=baseline,
            norm=(0.0, 1.0),
            device=CPU,
        )
        shares.append(ro.raw_scores.mean().item())
        update_groups(policy, opt, ro, cfg, baseline=baseline, device=CPU)
    assert shares[0] < 0.02 and sum(shares[-5:]) / 5 > 0.5, shares
