"""The promotion rules on their own (rlhf.core.evaluation.promotion.decide)."""

import dataclasses
import json
from pathlib import Path

import pytest

from rlhf.core.evaluation.promotion import decide
from rlhf.core.evaluation.records import (
    DESCRIPTORS,
    NEW,
    REFERENCE,
    Evaluation,
    HumanLabels,
    Interval,
    Range,
    Scores,
    Validated,
    from_metrics,
)
from rlhf.core.settings import Promotion

RULES = Promotion(min_win_rate_lower=0.5)
HUMAN = Promotion(judge="human", min_win_rate_lower=0.5)
BUDGET = 10.0


def scores(kl: float) -> Scores:
    return Scores(None, None, None, kl, 10.0, 1.0, 0.5, 0.5)


def evaluation(rate=0.7, lo=0.6, hi=0.8, kl=3.0, other="champion", rm=(0.8, 0.7, 0.9), **more):
    """The judge's view (and its two members'), the optimised RM's, and the KL; more: other
    judges' (judge -> (rate, lower, upper) or None)."""
    wins = {(judge, other): Interval(rate, lo, hi) for judge in ("judge", "judge_0", "judge_1")} | {
        ("rm", other): Interval(*rm)
    }
    wins |= {(j, other): None if v is None else Interval(*v) for j, v in more.items()}
    return Evaluation(scores={NEW: scores(kl)}, wins=wins)


def test_the_first_policy_becomes_champion_unless_the_judge_finds_it_worse():
    d = decide(evaluation(0.52, 0.45, 0.6, other="sft"), RULES, BUDGET, "1", None)
    assert d.promote and d.verdict == "first" and d.judge == "judge"
    d = decide(evaluation(0.4, 0.35, 0.45, other="sft"), RULES, BUDGET, "1", None)
    assert d.verdict == "rejected" and "), worse than it" in d.reasons[0]
    assert decide(evaluation(kl=11.0, other="sft"), RULES, BUDGET, "1", None).verdict == "rejected"


def test_a_clear_win_within_the_kl_budget_is_promoted():
    d = decide(evaluation(), RULES, BUDGET, version="2", champion="1")
    assert d.promote and d.verdict == "promoted"
    assert "evaluation reward models" in d.reasons[0] and "0.600-0.800" in d.reasons[0]
    assert "optimised reward model's win rate 0.800" in d.reasons[1]


def test_a_win_whose_interval_reaches_one_half_is_not_enough():
    d = decide(evaluation(rate=0.6, lo=0.49, hi=0.7), RULES, BUDGET, version="2", champion="1")
    assert not d.promote and d.verdict == "rejected"
    assert "<= 0.5" in d.reasons[0]


def test_too_much_kl_blocks_promotion_even_with_a_win():
    d = decide(evaluation(kl=10.5), RULES, BUDGET, version="2", champion="1")
    assert not d.promote
    assert "KL to the reference 10.50 > the budget 10" in d.reasons


def test_the_optimised_reward_model_alone_never_promotes():
    only_rm = Evaluation({NEW: scores(1.0)}, {("rm", "champion"): Interval(0.95, 0.9, 0.99)})
    d = decide(only_rm, RULES, BUDGET, "2", "1")
    assert d.verdict == "rejected" and "scored none" in d.reasons[0]


def test_a_promotion_a_member_or_the_reward_model_disagrees_with_is_held():
    split = evaluation(0.6, 0.55, 0.65, judge_1=(0.46, 0.4, 0.52))
    d = decide(split, RULES, BUDGET, "2", "1")
    assert not d.promote and d.verdict == "held"
    assert "evaluation reward model 1 disagree(s): win rate 0.460" in d.reasons
    d = decide(evaluation(rm=(0.45, 0.4, 0.5)), RULES, BUDGET, "2", "1")
    assert d.verdict == "held" and "the optimised reward model disagree(s)" in d.reasons[1]


def test_the_human_gate_waits_for_labels_then_decides_on_them():
    waiting = evaluation(human=None).but(human=HumanLabels(64, 3, 0, 0))
    d = decide(waiting, HUMAN, BUDGET, "2", "1")
    assert d.verdict == "pending" and "3 of 64" in d.reasons[0] and not d.promote
    d = decide(evaluation(human=(0.7, 0.6, 0.8)), HUMAN, BUDGET, "2", "1")
    assert d.verdict == "promoted" and d.judge == "human" and "people" in d.reasons[0]
    nothing = evaluation(human=None).but(human=HumanLabels(0, 0, 0, 0))
    d = decide(nothing, HUMAN, BUDGET, "2", "1")
    assert d.verdict == "rejected" and "nothing for people to compare" in d.reasons[0]
    lost = evaluation(human=(0.45, 0.35, 0.55))
    assert decide(lost, HUMAN, BUDGET, "2", "1").verdict == "rejected"
    # people say yes, the evaluation reward models say no: held
    torn = evaluation(0.4, 0.3, 0.5, human=(0.7, 0.6, 0.8))
    assert decide(torn, HUMAN, BUDGET, "2", "1").verdict == "held"


def test_the_same_weights_leave_the_champion_unchanged():
    d = decide(evaluation(), RULES, BUDGET, version="1", champion="1")
    assert not d.promote and d.verdict == "unchanged"


VALIDATED = Validated({d: Range(0.0, 1.0) for d in DESCRIPTORS}, 500)


def drifted(other="champion", rm=(0.8, 0.7, 0.9), human=None, **new):
    """A clear win by the judge (and people's, with human), with the new policy's scores
    changed by `new` against an incumbent and a reference of length 10, distinct-2 0.5, 1% of
    their responses extrapolated and a prompt relevance of 0.5."""
    base = Scores(None, None, None, 2.0, 10.0, 1.0, 0.5, 0.5, extrapolated=0.01, relevance=0.5)
    more = {} if human is None else {"human": human}
    e = evaluation(other=other, rm=rm, **more).but(validated=VALIDATED)
    return e.but(
        scores={
            NEW: dataclasses.replace(base, **new),
            other: base,
            REFERENCE: dataclasses.replace(base, kl=0.0),
        }
    )


DIVERSE = Promotion(min_distinct_ratio=0.5)  # a project whose responses must vary


@pytest.mark.parametrize(
    "change, signal, rules",
    [
        (
            {"extrapolated": 0.4},
            "40.0% of its responses lie outside the range the judges were",
            RULES,
        ),
        ({"length": 16.0}, "mean length 16.0 tokens against 10.0 (1.60x), beyond 1.5x", RULES),
        ({"length": 6.0}, "(0.60x), beyond 1.5x either way", RULES),
        ({"distinct_2": 0.2}, "distinct-2 0.200 against 0.500 (0.40x), below 0.5x", DIVERSE),
        (
            {"relevance": 0.4},
            "prompt relevance 0.400 nats per token against the reference's 0.500 (0.80x), "
            "below 0.95x: responses that would do for any prompt please the judges",
            RULES,
        ),
    ],
)
def test_an_over_optimisation_signal_past_its_limit_holds_a_promotion(change, signal, rules):
    for champion, other in (("1", "champion"), (None, "sft")):  # the first champion too
        d = decide(drifted(other, **change), rules, BUDGET, "2", champion)
        assert d.verdict == "held" and not d.promote
        assert any(r.startswith("over-optimisation: ") and signal in r for r in d.reasons)
    # people decide: they see the responses, and the signal is reported, not gating
    human = drifted(human=(0.7, 0.6, 0.8), **change)
    assert decide(human, HUMAN, BUDGET, "2", "1").verdict == "promoted"


def test_prompt_relevance_is_not_checked_where_the_reference_barely_reads_its_prompts():
    e = drifted(relevance=-0.001)
    e = e.but(scores={REFERENCE: dataclasses.replace(e.scores[REFERENCE], relevance=0.002)})
    d = decide(e, RULES, BUDGET, "2", "1")
    assert d.verdict == "promoted"
    line = "prompt relevance -0.001 nats per token against the reference's 0.002 (the reference's"
    assert any(r.startswith(f"over-optimisation signal: {line}") for r in d.reasons)


def test_distinct_2_is_reported_not_checked_unless_a_limit_is_set():
    d = decide(drifted(distinct_2=0.05), RULES, BUDGET, "2", "1")
    assert d.verdict == "promoted"
    assert "over-optimisation signal: distinct-2 0.050 against 0.500 (0.10x)" in d.reasons


def test_one_word_answers_have_no_bigrams_and_no_diversity_signal():
    d = decide(drifted(distinct_1=1.0, distinct_2=None), RULES, BUDGET, "2", "1")
    assert d.verdict == "promoted"
    assert not [r for r in d.reasons if "distinct-2" in r]


def test_signals_within_their_limits_are_reported_and_the_promotion_stands():
    d = decide(drifted(extrapolated=0.1, length=12.0), RULES, BUDGET, "2", "1")
    assert d.verdict == "promoted"
    lines = [r for r in d.reasons if r.startswith("over-optimisation signal: ")]
    assert any(
        "10.0% of its responses lie outside" in r and "500 test responses" in r for r in lines
    )
    assert any("KL per token 0.167 nats" in r for r in lines)


def test_a_gain_only_the_optimised_reward_model_sees_holds_a_promotion():
    e = drifted(rm=(0.99, 0.98, 1.0))  # the judge's win rate is 0.7
    gap = "the optimised reward model's win rate exceeds the judge's by +0.290"
    d = decide(e, RULES, BUDGET, "2", "1")
    assert d.verdict == "promoted"  # within the default 0.3
    assert f"over-optimisation signal: {gap}" in d.reasons
    d = decide(e, Promotion(max_rm_judge_gap=0.2), BUDGET, "2", "1")
    assert d.verdict == "held" and f"over-optimisation: {gap}, more than 0.2" in d.reasons


def test_the_held_out_curve_can_lower_the_kl_budget_never_raise_it():
    e = drifted(kl=3.0).but(kl_budget_curve=2.5)
    d = decide(e, RULES, BUDGET, "2", "1")
    assert d.verdict == "rejected"
    assert (
        "KL to the reference 3.00 > the held-out curve's budget 2.50 (judge.kl_budget 10)"
        in d.reasons
    )
    assert decide(e, Promotion(kl_budget_drop=None), BUDGET, "2", "1").verdict == "promoted"
    d = decide(drifted(kl=3.0).but(kl_budget_curve=20.0), RULES, BUDGET, "2", "1")
    assert "KL to the reference 3.00 <= the budget 10 (the held-out curve's: 20.00)" in d.reasons


# The gate panel as measured (benchmarks/promotion_panel.py --record): each challenger's
# evaluation against the panel's champion, and the KL budget it ran with; gold is the referee.
PANEL = json.loads(Path(__file__).with_name("promotion_panel.json").read_text())


def gold_says(m: dict) -> str:
    lower, upper = (m[f"gold_win_rate_policy_vs_champion_{end}"] for end in ("lower", "upper"))
    return "better" if lower > 0.5 else "worse" if upper < 0.5 else "no difference"


def promoted_on_the_panel(rules: Promotion) -> dict[str, str]:
    """The challengers the rules promote over the panel's champion, with gold's view of each."""
    return {
        row["challenger"]: gold_says(row["metrics"])
        for row in PANEL["challengers"]
        if decide(
            from_metrics(row["metrics"]), rules, row["kl_budget"], row["version"], PANEL["champion"]
        ).promote
    }


def test_the_default_rules_on_the_measured_panel_promote_exactly_what_gold_finds_better():
    promoted = promoted_on_the_panel(Promotion())
    better = [r["challenger"] for r in PANEL["challengers"] if gold_says(r["metrics"]) == "better"]
    assert sorted(promoted) == sorted(better), promoted


def test_the_measured_panel_has_challengers_gold_finds_better_and_worse():
    # else the test above could not fail both ways
    found = {gold_says(row["metrics"]) for row in PANEL["challengers"]}
    assert {"better", "worse"} <= found
