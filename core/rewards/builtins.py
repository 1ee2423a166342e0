"""The built-in reward functions. Each is called as fn(prompts, completions, **fields, **args):
prompts as chat messages, completions as text, each other column of the prompt records as a
list (fields), the settings' args as keywords; each returns one float or None per completion.
"""

from __future__ import annotations

import re

from rlhf.core.evaluation.stats import repeated_share

NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def normalised(text: str, ignore_case: bool) -> str:
    """Text compared as an answer: spaces collapsed, a final full stop dropped."""
    text = " ".join(str(text).split()).rstrip(".")
    return text.lower() if ignore_case else text


def exact_match(
    prompts, completions, *, field: str = "answer", ignore_case: bool = True, **fields
) -> list[float | None]:
    """1 where the completion is the record's `field` (spaces and case aside), else 0; None
    where the record has no answer."""
    return [
        None
        if answer is None
        else float(normalised(c, ignore_case) == normalised(answer, ignore_case))
        for c, answer in zip(completions, fields[field])
    ]


def numeric_match(
    prompts, completions, *, field: str = "answer", tolerance: float = 0.0, **fields
) -> list[float | None]:
    """1 where the completion's first number is within tolerance of the record's `field`, else
    0 (no number: 0); None where the record has no answer."""
    out: list[float | None] = []
    for c, answer in zip(completions, fields[field]):
        found = NUMBER.search(c)
        if answer is None:
            out.append(None)
        else:
            out.append(
                float(found is not None and abs(float(found[0]) - float(answer)) <= tolerance)
            )
    return out


def regex(prompts, completions, *, pattern: str, must_match: bool = True, **fields) -> list[float]:
    """1 where the completion matches pattern (re.search), else 0; must_match false: the
    other way round (a phrase the completion must not contain)."""
    compiled = re.compile(pattern)
    return [float((compiled.search(c) is not None) == must_match) for c in completions]


def length_band(
    prompts, completions, *, target: int, tolerance: int, unit: str = "words", **fields
) -> list[float]:
    """1 where the completion's length (words or chars) is within tolerance of target, falling
    linearly to 0 at twice the tolerance away."""
    if unit not in ("words", "chars"):
        raise ValueError(f"unit {unit!r}: words or chars")
    out = []
    for c in completions:
        size = len(c.split()) if unit == "words" else len(c)
        beyond = max(0, abs(size - target) - tolerance)
        out.append(max(0.0, 1.0 - beyond / max(tolerance, 1)))
    return out


def repetition(prompts, completions, *, n: int = 3, **fields) -> list[float]:
    """The share of the completion's word n-grams that repeat an earlier one (0: none; give it
    a negative weight to penalise loops)."""
    return [repeated_share(c, n) for c in completions]
