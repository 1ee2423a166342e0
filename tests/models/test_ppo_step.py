"""The PPO iteration on a tiny real model: the passes agree with each other, a rewarded token
is learned, a broken update is refused, and the memory options compute the same thing."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhf.models.config import PPO, Lora
from rlhf.models.distributed import Dist
from rlhf.models.generation import response_logits
from rlhf.models.lora import merged
from rlhf.models.ppo import PolicyWithValue
from rlhf.models.ppo_step import Actors, Unstable, collect, update
from rlhf.tasks.policy.ppo import build_policy
from tests.models.conftest import PROMPTS, rollout

CPU = torch.device("cpu")


def test_the_update_starts_from_the_rollouts_logprobs_at_any_temperature(tok, lm):
    """Old logprobs (eval-mode pass in the rollout) equal the update's own (train mode): with
    dropout off and logits / temperature in both, the first ratio is exactly 1."""
    cfg = PPO(max_new_tokens=6, temperature=0.7, ppo_epochs=1, minibatch_size=8)
    policy = PolicyWithValue(copy.deepcopy(lm))
    torch.manual_seed(0)
    ro = rollout(policy, lm, lm, tok, cfg)
    stats = update(policy, torch.optim.SGD(policy.parameters(), lr=0.0), ro, cfg, device=CPU)
    assert stats["approx_kl"] == pytest.approx(0.0, abs=1e-7) and stats["clipfrac"] == 0.0


@pytest.mark.integration  # trains for 30 iterations
def test_a_policy_rewarded_for_one_token_learns_to_emit_it(tok, lm):
    """From about 1 in 200 tokens to most of them. The rollout is large enough that the target
    is sampled from the first iterations on, so when the policy takes off depends little on
    the seed or on the CPU's rounding (a small rollout can go dozens of iterations without
    sampling it at all)."""
    target = tok(" great", add_special_tokens=False)["input_ids"][0]

    def share_of_target(s):  # the reward: how much of the response is the target token
        return ((s.response_ids == target) * s.response_mask).sum(1) / s.response_mask.sum(1)

    cfg = PPO(
        max_new_tokens=8,
        rollout_batch_size=48,
        minibatch_size=24,
        ppo_epochs=4,
        lr=1e-2,
        no_eos_penalty=None,
    )  # the untrained model never ends: keep every score
    torch.manual_seed(0)
    policy = PolicyWithValue(copy.deepcopy(lm))
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    shares = []
    for _ in range(30):
        ro = collect(
            Actors(policy, lm, share_of_target, tok),
            PROMPTS * 6,
            cfg,
            beta=0.0,
            norm=(0.0, 1.0),
            device=CPU,
        )
        shares.append(ro.raw_scores.mean().item())
        update(policy, opt, ro, cfg, device=CPU)
    assert shares[0] < 0.02 and sum(shares[-5:]) / 5 > 0.5, shares


def test_a_non_finite_gradient_is_refused_before_the_step(tok, lm):
    cfg = PPO(max_new_tokens=6, ppo_epochs=1, minibatch_size=8)
    policy = PolicyWithValue(copy.deepcopy(lm))
    ro = rollout(policy, lm, lm, tok, cfg)
    ro.advantages[0, 0] = float("nan")
    before = copy.deepcopy(policy.state_dict())
    with pytest.raises(Unstable, match="non-finite gradient"):
        update(policy, torch.optim.SGD(policy.parameters(), lr=0.1), ro, cfg, device=CPU)
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_lora_reference_is_the_sft_model_and_the_trained_policy_saves_as_plain_weights(
    tok, lm, tmp_path
):
    lm.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    cfg = PPO(max_new_tokens=6, ppo_epochs=2, minibatch_size=4, reference="lora", lr=1e-2)
    policy, ref = build_policy(str(tmp_path / "sft"), tok, cfg, Lora(), Dist(device=CPU))
    assert ref is None
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("v_head") for n in trainable)
    torch.manual_seed(0)
    ro = rollout(policy, None, lm, tok, cfg)
    assert ro.stats["kl"] == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at zero
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr)
    update(policy, opt, ro, cfg, device=CPU)

    s = ro.samples
    with policy.lm.disable_adapter():  # adapter off: still exactly the SFT model
        torch.testing.assert_close(response_logits(policy.lm, s), response_logits(lm, s))
    trained = response_logits(policy.lm, s)
    assert not torch.allclose(trained, response_logits(lm, s))
    merged(policy.lm).save_pretrained(tmp_path / "policy")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    torch.testing.assert_close(response_logits(again, s), trained, atol=1e-4, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_update(tok, lm, tmp_path):
    lm.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    cfg = PPO(max_new_tokens=6, ppo_epochs=1, minibatch_size=8)
    torch.manual_seed(0)
    ro = rollout(PolicyWithValue(lm), lm, lm, tok, cfg)
    weights = []
    for checkpointing in (False, True):
        policy, _ = build_policy(
            str(tmp_path / "sft"),
            tok,
            cfg.model_copy(update={"gradient_checkpointing": checkpointing}),
            Lora(),
            Dist(device=CPU),
        )
        assert policy.lm.is_gradient_checkpointing == checkpointing
        torch.manual_seed(1)
        update(policy, torch.optim.SGD(policy.parameters(), lr=0.1), ro, cfg, device=CPU)
        weights.append(policy.state_dict())
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], atol=1e-6, rtol=1e-5)


@pytest.mark.slow  # compiling takes about 40 s on 2 CPU cores
def test_a_compiled_update_computes_the_eager_update(tok, lm):
    cfg = PPO(max_new_tokens=6, ppo_epochs=2, minibatch_size=4)
    torch.manual_seed(0)
    ro = rollout(PolicyWithValue(lm), lm, lm, tok, cfg)
    weights = []
    for compiled in (False, True):
        policy = PolicyWithValue(copy.deepcopy(lm))
        opt = torch.optim.SGD(policy.parameters(), lr=0.1)
        torch.manual_seed(1)
        update(
            torch.compile(policy, dynamic=True) if compiled else policy, opt, ro, cfg, device=CPU
        )
        weights.append(policy.state_dict())
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], atol=1e-5, rtol=1e-4)
