"""The online loop's parts that stand alone; the loop itself runs in tests/tasks/test_policy.py."""

import torch

from rlhf.core.policy.online import LastGood, guard
from rlhf.core.settings import METHODS, PPO


def test_the_guard_names_the_problem_and_the_methods_section():
    cfg, ppo, grpo = PPO(max_kl=5.0), METHODS["ppo"], METHODS["grpo"]
    ok = {"score": 0.1, "kl": 1.0, "entropy": 2.0}
    assert guard(ok, cfg, ppo) is None
    assert guard({**ok, "kl": 6.0}, cfg, ppo) == "KL 6.00 above ppo.max_kl 5.0"
    assert guard({**ok, "kl": 6.0}, cfg, grpo) == "KL 6.00 above group.max_kl 5.0"
    assert guard({**ok, "score": float("nan")}, cfg, ppo) == "non-finite score in the rollout"


def test_last_good_restores_what_it_kept():
    layer = torch.nn.Linear(2, 2)
    kept = LastGood(layer)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        layer.weight.add_(1.0)
    kept.restore()
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
