"""Win rates with bootstrap intervals, means that skip missing judgements, distinct-n."""

from __future__ import annotations

import math

import numpy as np


def mean(xs) -> float | None:
    """Mean over the values a judge gave (NaN: the judge did not apply); None if none."""
    xs = [float(x) for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else None


def wins(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per paired sample: 1 where a beats b, 1/2 on a tie, 0 where b wins."""
    return (a > b) + 0.5 * (a == b)


def win_rate(a, b) -> float:
    """P(a > b) over paired samples, ties counting one half."""
    return float(wins(np.asarray(a, float), np.asarray(b, float)).mean())


def win_rate_interval(
    per_prompt: np.ndarray, resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float, float]:
    """Win rate and its percentile-bootstrap interval.

    per_prompt: [P, K] win indicators, K paired samples per prompt. Prompts are resampled, not
    samples: the K samples of one prompt are correlated, and treating them as independent
    would give intervals that are too narrow.
    """
    rate = float(per_prompt.mean())
    by_prompt = per_prompt.mean(1)  # [P]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(by_prompt), size=(resamples, len(by_prompt)))  # [B, P]
    boot = by_prompt[idx].mean(1)  # [B]
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    return rate, float(lo), float(hi)


def distinct_n(texts: list[str], n: int) -> float | None:
    """Distinct word n-grams over all n-grams of all texts: low values mean repetition; None
    where no text is n words long (one-word answers have no bigrams to repeat)."""
    grams = [tuple(w[i : i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def repeated_share(text: str, n: int) -> float:
    """The share of the text's word n-grams that repeat an earlier one (0: none repeats)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0
