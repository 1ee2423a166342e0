"""The whole pipeline as a real Prefect flow on a real MLflow store, with tiny models."""

import json
import math
import shutil

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from rlhf.core.feedback.dataset import normalise_prompt
from rlhf.core.io import digest_path
from rlhf.core.settings import load_settings
from rlhf.core.tracking.lineage import input_model_ids, registered_uris
from rlhf.core.tracking.store import tracking_uri
from rlhf.flows.pipeline import rlhf_pipeline
from rlhf.tasks import STAGES
from tests.support.project import ANSWERS, make_project, write_params

ALL = sorted(s.name for s in STAGES)


def artifact_data(flow_run_id: str, key: str):
    """The data of the Prefect artifact `key` that the flow run published."""
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    return artifact.data


REQUIRED = [
    "gold_score_sft",
    "gold_score_policy",
    "gold_win_rate_policy_vs_sft",
    "rm_win_rate_policy_vs_sft",
    "judge_win_rate_policy_vs_sft",
    "judge_0_win_rate_policy_vs_sft",
    "judge_1_win_rate_policy_vs_sft",
    "kl_policy_vs_ref",
    "rm_accuracy",
]


def test_pipeline_runs_caches_and_reruns_only_what_changed(tiny_project):
    params = tiny_project / "params.yaml"
    first = rlhf_pipeline(params_path=str(params))
    assert first["ran"] == ALL

    metrics = json.loads((tiny_project / "artifacts/evaluate/metrics.json").read_text())
    for key in REQUIRED:
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["gold_win_rate_policy_vs_sft"] <= 1.0

    client = MlflowClient(tracking_uri(load_settings(params)))
    runs = client.search_runs([client.get_experiment_by_name("rlhf").experiment_id])
    parent = [r for r in runs if r.info.run_id == first["parent_run_id"]][0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags["stage"] for r in children) == sorted([*ALL, "promote"])
    assert all(r.info.status == "FINISHED" for r in children + [parent])
    pretrain = [r for r in children if r.data.tags["stage"] == "pretrain"][0]
    assert "train_loss" in pretrain.data.metrics
    assert len(client.get_metric_history(pretrain.info.run_id, "train_loss")) >= 2  # per step
    sft = [r for r in children if r.data.tags["stage"] == "sft"][0]
    read = {d.dataset.name for d in client.get_run(sft.info.run_id).inputs.dataset_inputs}
    assert read == {"artifacts/ingest/sft.parquet"}  # by its DVC path

    names = {m.name for m in client.search_registered_models()}
    assert names == {"rlhf-base", "rlhf-sft", "rlhf-reward", "rlhf-judge", "rlhf-policy"}
    champion = client.get_model_version_by_alias("rlhf-policy", "champion")
    assert str(champion.version) == "1"

    def started_from(name: str, version: str) -> set[str]:
        """The registered versions the run that made name/version took as model inputs."""
        run = client.get_run(client.get_model_version(name, version).run_id)
        return {u for m in input_model_ids(run) for u in registered_uris(m)}

    assert "models:/rlhf-sft/1" in started_from("rlhf-policy", "1")
    assert "models:/rlhf-reward/1" in started_from("rlhf-policy", "1")
    assert started_from("rlhf-sft", "1") == {"models:/rlhf-base/1"}
    assert started_from("rlhf-reward", "1") == {"models:/rlhf-sft/1"}
    members = client.search_model_versions("name='rlhf-judge'")
    assert sorted(v.tags["member"] for v in members) == ["0", "1"]
    for member in members:
        assert started_from("rlhf-judge", str(member.version)) == {"models:/rlhf-sft/1"}
    assert len(client.get_run(champion.run_id).data.tags[MLFLOW_GIT_COMMIT]) == 40

    # each reward model trains on its own split: no prompt in two, none of the judge's in
    # the reward model's training pairs
    pairs = pd.read_parquet(tiny_project / "artifacts/feedback/pairs.parquet")
    assert pairs.groupby(pairs["prompt"].map(normalise_prompt))["split"].nunique().max() == 1
    n = pairs["split"].value_counts()
    judge, reward = (
        json.loads((tiny_project / f"artifacts/{s}/metrics.json").read_text())
        for s in ("judge", "reward")
    )
    assert judge["judge_pairs"] + judge["test_pairs"] + judge["dropped_too_long"] == (
        n["judge"] + n["test"]
    )
    assert reward["train_pairs"] + reward["test_pairs"] + reward["dropped_too_long"] == (
        n["train"] + n["test"]
    )

    # the feedback stage runs the import's own merge: same batches, same settings, same bytes
    assert digest_path(tiny_project / "artifacts/feedback/pairs.parquet") == digest_path(
        tiny_project / "data/feedback/pairs.parquet"
    )
    feedback = [r for r in children if r.data.tags["stage"] == "feedback"][0]
    logged = {a.path for a in client.list_artifacts(feedback.info.run_id, "feedback")}
    assert {"feedback/annotators.json", "feedback/agreement.json"} <= logged
    assert (
        json.loads(artifact_data(first["flow_run_id"], "rlhf-annotators"))
        == json.loads((tiny_project / "artifacts/feedback/annotators.json").read_text())[
            "annotators"
        ]
    )

    assert (
        artifact_data(first["flow_run_id"], "rlhf-evaluation")
        == (tiny_project / "artifacts/evaluate/report.md").read_text()
    )

    assert (
        artifact_data(first["flow_run_id"], "rlhf-promotion")
        == (tiny_project / "artifacts/promote/report.md").read_text()
    )
    assert first["promotion"]["verdict"] == "first"

    second = rlhf_pipeline(params_path=str(params))
    assert second["ran"] == []

    config = yaml.safe_load(params.read_text())
    config["ppo"]["iterations"] = 2
    params.write_text(yaml.safe_dump(config))
    third = rlhf_pipeline(params_path=str(params))
    assert third["ran"] == ["evaluate", "policy"]
    assert str(client.get_model_version_by_alias("rlhf-policy", "challenger").version) == "2"
    assert str(client.get_model_version_by_alias("rlhf-policy", "champion").version) == (
        "2" if third["promotion"]["promoted"] else "1"
    )

    # outputs deleted behind Prefect's back are rebuilt, not served from its cache
    shutil.rmtree(tiny_project / "artifacts/evaluate")
    fourth = rlhf_pipeline(params_path=str(params))
    assert fourth["ran"] == ["evaluate"]
    assert (tiny_project / "artifacts/evaluate/metrics.json").exists()


@pytest.mark.e2e  # a whole flow run beside the one above
def test_without_a_reward_model_the_functions_train_choose_and_promote(tmp_path):
    project = make_project(tmp_path / "answers", ANSWERS)
    result = rlhf_pipeline(params_path=str(project / "params.yaml"))

    assert result["ran"] == ["evaluate", "ingest", "policy", "pretrain", "sft"]
    assert not [p for p in ("feedback", "reward", "judge") if (project / "artifacts" / p).exists()]
    metrics = json.loads((project / "artifacts/evaluate/metrics.json").read_text())
    assert metrics["functions_judge"] == 1
    assert "rm_accuracy" not in metrics and "validated_responses" not in metrics
    low, gain, high = (metrics[f"reward_exact_gain{s}"] for s in ("_lower", "", "_upper"))
    assert low <= gain <= high
    # the functions' weighted sum (one function, weight 1) is the rm and the judge's score
    samples = pd.read_csv(project / "artifacts/evaluate/samples.csv")
    assert (samples["judge"] == samples["reward_exact"]).all()
    assert (samples["rm"] == samples["reward_exact"]).all()
    assert samples["reward_exact"].isin([0.0, 1.0]).all()
    selection = pd.read_csv(project / "artifacts/policy/selection.csv")
    assert selection["judge"].between(0, 1).all() and selection["chosen"].sum() == 1

    promotion = result["promotion"]
    assert promotion["verdict"] == "first", promotion  # not worse than SFT, within the budget
    assert "the reward functions" in promotion["reasons"][0]
    assert "no reward model (rewards.model_weight 0)" in promotion["reasons"]
    report = (project / "artifacts/evaluate/report.md").read_text()
    assert "the reward functions' weighted sum is the judge" in report

    # a challenger: compared with the champion by the functions, on the same prompts and seeds
    write_params(project / "params.yaml", {"group": {"kl_coef": 0.2}}, base=project / "params.yaml")
    second = rlhf_pipeline(params_path=str(project / "params.yaml"))
    assert second["ran"] == ["evaluate", "policy"]
    against = second["promotion"]["metrics"]
    assert against["judge_win_rate_policy_vs_champion"] is not None
    assert "the reward functions" in second["promotion"]["reasons"][0]
