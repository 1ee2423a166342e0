"""The promotion rules on their own, and the champion's history on a real SQLite registry; the
pipeline's own registry moves are exercised in tests/flows/test_registry.py."""

import os

import mlflow
import pytest
from mlflow import MlflowClient

from rlhf.core.registry import champion_history, decide, move_champion, rollback
from rlhf.core.settings import Promotion, UserError

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
