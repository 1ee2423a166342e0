"""Lineage from tags someone else wrote: a cycle of parents ends the walk, and a git_commit
tag never reaches git as an option nor a printed command as shell text."""

import subprocess

import mlflow
import pytest
from mlflow import MlflowClient

from rlhf.core.lineage import lineage, render, reproduce


@pytest.fixture
def registry(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
    run = client.create_run(experiment, tags={"stage": "ppo"})
    client.create_registered_model("p")
    for _ in range(2):
        client.create_model_version("p", f"{run.info.artifact_uri}/model", run.info.run_id)
    yield client
    mlflow.set_tracking_uri(None)


def test_a_cycle_of_parent_tags_ends_and_shows_every_version_as_present(registry):
    registry.set_model_version_tag("p", "1", "parent_model", "models:/p/2")
    registry.set_model_version_tag("p", "2", "parent_model", "models:/p/1")
    tree = render(lineage("models:/p/1"))
    assert "from models:/p/2" in tree and "models:/p/1  (a cycle in the parent tags" in tree
    assert "outside the registry" not in tree
    registry.set_model_version_tag("p", "1", "parent_model", "models:/p/1")  # its own parent
    assert "(a cycle in the parent tags" in render(lineage("models:/p/1"))


@pytest.mark.parametrize("commit", ["--output=/tmp/pwned", "HEAD; touch pwned", "$(id)"])
def test_a_git_commit_tag_that_is_not_a_commit_id_reaches_neither_git_nor_a_command(
    registry, tmp_path, commit
):
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    registry.set_model_version_tag("p", "1", "git_commit", commit)
    plan = reproduce("models:/p/1", tmp_path / "repo")
    assert plan["git_commit"] == "" and any("not a commit id" in w for w in plan["warnings"])
    assert not any("git checkout" in c for c in plan["commands"])
    assert not any(commit in c for c in plan["commands"])
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [".git"]
