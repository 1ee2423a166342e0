"""Lineage from links someone else wrote: a cycle of model inputs ends the walk, and a git
commit tag never reaches git as an option nor a printed command as shell text."""

import subprocess

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities import LoggedModelInput
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from rlhf.core.tracking.lineage import lineage, render, reproduce


@pytest.fixture
def registry(tmp_path):
    """Two versions of `p`, each registered from a logged model of its own run."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
    runs, models = [], []
    for _ in range(2):
        run = client.create_run(experiment, tags={"stage": "ppo"})
        model = client.create_logged_model(experiment, source_run_id=run.info.run_id)
        mlflow.register_model(f"models:/{model.model_id}", "p")
        runs.append(run.info.run_id)
        models.append(model.model_id)
    yield client, runs, models
    mlflow.set_tracking_uri(None)


def test_a_cycle_of_model_inputs_ends_and_shows_every_version_as_present(registry):
    client, runs, models = registry
    client.log_inputs(runs[0], models=[LoggedModelInput(models[1])])
    client.log_inputs(runs[1], models=[LoggedModelInput(models[0])])
    tree = render(lineage("models:/p/1"))
    assert "from models:/p/2" in tree and "from models:/p/1  (a cycle in the links" in tree
    assert "outside the registry" not in tree
    client.log_inputs(runs[0], models=[LoggedModelInput(models[0])])  # its own parent
    assert "from models:/p/1  (a cycle in the links" in render(lineage("models:/p/1"))


@pytest.mark.parametrize("commit", ["--output=/tmp/pwned", "HEAD; touch pwned", "$(id)"])
def test_a_git_commit_tag_that_is_not_a_commit_id_reaches_neither_git_nor_a_command(
    registry, tmp_path, commit
):
    client, runs, _ = registry
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    client.set_tag(runs[0], MLFLOW_GIT_COMMIT, commit)
    plan = reproduce("models:/p/1", tmp_path / "repo")
    assert plan["git_commit"] == "" and any("not a commit id" in w for w in plan["warnings"])
    assert not any("git checkout" in c for c in plan["commands"])
    assert not any(commit in c for c in plan["commands"])
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [".git"]
