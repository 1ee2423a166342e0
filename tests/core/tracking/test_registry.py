"""The promotion rules on their own, and the champion's history on a real SQLite registry; the
pipeline's own registry moves are exercised in tests/flows/test_registry.py."""

import os

import mlflow
import pytest
from mlflow import MlflowClient

from rlhf.core.settings import Promotion, UserError
from rlhf.core.tracking.registry import (
    champion_history,
    decide,
    move_champion,
    now,
    rollback,
    set_alias,
)

RULES = Promotion(min_win_rate_lower=0.5)
HUMAN = Promotion(judge="human", min_win_rate_lower=0.5)
BUDGET = 10.0


def view(judge, rate, lo, hi, other="champion"):
    key = f"{judge}_win_rate_policy_vs_{other}"
    return {key: rate, f"{key}_lower": lo, f"{key}_upper": hi}


def metrics(rate=0.7, lo=0.6, hi=0.8, kl=3.0, other="champion", rm=(0.8, 0.7, 0.9)):
    """The judge's view (and its two members'), the optimised RM's, and the KL."""
    return {
        "kl_policy_vs_ref": kl,
        **view("judge", rate, lo, hi, other),
        **view("judge_0", rate, lo, hi, other),
        **view("judge_1", rate, lo, hi, other),
        **view("rm", *rm, other),
    }


def test_the_first_policy_becomes_champion_unless_the_judge_finds_it_worse():
    d = decide(metrics(0.52, 0.45, 0.6, other="sft"), RULES, BUDGET, "1", None)
    assert d.promote and d.verdict == "first" and d.judge == "judge"
    d = decide(metrics(0.4, 0.35, 0.45, other="sft"), RULES, BUDGET, "1", None)
    assert d.verdict == "rejected" and "), worse than it" in d.reasons[0]
    assert decide(metrics(kl=11.0, other="sft"), RULES, BUDGET, "1", None).verdict == "rejected"


def test_a_clear_win_within_the_kl_budget_is_promoted():
    d = decide(metrics(), RULES, BUDGET, version="2", champion="1")
    assert d.promote and d.verdict == "promoted"
    assert "evaluation reward models" in d.reasons[0] and "0.600-0.800" in d.reasons[0]
    assert "optimised reward model's win rate 0.800" in d.reasons[1]


def test_a_win_whose_interval_reaches_one_half_is_not_enough():
    d = decide(metrics(rate=0.6, lo=0.49, hi=0.7), RULES, BUDGET, version="2", champion="1")
    assert not d.promote and d.verdict == "rejected"
    assert "<= 0.5" in d.reasons[0]


def test_too_much_kl_blocks_promotion_even_with_a_win():
    d = decide(metrics(kl=10.5), RULES, BUDGET, version="2", champion="1")
    assert not d.promote
    assert "10.50 > the budget 10" in d.reasons[-1]


def test_the_optimised_reward_model_alone_never_promotes():
    only_rm = {"kl_policy_vs_ref": 1.0, **view("rm", 0.95, 0.9, 0.99)}
    d = decide(only_rm, RULES, BUDGET, "2", "1")
    assert d.verdict == "rejected" and "scored none" in d.reasons[0]


def test_a_promotion_a_member_or_the_reward_model_disagrees_with_is_held():
    split = {**metrics(0.6, 0.55, 0.65), **view("judge_1", 0.46, 0.4, 0.52)}
    d = decide(split, RULES, BUDGET, "2", "1")
    assert not d.promote and d.verdict == "held"
    assert "evaluation reward model 1 disagree(s): win rate 0.460" in d.reasons
    d = decide(metrics(rm=(0.45, 0.4, 0.5)), RULES, BUDGET, "2", "1")
    assert d.verdict == "held" and "the optimised reward model disagree(s)" in d.reasons[1]


def test_the_human_gate_waits_for_labels_then_decides_on_them():
    waiting = {
        **metrics(),
        "human_win_rate_policy_vs_champion": None,
        "human_labelled_tasks": 3,
        "human_tasks": 64,
    }
    d = decide(waiting, HUMAN, BUDGET, "2", "1")
    assert d.verdict == "pending" and "3 of 64" in d.reasons[0] and not d.promote
    won = {**metrics(), **view("human", 0.7, 0.6, 0.8)}
    d = decide(won, HUMAN, BUDGET, "2", "1")
    assert d.verdict == "promoted" and d.judge == "human" and "people" in d.reasons[0]
    nothing = {**metrics(), "human_win_rate_policy_vs_champion": None, "human_tasks": 0}
    d = decide(nothing, HUMAN, BUDGET, "2", "1")
    assert d.verdict == "rejected" and "nothing for people to compare" in d.reasons[0]
    lost = {**metrics(), **view("human", 0.45, 0.35, 0.55)}
    assert decide(lost, HUMAN, BUDGET, "2", "1").verdict == "rejected"
    # people say yes, the evaluation reward models say no: held
    torn = {**metrics(0.4, 0.3, 0.5), **view("human", 0.7, 0.6, 0.8)}
    assert decide(torn, HUMAN, BUDGET, "2", "1").verdict == "held"


def test_the_same_weights_leave_the_champion_unchanged():
    d = decide(metrics(), RULES, BUDGET, version="1", champion="1")
    assert not d.promote and d.verdict == "unchanged"


@pytest.fixture
def registry(tmp_path):
    """A real SQLite-backed MLflow registry with one model of three versions."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    client.create_registered_model("policy")
    for _ in range(3):
        client.create_model_version("policy", str(tmp_path))
    yield client
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])
    # set_*_uri export these variables: later tests' `rlhf` subprocesses must not inherit them
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(key, None)


def test_rollback_walks_back_along_the_champions_one_at_a_time(registry):
    for version in ("1", "2", "3"):
        move_champion("policy", version, "ci", "promoted")
    assert champion_history("policy") == ["1", "2", "3"]
    assert rollback("policy", "bob", "regression") == ("3", "2")
    assert rollback("policy", "bob", "regression again") == ("2", "1")
    assert str(registry.get_model_version_by_alias("policy", "champion").version) == "1"
    with pytest.raises(UserError, match="no earlier champion than version 1"):
        rollback("policy", "bob", "no")
    # a version rolled back and then promoted again is part of the history once more
    move_champion("policy", "3", "alice", "fixed")
    assert champion_history("policy") == ["1", "3"]
    assert rollback("policy", "bob", "still slow") == ("3", "1")
    assert registry.get_model_version("policy", "3").tags["rolled_back.reason"] == "still slow"


def test_the_alias_holder_ends_the_history_when_two_moves_stamp_out_of_order(registry):
    """Two processes moving champion at once: each sets the alias, then stamps when; the
    second alias write wins while the first process's stamp lands last."""
    move_champion("policy", "1", "ci", "first")
    set_alias(registry, "policy", "champion", "3")
    set_alias(registry, "policy", "champion", "2")
    registry.set_model_version_tag("policy", "2", "champion.since", now())
    registry.set_model_version_tag("policy", "3", "champion.since", now())
    assert champion_history("policy") == ["1", "3", "2"]
    assert rollback("policy", "bob", "regression") == ("2", "3")
