"""The promotion rules on their own (rlhf.core.evaluation.promotion.decide)."""

from rlhf.core.evaluation.promotion import decide
from rlhf.core.evaluation.records import NEW, Evaluation, HumanLabels, Interval, Scores
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
    assert "10.50 > the budget 10" in d.reasons[-1]


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
