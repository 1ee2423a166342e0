"""Simulated annotators: noisy Bradley-Terry choosers over the gold score.

One of them is biased towards length, so their agreement with gold is imperfect, as with
real people. `label_studio_export` answers a batch to label as Label Studio exports it: the
feedback loop's `loop.annotators` plugin for the demo.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from rlhf.demo.gold import gold_score


@dataclass(frozen=True)
class Annotator:
    name: str
    rationality: float  # Bradley-Terry inverse temperature on the gold-score difference
    length_bias: float = 0.0  # extra preference per word of length difference


ANNOTATORS = [
    Annotator("ann-careful-1", 12.0),
    Annotator("ann-careful-2", 12.0),
    Annotator("ann-hasty", 4.0),
    Annotator("ann-verbose", 6.0, length_bias=0.25),
    Annotator("ann-careful-3", 10.0),
]


def prefers_first(ann: Annotator, prompt: str, a: str, b: str, rng: random.Random) -> bool:
    logit = ann.rationality * (gold_score(prompt, a) - gold_score(prompt, b))
    logit += ann.length_bias * (len(a.split()) - len(b.split()))
    return rng.random() < 1.0 / (1.0 + math.exp(-logit))


def label_studio_export(tasks: list[dict], seed: int) -> list[dict]:
    """The annotators label a Label Studio import (core/feedback/collect.py) and export it:
    each task with one pairwise annotation, as Label Studio writes them ("left" = answer1)."""
    rng = random.Random(seed)
    out = []
    for i, task in enumerate(tasks):
        d, ann = task["data"], rng.choice(ANNOTATORS)
        left = prefers_first(ann, d["prompt"], d["answer1"], d["answer2"], rng)
        result = {
            "type": "pairwise",
            "from_name": "comparison",
            "to_name": ["answer1", "answer2"],
            "value": {"selected": "left" if left else "right"},
        }
        out.append(
            {
                "id": i + 1,
                "data": d,
                "annotations": [
                    {
                        "id": i + 1,
                        "completed_by": {"email": ann.name},
                        "was_cancelled": False,
                        "result": [result],
                    }
                ],
            }
        )
    return out


def second_opinions(pairs: list[dict], fraction: float, seed: int) -> list[dict]:
    """A later round: another annotator judges a sample of the same comparisons, so the
    feedback has overlap to measure agreement on (its own generator keeps the first round's
    data unchanged)."""
    rng = random.Random(seed + 1)
    out = []
    for pair in rng.sample(pairs, int(len(pairs) * fraction)):
        ann = rng.choice([a for a in ANNOTATORS if a.name != pair["annotator"]])
        a, b = pair["chosen"], pair["rejected"]
        chosen, rejected = (a, b) if prefers_first(ann, pair["prompt"], a, b, rng) else (b, a)
        out.append({**pair, "chosen": chosen, "rejected": rejected, "annotator": ann.name})
    return out
