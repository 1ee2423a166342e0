"""Two processes (torchrun, gloo on CPU) compute the same PPO update as one process on the same
global batch."""

import copy
import subprocess

import pytest
import torch

from rlhf.models.config import PPO
from rlhf.models.ppo import PolicyWithValue, masked_whiten
from rlhf.models.ppo_step import update
from tests.models.conftest import rollout
from tests.support.processes import torchrun
from tests.support.project import ROOT

pytestmark = pytest.mark.integration  # starts two processes


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_update_as_one_process_on_the_same_batch(tok, lm, tmp_path, strategy):
    # one minibatch per epoch, so both runs average the same tokens at every step
    cfg = PPO(max_new_tokens=8, rollout_batch_size=8, minibatch_size=8, ppo_epochs=3, lr=1e-3)
    policy = PolicyWithValue(copy.deepcopy(lm))
    torch.manual_seed(0)
    ro = rollout(policy, lm, lm, tok, cfg)
    ro.samples.response_mask[:4, 3:] = 0  # process 0's half has far fewer tokens than 1's
    raw = torch.randn_like(ro.advantages) * 3 + 1
    lm.save_pretrained(tmp_path / "lm")  # the policy is this LM with a zero value head
    torch.save(
        {"rollout": ro, "raw": raw, "lm": str(tmp_path / "lm"), "cfg": cfg}, tmp_path / "case.pt"
    )

    out = subprocess.run(
        [
            *torchrun(2),
            str(ROOT / "tests/models/ddp_update.py"),
            str(tmp_path / "case.pt"),
            str(tmp_path / "two.pt"),
            strategy,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt", weights_only=False)

    mask = ro.samples.response_mask.float()
    torch.testing.assert_close(two["whitened"], masked_whiten(raw, mask))
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    torch.manual_seed(0)
    stats = update(policy, opt, ro, cfg, device=torch.device("cpu"))
    moved = 0
    for name, weight in policy.state_dict().items():
        torch.testing.assert_close(two["weights"][name], weight, atol=2e-6, rtol=1e-4)
        moved += not torch.equal(weight, lm.state_dict().get(name.removeprefix("lm."), weight))
    assert moved > 0  # the update did change the weights
    for k in ("pg_loss", "vf_loss"):
        assert abs(two["stats"][k] - stats[k]) < 1e-5 * max(1.0, abs(stats[k])), k
    # the gathered state (what a checkpoint keeps) loads back into fresh shards unchanged
    weights, moments = two["reloaded"]
    for name, weight in two["weights"].items():
        assert torch.equal(weights[name], weight), name
    assert moments["state"].keys() == two["moments"]["state"].keys()
    for name, state in two["moments"]["state"].items():
        assert torch.equal(moments["state"][name]["exp_avg"], state["exp_avg"]), name
