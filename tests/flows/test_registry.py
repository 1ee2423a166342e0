"""Two pipeline runs with different PPO settings on a DVC-tracked project: the registry holds
both policies, the champion is the one the rules pick with its reasons written down, people
can move it by hand, and lineage and reproduction lead back to data.dvc and the commit."""

import json
import subprocess
from uuid import UUID

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from rlhf.core.io import digest_path
from rlhf.core.settings import load_settings
from rlhf.core.tracking.lineage import HOW_IT_RAN
from rlhf.core.tracking.store import tracking_uri
from rlhf.flows.runner import run_stage
from rlhf.tasks import BY_NAME
from tests.flows.test_dvc import dvc
from tests.flows.test_pipeline import artifact_data
from tests.support.registry import rlhf


def client_for(project):
    return MlflowClient(tracking_uri(load_settings(project / "params.yaml")))


def test_both_policies_are_registered_and_the_rules_pick_the_champion(two_runs):
    client = client_for(two_runs["project"])
    first, second = two_runs["first"]["promotion"], two_runs["second"]["promotion"]
    evaluation = two_runs["second"]["records"]["evaluate"]["metrics"]
    assert (first["policy"]["version"], first["verdict"], first["champion_after"]) == (
        "1",
        "first",
        "1",
    )
    vs = second["metrics"]
    assert second["policy"]["version"] == "2" and vs["champion_version_compared"] == 1
    assert second["champion_before"] == "1"
    assert (
        vs["rm_win_rate_policy_vs_champion_lower"]
        <= vs["rm_win_rate_policy_vs_champion"]
        <= vs["rm_win_rate_policy_vs_champion_upper"]
    )

    settings = load_settings(two_runs["project"] / "params.yaml")
    judge_says_better = (
        vs["judge_win_rate_policy_vs_champion_lower"] > settings.promotion.min_win_rate_lower
        and evaluation["kl_policy_vs_ref"] <= settings.judge.kl_budget
    )
    # the judge decides; the other judges (the optimised RM, each member) can only hold it
    assert second["verdict"] in (("promoted", "held") if judge_says_better else ("rejected",))
    assert second["promoted"] == (second["verdict"] == "promoted")
    assert second["champion_after"] == ("2" if second["promoted"] else "1")
    assert (
        str(client.get_model_version_by_alias("rlhf-policy", "champion").version)
        == (second["champion_after"])
    )
    v2 = client.get_model_version_by_alias("rlhf-policy", "challenger")
    assert str(v2.version) == "2"
    assert v2.tags["promotion.verdict"] == second["verdict"]
    assert "win rate against champion v1" in v2.tags["promotion.reasons"]
    assert v2.tags["promotion.compared_to"] == "1"
    assert v2.tags["promotion.by"] == f"promote run {second['run_id']}"
    assert second["verdict"] in v2.description
    assert float(v2.tags["eval.kl_policy_vs_ref"]) == pytest.approx(
        evaluation["kl_policy_vs_ref"], abs=1e-4
    )
    report = (two_runs["project"] / "artifacts/promote/report.md").read_text()
    assert second["verdict"] in report and "new vs champion (judge)" in report
    assert "new vs champion (rm)" in report


def test_evaluate_reads_no_alias_and_moves_none(two_runs):
    """The evaluate stage is a pure function of its inputs: rerun by hand (as `dvc repro`
    would) it leaves the registry's aliases where they are and measures nothing against the
    champion; that is the promote step's job."""
    project = two_runs["project"]
    client = client_for(project)
    before = client.get_registered_model("rlhf-policy").aliases
    metrics = run_stage(BY_NAME["evaluate"], load_settings(project / "params.yaml"))["metrics"]
    assert client.get_registered_model("rlhf-policy").aliases == before
    assert not [k for k in metrics if "champion" in k]
    assert metrics == two_runs["second"]["records"]["evaluate"]["metrics"]


def test_the_evaluation_writes_plots_report_and_curve_and_logs_them(two_runs):
    project = two_runs["project"]
    out = project / "artifacts/evaluate"
    samples = pd.read_csv(out / "samples.csv")
    assert set(samples["policy"]) == {"sft", "policy"}
    curve = pd.read_csv(out / "score_vs_kl.csv")
    assert curve["iteration"].tolist() == [0, 2, 4]  # the reference, then every snapshot
    metrics = json.loads((out / "metrics.json").read_text())
    # the evaluated policy is the snapshot PPO kept: the same numbers
    (kept,) = curve[curve["iteration"] == metrics["selected_iteration"]].itertuples()
    assert kept.kl == pytest.approx(metrics["kl_policy_vs_ref"])
    assert kept.rm == pytest.approx(metrics["rm_score_policy"])
    assert kept.judge == pytest.approx(metrics["judge_score_policy"])
    selection = pd.read_csv(project / "artifacts/policy/selection.csv")
    assert selection["chosen"].sum() == 1
    assert selection.loc[selection["chosen"], "iteration"].item() == metrics["selected_iteration"]
    for png in ("training_curves.png", "score_vs_kl.png", "win_rates.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "new vs sft (rm)" in report and "Samples side by side" in report

    client = client_for(project)
    run_id = two_runs["second"]["records"]["evaluate"]["run_id"]
    logged = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert logged == {"plots/training_curves.png", "plots/score_vs_kl.png", "plots/win_rates.png"}


def test_models_promote_and_rollback_by_hand(two_runs):
    project = two_runs["project"]
    client = client_for(project)
    champion = str(client.get_model_version_by_alias("rlhf-policy", "champion").version)
    other = "1" if champion == "2" else "2"

    code, out = rlhf(
        project, "promote", "policy", other, "--reason", "canary looked better", "--by", "alice"
    )
    assert code == 0 and f"v{champion} -> v{other}" in out
    moved = client.get_model_version("rlhf-policy", other)
    assert moved.tags["champion.by"] == "alice"
    assert moved.tags["champion.reason"] == "canary looked better"

    code, out = rlhf(project, "models", "--json")
    rows = {(r["name"], r["version"]): r for r in json.loads(out)}
    assert "champion" in rows[("rlhf-policy", other)]["aliases"]
    assert {("rlhf-base", "1"), ("rlhf-sft", "1"), ("rlhf-reward", "1")} <= set(rows)
    assert "accuracy" in rows[("rlhf-reward", "1")]["metrics"]
    assert rows[("rlhf-policy", "2")]["judge"] == "judge"
    code, table = rlhf(project, "models")
    assert "decided by judge: the evaluation reward models: win rate against" in table

    code, out = rlhf(
        project, "rollback", "rlhf-policy", "--reason", "latency regression", "--by", "bob"
    )
    assert code == 0 and f"v{other} -> v{champion}" in out
    assert str(client.get_model_version_by_alias("rlhf-policy", "champion").version) == champion
    assert client.get_model_version("rlhf-policy", other).tags["rolled_back.by"] == "bob"
    assert rlhf(project, "promote", "policy", "9", "--reason", "x")[0] == 2  # no such version


def test_lineage_walks_from_the_champion_back_to_data_dvc(two_runs):
    project = two_runs["project"]
    data_md5 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    code, out = rlhf(project, "lineage", "models:/rlhf-policy@champion", "--json")
    assert code == 0
    node = json.loads(out)
    assert node["name"] == "rlhf-policy" and "champion" in node["aliases"]
    assert node["data_dvc_md5"] == data_md5 and node["git_dirty"] == "false"
    datasets = {d["path"]: d for d in node["datasets"]}  # the PPO policy stage's inputs
    assert set(datasets) == {"artifacts/ingest/prompts_train.parquet"}
    prompts = datasets["artifacts/ingest/prompts_train.parquet"]
    assert prompts["md5"] == digest_path(project / "artifacts/ingest/prompts_train.parquet")
    assert prompts["run"]["stage"] == "ingest"
    # the dataset's source is where DVC keeps it: path, md5, and the commit of the first run
    # that recorded that content (MLflow keeps one record per name and digest)
    assert prompts["source"] == {
        "repo": str(project.resolve()),
        "path": "artifacts/ingest/prompts_train.parquet",
        "rev": two_runs["first_commit"],
        "md5": prompts["md5"],
        "dvc_file": "dvc.lock",
        "produced_by": "ingest/prompts_train.parquet",
    }
    raw = {d["path"]: d for d in prompts["inputs"]}
    assert raw["data/prompts"]["md5"] == digest_path(project / "data/prompts")
    assert raw["data/prompts"]["data_dvc_md5"] == data_md5
    assert raw["data/prompts"]["source"]["dvc_file"] == "data.dvc"

    # the models it started from are the run's model inputs, each a registered version
    by_kind = {m["name"]: m for m in node["models"]}
    assert set(by_kind) == {"rlhf-sft", "rlhf-reward", "rlhf-judge"}
    sft = by_kind["rlhf-sft"]
    assert [m["name"] for m in by_kind["rlhf-reward"]["models"]] == ["rlhf-sft"]
    (base,) = sft["models"]
    assert (
        base["name"] == "rlhf-base"
        and base["datasets"][0]["path"] == "artifacts/ingest/corpus.parquet"
    )
    assert base["models"] == []  # built from a config: the walk ends at its data
    feedback = by_kind["rlhf-reward"]["datasets"][0]
    assert feedback["inputs"][0]["path"] == "data/feedback"

    code, tree = rlhf(project, "lineage", "models:/rlhf-policy@champion")
    assert f"data.dvc md5 {data_md5}" in tree and "from models:/rlhf-base/1" in tree
    assert (
        "dataset artifacts/ingest/prompts_train.parquet  md5 " in tree
        and "(dvc.lock at git" in tree
    )
    assert rlhf(project, "lineage", "models:/rlhf-policy@nobody")[0] == 2


@pytest.mark.e2e  # a fresh git clone rebuilt by dvc
def test_reproduce_rebuilds_the_first_policy_from_its_commit(two_runs):
    project, root = two_runs["project"], two_runs["root"]
    code, out = rlhf(project, "reproduce", "models:/rlhf-policy/1", "--json")
    plan = json.loads(out)
    assert plan["git_commit"] == two_runs["first_commit"] and plan["warnings"] == []
    assert plan["commands"] == [
        f"git checkout {plan['git_commit']}",
        "dvc pull data.dvc",
        "dvc repro policy",
    ]

    clone = root / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    for command in plan["commands"]:
        tool, *args = command.split()
        if tool == "git":
            subprocess.run(["git", "-c", "advice.detachedHead=false", *args], cwd=clone, check=True)
        else:
            dvc(*args, cwd=clone)
    rebuilt = json.loads((clone / "artifacts/policy/metrics.json").read_text())
    assert "seconds" in rebuilt and "seconds" not in plan["expected_metrics"]
    assert {k: v for k, v in rebuilt.items() if k not in HOW_IT_RAN} == plan["expected_metrics"]
    assert digest_path(clone / "artifacts/policy/model") == plan["expected_model_digest"]


def test_the_prefect_run_logs_the_stages_and_links_their_mlflow_runs(two_runs):
    first = two_runs["first"]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(first["flow_run_id"])]))
        )
    messages = "\n".join(log.message for log in logs)
    assert "reward: " in messages and "ppo: policy = " in messages  # the stages' own lines
    links = artifact_data(first["flow_run_id"], "rlhf-mlflow")
    assert first["parent_run_id"] in links
    assert all(record["run_id"] in links for record in first["records"].values())
