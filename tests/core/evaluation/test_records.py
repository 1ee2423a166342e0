"""The evaluation record: written under the names users see by one function, read back by one."""

import json

from rlhf.core.evaluation.records import (
    NEW,
    Evaluation,
    HumanLabels,
    Interval,
    Scores,
    from_metrics,
    headline,
    to_metrics,
)

SFT = Scores(0.1, 0.2, 0.3, 0.0, 12.0, 0.9, 0.5, 0.6, perplexity=3.0)
EVALUATION = Evaluation(
    scores={"sft": SFT, NEW: Scores(0.5, 0.4, None, 2.5, 14.0, 1.0, 0.4, 0.5, 2.9)},
    wins={
        ("rm", "sft"): Interval(0.9, 0.8, 0.95),
        ("judge", "sft"): Interval(0.7, 0.6, 0.8),
        ("judge_0", "sft"): Interval(0.72, 0.6, 0.8),
        ("judge_1", "sft"): Interval(0.68, 0.6, 0.8),
        ("gold", "sft"): None,
        ("human", "champion"): Interval(0.6, 0.55, 0.65),
    },
    rm_accuracy=0.8,
    judge_accuracy=0.7,
    selected_iteration=40,
    eval_prompts=96,
    samples_per_prompt=4,
    policy_version=3,
    champion_version_compared=2,
    human=HumanLabels(64, 60, 1, 0),
)


def test_the_names_users_see_are_kept():
    flat = to_metrics(EVALUATION)
    assert flat["judge_win_rate_policy_vs_sft"] == 0.7
    assert flat["judge_win_rate_policy_vs_sft_lower"] == 0.6
    assert flat["gold_win_rate_policy_vs_sft"] is None
    assert "gold_win_rate_policy_vs_sft_lower" not in flat
    assert flat["kl_policy_vs_ref"] == 2.5 and flat["perplexity_sft"] == 3.0
    assert flat["human_labelled_tasks"] == 60 and flat["champion_version_compared"] == 2
    assert flat["distinct_2_policy"] == 0.5 and flat["eos_rate_sft"] == 0.9


def test_what_one_function_writes_the_other_reads_back_through_json():
    flat = json.loads(json.dumps(to_metrics(EVALUATION)))
    assert from_metrics(flat) == EVALUATION
    assert to_metrics(from_metrics(flat)) == flat
    assert EVALUATION.members("sft") == ["judge_0", "judge_1"]


def test_a_version_carries_the_new_policys_scores_and_the_whole_judges_win_rates():
    tags = headline(EVALUATION)
    assert tags["judge_score_policy"] == 0.4 and tags["kl_policy_vs_ref"] == 2.5
    assert "judge_0_win_rate_policy_vs_sft" not in tags and "gold_score_policy" not in tags
    assert tags["human_win_rate_policy_vs_champion_upper"] == 0.65
