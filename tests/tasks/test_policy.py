"""The policy stage around the iteration: resuming after SIGKILL, the guard against unstable
updates, the sample tables, the same stage under torchrun with two processes, and the group
methods (grpo, rloo) on the same loop."""

import copy
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM

import rlhf.core.policy.online as online
from rlhf.core.evaluation.selection import SNAPSHOT
from rlhf.core.io import digest_path
from rlhf.core.policy.online import LastGood
from rlhf.core.settings import UserError, load_settings
from rlhf.core.tracking.lineage import HOW_IT_RAN
from rlhf.flows.runner import run_stage
from rlhf.models.ppo import KLController
from rlhf.tasks import BY_NAME
from tests.support.processes import kill_at_checkpoint, torchrun
from tests.support.project import TINY, clone_project, write_params

PPO = {**TINY["ppo"], "iterations": 6, "checkpoint_every": 2, "samples_every": 3}


@pytest.fixture(scope="module")
def project(tmp_path_factory, trained_upstream):
    """A tiny project with every stage before PPO done."""
    return clone_project(trained_upstream, tmp_path_factory.mktemp("ppo") / "project", {"ppo": PPO})


def rlhf(project, *args, params: str = "params.yaml") -> list[str]:
    return [sys.executable, "-m", "rlhf.flows.cli", "--params", str(project / params), *args]


@pytest.mark.faults
def test_sigkilled_ppo_resumes_and_ends_as_an_uninterrupted_run(project):
    settings = load_settings(project / "params.yaml")
    model, work = project / "artifacts/policy/model", project / "artifacts/.work/policy"
    whole = run_stage(BY_NAME["policy"], settings)
    whole_digest = digest_path(model)
    assert not work.exists()  # checkpoints dropped once the outs are in place

    kill_at_checkpoint(rlhf(project, "stage", "policy"), project, work, "*/checkpoint.pt")
    assert digest_path(model) == whole_digest  # the earlier outputs were not touched

    resumed = run_stage(BY_NAME["policy"], settings)
    assert resumed["metrics"]["resumed_from"] in (2, 4)
    assert digest_path(model) == whole_digest  # bitwise the same weights
    assert resumed["model"] == whole["model"]  # so no second registry version
    assert {k: v for k, v in resumed["metrics"].items() if k not in HOW_IT_RAN} == {
        k: v for k, v in whole["metrics"].items() if k not in HOW_IT_RAN
    }
    assert not work.exists()

    client = MlflowClient()
    experiment = client.get_run(whole["run_id"]).info.experiment_id
    table = client.load_table(experiment, "ppo_samples.json", run_ids=[whole["run_id"]])
    assert sorted(set(table["iteration"])) == [3, 6] and len(table) == 8  # 4 rows each
    assert {"prompt", "response", "rm_score", "kl", "ended"} <= set(table.columns)


def scores_with_nan(on_call, monkeypatch):
    """The reward model's scores, NaN on the calls on_call picks (1: the first iteration's
    rollout, ...)."""
    real, calls = online.sample_scores, []

    def scores(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return out * float("nan") if on_call(len(calls)) else out

    monkeypatch.setattr(online, "sample_scores", scores)
    return calls


def test_an_unstable_iteration_is_undone_and_retried(project, monkeypatch):
    calls = scores_with_nan(lambda n: n == 2, monkeypatch)  # the second iteration's rollout
    record = run_stage(BY_NAME["policy"], load_settings(project / "params.yaml"))
    assert record["metrics"]["unstable_events"] == 1
    assert len(calls) == 6 + 1  # six iterations, one retried
    assert record["metrics"]["final_score"] == record["metrics"]["final_score"]  # not NaN


def test_repeated_instability_stops_the_run_with_a_clear_message(project, monkeypatch):
    before = digest_path(project / "artifacts/policy/model")
    scores_with_nan(lambda n: n >= 2, monkeypatch)
    with pytest.raises(
        UserError,
        match="stopped after 3 unstable iterations in a row at iteration 2 .*non-finite score",
    ):
        run_stage(BY_NAME["policy"], load_settings(project / "params.yaml"))
    assert digest_path(project / "artifacts/policy/model") == before  # the last outputs stay


def torchrun_stage(project, params: str) -> list[str]:
    """The policy stage as two torchrun workers."""
    return [*torchrun(2), *rlhf(project, "stage", "policy", params=params)[1:]]


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.e2e)])
def test_the_stage_trains_with_two_processes_under_torchrun(project, strategy):
    """Over gloo, DDP (replicas; the stage checks both end with the same weights) or FSDP
    (shards, gathered for snapshots): each process samples half of every batch; rank 0
    alone saves and registers."""
    params = f"params-{strategy}.yaml"
    write_params(
        project / params,
        {"parallel": {"strategy": strategy}, "ppo": {**PPO, "snapshot_every": 2}},
        base=project / "params.yaml",
    )
    out = subprocess.run(
        torchrun_stage(project, params), cwd=project, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 1  # printed by rank 0 only
    assert records[0]["metrics"]["processes"] == 2 and records[0]["metrics"]["iterations"] == 6
    assert records[0]["model"]["name"] == "rlhf-policy"
    shapes = {
        k: v.shape
        for k, v in AutoModelForCausalLM.from_pretrained(project / "artifacts/policy/model")
        .state_dict()
        .items()
    }
    for it in (2, 4, 6):  # every snapshot whole (gathered from the shards), not one shard
        snapshot = project / "artifacts/policy/snapshots" / SNAPSHOT.format(it)
        weights = torch.load(snapshot, weights_only=True)
        assert {k: v.shape for k, v in weights.items()} == shapes


@pytest.mark.e2e  # two torchrun processes, killed and run again
def test_a_sharded_run_killed_midway_resumes_from_its_gathered_checkpoint(project):
    params = "params-fsdp.yaml"
    write_params(project / params, {"parallel": {"strategy": "fsdp"}}, base=project / "params.yaml")
    work = project / "artifacts/.work/policy"
    command = torchrun_stage(project, params)
    kill_at_checkpoint(command, project, work, "*/checkpoint.pt", marker=str(project / params))
    out = subprocess.run(
        torchrun_stage(project, params), cwd=project, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming from iteration 2" in out.stderr or "resuming from iteration 4" in out.stderr, (
        out.stderr[:3000]
    )
    record = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("{")))
    assert record["metrics"]["resumed_from"] in (2, 4) and record["metrics"]["iterations"] == 6


def test_fsdp_is_refused_where_the_trainer_would_run_replicas_instead(project):
    params = "params-dpo-fsdp.yaml"
    write_params(
        project / params,
        {"parallel": {"strategy": "fsdp"}, "policy": {"method": "dpo"}},
        base=project / "params.yaml",
    )
    out = subprocess.run(
        torchrun_stage(project, params), cwd=project, capture_output=True, text=True, timeout=300
    )
    assert out.returncode != 0
    assert "policy: parallel.strategy fsdp shards the online policy methods" in out.stderr


def test_last_good_state_restores_policy_optimizer_and_kl_controller():
    policy = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(policy.parameters(), lr=0.1)
    policy(torch.ones(1, 3)).sum().backward()
    opt.step()
    kl = KLController(0.1, target=1.0)
    good = LastGood(policy, opt, kl)
    kept = [copy.deepcopy(p.state_dict()) for p in (policy, opt)]
    policy(torch.ones(1, 3)).sum().backward()
    opt.step()  # the update to undo
    kl.update(5.0, 64)
    good.restore()
    assert all(torch.equal(v, kept[0][k]) for k, v in policy.state_dict().items())
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], kept[1]["state"][0]["exp_avg"])
    assert kl.beta == 0.1
    good.restore()  # restoring twice gives the same state (the kept copy is not consumed)
    assert all(torch.equal(v, kept[0][k]) for k, v in policy.state_dict().items())


def test_a_lora_policy_trains_saves_plain_weights_and_is_evaluated(project):
    params = project / "params-lora.yaml"
    write_params(
        params,
        {"ppo": {"reference": "lora", "gradient_checkpointing": True}},
        base=project / "params.yaml",
    )
    settings = load_settings(params)
    record = run_stage(BY_NAME["policy"], settings)
    assert record["metrics"]["iterations"] == 6
    saved = AutoModelForCausalLM.from_pretrained(project / "artifacts/policy/model")
    assert not any("lora" in k for k in saved.state_dict())  # merged: a plain checkpoint
    evaluated = run_stage(
        BY_NAME["evaluate"], settings
    )  # it loads the snapshots as plain models too
    assert str(evaluated["metrics"]["policy_version"]) == record["model"]["version"]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_a_group_method_trains_on_the_same_loop_and_registers_with_its_name(project, method):
    params = project / f"params-{method}.yaml"
    write_params(params, {"policy": {"method": method}}, base=project / "params.yaml")
    record = run_stage(BY_NAME["policy"], load_settings(params))
    assert record["metrics"]["iterations"] == TINY["group"]["iterations"]
    assert record["metrics"]["selected_iteration"] in (0, 1, 2, 3)
    version = MlflowClient().get_model_version(record["model"]["name"], record["model"]["version"])
    assert version.tags["method"] == method
    history = pd.read_csv(project / "artifacts/policy/history.csv")
    assert len(history) == TINY["group"]["iterations"] and "flat_groups" in history.columns
    assert "vf_loss" not in history.columns  # no critic
    evaluated = run_stage(BY_NAME["evaluate"], load_settings(params))  # plots what it logged
    assert str(evaluated["metrics"]["policy_version"]) == record["model"]["version"]
    assert (project / "artifacts/evaluate/plots/training_curves.png").stat().st_size > 0


def test_dpo_trains_on_the_train_pairs_keeps_snapshots_and_registers_with_its_name(project):
    params = project / "params-dpo.yaml"
    write_params(params, {"policy": {"method": "dpo"}}, base=project / "params.yaml")
    settings = load_settings(params)
    record = run_stage(BY_NAME["policy"], settings)
    metrics = record["metrics"]
    pairs = pd.read_parquet(project / "artifacts/feedback/pairs.parquet")
    train, test = (int((pairs["split"] == s).sum()) for s in ("train", "test"))
    assert metrics["train_pairs"] + metrics["test_pairs"] + metrics["dropped_too_long"] == (
        train + test
    )  # the judge split is not among them
    assert metrics["steps"] == TINY["dpo"]["steps"] and metrics["generated_tokens"] == 0
    snapshots = sorted(p.name for p in (project / "artifacts/policy/snapshots").iterdir())
    assert snapshots == ["iter-00002.pt", "iter-00004.pt", "iter-00006.pt"]
    assert metrics["selected_iteration"] in (2, 4, 6)
    version = MlflowClient().get_model_version(record["model"]["name"], record["model"]["version"])
    assert version.tags["method"] == "dpo"
    history = pd.read_csv(project / "artifacts/policy/history.csv", index_col=0)
    assert history["preference_accuracy"].notna().sum() == 3
    evaluated = run_stage(BY_NAME["evaluate"], settings)
    assert str(evaluated["metrics"]["policy_version"]) == record["model"]["version"]
    assert (project / "artifacts/evaluate/plots/training_curves.png").stat().st_size > 0
