"""The reference judge: an optional scorer independent of the reward model.

A reference judge is any function `(prompts, responses) -> scores` with a score in [0, 1] per
response, or NaN where it cannot judge that prompt. The demo's gold judge is one
(`evaluate.reference_judge: rlhf.demo.gold:judge` in params.yaml); on real data the field is
empty, every score is NaN, and the evaluation reports the reward model's view alone. Its
scores are the `gold_*` metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from rlhf.core.plugins import load_plugin
from rlhf.core.settings import Settings, UserError

ReferenceJudge = Callable[[list[str], list[str]], list[float]]


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
