"""The champion's history on a real SQLite registry; the pipeline's own registry moves are
exercised in tests/flows/test_registry.py, the promotion rules in
tests/core/evaluation/test_promotion.py."""

import os

import mlflow
import pytest
from mlflow import MlflowClient

from rlhf.core.settings import UserError
from rlhf.core.tracking.registry import champion_history, move_champion, now, rollback, set_alias


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
