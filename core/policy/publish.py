"""The ending every policy method shares: the judge's best snapshot within the KL budget (not the
last one) becomes the policy, saved as a plain transformers checkpoint beside history.csv and all
the snapshots, and registered as `<prefix>-policy` with its method (the version's tag `method`).

Snapshots are the language model's plain weights (a LoRA adapter merged in), one file per
iteration kept (rlhf.core.evaluation.selection.SNAPSHOT).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Protocol

import pandas as pd
import torch

from rlhf.core.evaluation.records import JUDGE
from rlhf.core.evaluation.sampling import Bench, Scorer
from rlhf.core.evaluation.selection import SNAPSHOT, best_snapshot
from rlhf.core.pipeline.context import StageContext
from rlhf.core.rewards.functions import provenance
from rlhf.core.settings import Method
from rlhf.models.distributed import Dist
from rlhf.models.lora import merged
from rlhf.models.rollout import ONE_PROCESS


class Sampling(Protocol):
    """How a method samples its snapshots for the judge (its settings section)."""

    @property
    def max_new_tokens(self) -> int: ...

    @property
    def temperature(self) -> float: ...


def save_snapshot(folder: Path, iteration: int, lm, dist: Dist = ONE_PROCESS) -> None:
    """The LM's plain weights as snapshot `iteration`, written by the main process (every
    process calls: a sharded LM is gathered)."""
    if not (dist.main or dist.sharded):
        return
    weights = dist.state_dict(merged(lm))
    if not dist.main:
        return
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".iter-{iteration:05d}.tmp"
    torch.save(weights, tmp)
    tmp.replace(folder / SNAPSHOT.format(iteration))


def publish(
    ctx: StageContext,
    method: Method,
    start_lm,
    tok,
    snapshots: Path,
    history: pd.DataFrame,
    sampling: Sampling,
    device: torch.device,
    functions: Scorer | None = None,
) -> dict:
    """Choose, save and register the policy; the selection's metrics. start_lm: the model the
    snapshots' weights load into (the SFT model, unsharded, without an adapter); device: where
    the judge samples the snapshots; functions: the reward functions' weighted sum on the
    training prompts, the judge when there is no reward model."""
    settings = ctx.settings
    bench = Bench.load(
        settings,
        device,
        sampling.max_new_tokens,
        sampling.temperature,
        where=ctx.input,
        with_reference=False,
        functions=functions,
    )
    prompts = pd.read_parquet(ctx.input("ingest", "prompts_train.parquet"))["prompt"].tolist()
    chosen, why, curve = best_snapshot(snapshots, bench, prompts, settings.judge, settings.seed)
    print(f"{method.name}: policy = {why}", file=sys.stderr)
    curve.to_csv(ctx.out / "selection.csv", index=False)
    lm = merged(start_lm)
    lm.load_state_dict(torch.load(snapshots / SNAPSHOT.format(chosen), weights_only=True))
    lm.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    history.to_csv(ctx.out / "history.csv")
    shutil.move(snapshots, ctx.out / "snapshots")
    # which reward functions, weights and code made it (rlhf lineage shows it)
    made_by = (
        {"rewards": provenance(settings)} if method.online and settings.rewards.functions else {}
    )
    ctx.register(ctx.out / "model", selected=why, method=method.name, **made_by)
    return {
        "selected_iteration": chosen,
        **{
            f"selected_{k}": float(curve.loc[curve["chosen"], k].iloc[0])
            for k in ("kl", "rm", JUDGE)
        },
    }
