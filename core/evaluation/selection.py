"""PPO's best snapshot: the one the independent judge scores highest within the KL budget.

The last iteration is not necessarily the best: past some KL to the reference, the reward
model's score keeps rising while what it stands for falls (over-optimisation), and the reward
model cannot see that. So each snapshot PPO kept is sampled on judge.selection_prompts
training prompts at judge.selection_samples paired seeds, and the evaluation reward models'
mean score picks among the snapshots whose mean KL is within judge.kl_budget: early stopping
by a judge the policy was not trained to please. Without a reward model the reward functions'
weighted sum is that judge: a checkable reward is what the policy should please. With none
within the budget, the snapshot nearest to it is kept, and promotion refuses it for its KL.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from rlhf.core.evaluation.records import JUDGE
from rlhf.core.evaluation.sampling import Bench, score_vs_kl
from rlhf.core.settings import Judge

SNAPSHOT = "iter-{:05d}.pt"


def selection_prompts(prompts: list[str], cfg: Judge, seed: int) -> list[str]:
    """A fixed sample of the training prompts (the same for every snapshot)."""
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed))
    return [prompts[i] for i in order[: cfg.selection_prompts].tolist()]


def choose(
    curve: pd.DataFrame, kl_budget: float, select: str = "best", whose: str = "the judge's"
) -> tuple[int, str]:
    """The iteration to keep, from score_vs_kl's table (iteration 0, the reference itself, is
    not a candidate), and why; whose: who scored the curve's judge column, for people."""
    snapshots = curve[curve["iteration"] > 0]
    if select == "last":
        return int(snapshots["iteration"].max()), "the last iteration (judge.select: last)"
    within = snapshots[snapshots["kl"] <= kl_budget]
    if within.empty:
        best = snapshots.loc[snapshots["kl"].idxmin()]
        return int(best["iteration"]), (
            f"no snapshot within the KL budget {kl_budget:g}; kept the nearest, iteration "
            f"{int(best['iteration'])} (KL {best['kl']:.2f})"
        )
    best = within.loc[within[JUDGE].idxmax()]
    return int(best["iteration"]), (
        f"iteration {int(best['iteration'])} of {int(snapshots['iteration'].max())}: "
        f"{whose} best ({best[JUDGE]:+.3f}) of {len(within)} snapshot(s) within the KL budget "
        f"{kl_budget:g} (its KL {best['kl']:.2f})"
    )


def best_snapshot(
    snapshots: Path, bench: Bench, prompts: list[str], cfg: Judge, seed: int
) -> tuple[int, str, pd.DataFrame]:
    """(iteration, reason, the curve it was chosen on)."""
    prompts = selection_prompts(prompts, cfg, seed)
    seeds = [seed + 2000 + k for k in range(cfg.selection_samples)]
    reference = bench.sample_policies({"sft": bench.ref}, prompts, seeds)
    curve = score_vs_kl(snapshots, bench, prompts, seeds, reference)
    whose = "the judge's" if bench.functions is None else "the reward functions'"
    iteration, reason = choose(curve, cfg.kl_budget, cfg.select, whose)
    return iteration, reason, curve.assign(chosen=curve["iteration"] == iteration)
