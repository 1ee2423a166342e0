"""The gold judge: scores a response by checking the prompt's constraints.

It punishes degenerate text (too short, looping), so a policy cannot win by reward-hacking to
empty or looping answers. It only labels and evaluates; nothing trains on it. `judge` is its
reference-judge interface (rlhf.core.evaluation.judges), named in params.yaml.
"""

from __future__ import annotations

import math
import re

from rlhf.demo.task import NEGATIVE, POSITIVE, parse_prompt

WORD_RE = re.compile(r"[a-z]+")


def is_degenerate(words: list[str]) -> bool:
    """Too short, or looping: the shapes reward hacking takes in small models."""
    if len(words) < 3:
        return True
    if any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)):
        return True
    return len(set(words)) / len(words) < 0.5


def gold_score(prompt: str, response: str) -> float:
    """Score in [0, 1]: sentiment 0.4, item 0.25, aspect 0.2, length and ending 0.15."""
    spec = parse_prompt(prompt)
    if spec is None:
        raise ValueError(f"not a demo prompt: {prompt!r}")
    words = WORD_RE.findall(response.lower())
    if is_degenerate(words):
        return 0.0
    right, wrong = (POSITIVE, NEGATIVE) if spec.sentiment == "positive" else (NEGATIVE, POSITIVE)
    n_right = sum(w in right for w in words)
    n_wrong = sum(w in wrong for w in words)
    score = 0.4 if n_right and not n_wrong else 0.1 if n_right else 0.0
    score += 0.25 * (spec.item in words)
    score += 0.2 * (spec.aspect in words)
    score += 0.15 * (5 <= len(words) <= 20 and response.rstrip().endswith("."))
    return round(score, 4)


def judge(prompts: list[str], responses: list[str]) -> list[float]:
    """Gold scores where the prompt is one of the demo's, NaN elsewhere."""
    return [gold_score(p, r) if parse_prompt(p) else math.nan for p, r in zip(prompts, responses)]
