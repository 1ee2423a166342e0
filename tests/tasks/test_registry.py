"""The promotion rules on their own; the registry moves are exercised in
tests/flows/test_registry.py against a real MLflow store."""

from tasks.registry import decide
from tasks.settings import Promotion

RULES = Promotion(judge="rm", min_win_rate_lower=0.5, max_kl=10.0)


def metrics(rate=0.7, lo=0.6, hi=0.8, kl=3.0, judge="rm"):
    key = f"{judge}_win_rate_ppo_vs_champion"
    return {"kl_ppo_vs_ref": kl, key: rate, f"{key}_lower": lo, f"{key}_upper": hi}


def test_the_first_policy_becomes_champion():
    d = decide(metrics(), RULES, version="1", champion=None)
    assert d.promote and d.verdict == "first"


def test_a_clear_win_within_the_kl_bound_is_promoted():
    d = decide(metrics(), RULES, version="2", champion="1")
    assert d.promote and d.verdict == "promoted"
    assert "0.700" in d.reasons[0] and "0.600-0.800" in d.reasons[0]


def test_a_win_whose_interval_reaches_one_half_is_not_enough():
    d = decide(metrics(rate=0.6, lo=0.49, hi=0.7), RULES, version="2", champion="1")
    assert not d.promote and d.verdict == "rejected"
    assert "<= 0.5" in d.reasons[0]


def test_too_much_kl_blocks_promotion_even_with_a_win():
    d = decide(metrics(kl=10.5), RULES, version="2", champion="1")
    assert not d.promote
    assert "10.50 > max_kl 10" in d.reasons[1]


def test_the_same_weights_leave_the_champion_unchanged():
    d = decide(metrics(), RULES, version="1", champion="1")
    assert not d.promote and d.verdict == "unchanged"


def test_judging_by_gold_needs_gold_scores():
    rules = Promotion(judge="gold", min_win_rate_lower=0.5, max_kl=10.0)
    assert decide(metrics(judge="gold"), rules, "2", "1").promote
    no_gold = {**metrics(), "gold_win_rate_ppo_vs_champion": None}
    d = decide(no_gold, rules, "2", "1")
    assert not d.promote and "promotion.judge: rm" in d.reasons[0]
