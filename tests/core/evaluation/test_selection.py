"""Choosing PPO's snapshot: the judge's best within the KL budget, never the reference."""

import pandas as pd

from rlhf.core.evaluation.selection import choose


def curve(rows):
    return pd.DataFrame(rows, columns=["iteration", "kl", "rm", "judge"])


def test_the_judges_best_within_the_budget_is_kept_not_the_reward_models():
    c = curve(
        [
            (0, 0.0, 0.0, 0.0),
            (10, 1.0, 1.0, 0.6),
            (20, 2.5, 2.0, 0.9),  # the judge's best within the budget
            (30, 3.9, 2.5, 0.7),
            (40, 6.0, 3.5, 1.5),  # everyone's best, beyond the budget: over-optimised
        ]
    )
    iteration, why = choose(c, kl_budget=4.0)
    assert iteration == 20 and "iteration 20 of 40" in why and "3 snapshot(s)" in why


def test_with_nothing_within_the_budget_the_nearest_is_kept_and_said_so():
    c = curve([(0, 0.0, 0.0, 0.0), (10, 5.0, 1.0, 0.2), (20, 7.0, 2.0, 0.9)])
    iteration, why = choose(c, kl_budget=4.0)
    assert iteration == 10 and why.startswith("no snapshot within the KL budget 4")


def test_the_reference_is_never_chosen_even_when_the_judge_prefers_it():
    c = curve([(0, 0.0, 0.0, 5.0), (10, 1.0, 1.0, 0.1)])
    assert choose(c, kl_budget=4.0)[0] == 10


def test_last_keeps_the_final_iteration_whatever_the_judge_says():
    c = curve([(0, 0.0, 0.0, 0.0), (10, 1.0, 1.0, 0.9), (20, 9.0, 2.0, 0.1)])
    assert choose(c, kl_budget=4.0, select="last") == (
        20,
        "the last iteration (judge.select: last)",
    )
