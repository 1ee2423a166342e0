"""The judges a policy is scored by, besides the reward model it was optimised against.

The evaluation reward models (the judge stage's members, trained on pairs the reward model
never saw) choose PPO's snapshot and decide promotion; their scores are the `judge_<i>`
columns of the samples and their mean the `judge` one.

A reference judge is any function `(prompts, responses) -> scores` with a score in [0, 1]
per response, or NaN where it cannot judge that prompt. The demo's gold judge is one
(`evaluate.reference_judge: rlhf.demo.gold:judge` in params.yaml): a referee that is reported,
never one that decides. On real data the field is empty and every score is NaN. Its scores
are the `gold_*` metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from rlhf.core.pipeline.plugins import load_plugin
from rlhf.core.settings import Settings, UserError

ReferenceJudge = Callable[[list[str], list[str]], list[float]]
MEMBER = "member-{}"  # the judge stage's model/<member-i> folders


def load_members(folder: Path, device: torch.device) -> list[PreTrainedModel]:
    """The judge stage's evaluation reward models, in member order."""
    found = sorted(folder.glob(MEMBER.format("*")), key=lambda p: int(p.name.split("-")[1]))
    if not found:
        raise UserError(f"{folder}: no judge members (run the judge stage)")
    return [AutoModelForSequenceClassification.from_pretrained(p).to(device).eval() for p in found]


def reference_judge(settings: Settings) -> ReferenceJudge | None:
    return load_plugin(settings, "evaluate.reference_judge")


def reference_scores(
    judge: ReferenceJudge | None, prompts: list[str], responses: list[str]
) -> list[float]:
    """The judge's score of each response; NaN throughout when there is no judge."""
    if judge is None:
        return [math.nan] * len(responses)
    scores = [float(s) for s in judge(prompts, responses)]
    if len(scores) != len(responses):
        raise UserError(
            f"evaluate.reference_judge returned {len(scores)} scores for {len(responses)} responses"
        )
    return scores
