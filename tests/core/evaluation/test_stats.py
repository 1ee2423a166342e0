import numpy as np
import pytest

from rlhf.core.evaluation.stats import distinct_n, mean, win_rate, win_rate_interval, wins


def test_wins_count_ties_as_half():
    assert wins(np.array([2.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0])).tolist() == [1.0, 0.5, 0.0]
    assert win_rate([2, 1, 0, 5], [1, 1, 1, 4]) == pytest.approx(2.5 / 4)


def test_interval_holds_the_rate_and_narrows_with_more_prompts():
    rng = np.random.default_rng(0)
    small = (rng.random((20, 4)) < 0.7).astype(float)
    large = (rng.random((400, 4)) < 0.7).astype(float)
    rate, lo, hi = win_rate_interval(small, 2000, seed=0)
    assert lo < rate < hi
    _, lo_l, hi_l = win_rate_interval(large, 2000, seed=0)
    assert hi_l - lo_l < (hi - lo) / 2
    assert lo_l < 0.7 < hi_l


def test_interval_resamples_prompts_not_samples():
    # every prompt's samples agree with each other: 20 effective observations, not 2,000
    per_prompt = np.repeat((np.arange(20) % 2).reshape(20, 1), 100, axis=1).astype(float)
    _, lo, hi = win_rate_interval(per_prompt, 4000, seed=1)
    assert hi - lo > 0.3  # ~ 2 * 1.96 * sqrt(0.25 / 20); per-sample resampling gives ~0.04


def test_unanimous_wins_have_a_degenerate_interval():
    assert win_rate_interval(np.ones((10, 3)), 500, seed=0) == (1.0, 1.0, 1.0)


def test_distinct_n_counts_repeated_ngrams_once():
    assert distinct_n(["a b a b", "a b"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)
    assert distinct_n(["", "x"], 2) is None  # no bigram to repeat


def test_mean_skips_missing_judgements():
    assert mean([1.0, float("nan"), 3.0]) == 2.0
    assert mean([float("nan")]) is None
