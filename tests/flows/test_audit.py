"""The loop audits an automatic promotion: people review it side by side against what it
replaced, reject it, and the champion alias goes back, with an alert, in one iteration."""

import json

import pytest
from mlflow import MlflowClient

from rlhf.core.settings import load_settings
from rlhf.core.tracking.store import open_store
from rlhf.flows.loop import feedback_loop
from tests.support import annotators
from tests.support.project import make_project

LOOP = {
    "min_new_comparisons": 20,
    "collect_prompts": 8,
    "annotators": "tests.support.annotators:reject_audits",
}
# every automatic promotion is audited; the over-optimisation signals, tested apart, are off
# so that the tiny policy's promotion does not depend on them
AUDITED = {
    "audit_fraction": 1.0,
    "max_extrapolated": None,
    "max_rm_judge_gap": None,
    "max_length_ratio": None,
    "min_distinct_ratio": None,
    "min_relevance_ratio": None,
    "kl_budget_drop": None,
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    project = make_project(
        tmp_path_factory.mktemp("audit") / "project", {"loop": LOOP, "promotion": AUDITED}
    )
    annotators.OUTBOX[:] = [project / "labeling"]
    return project, feedback_loop(params_path=str(project / "params.yaml"))


def test_an_audit_people_reject_rolls_the_promotion_back_and_alerts(audited):
    project, summary = audited
    assert summary["retrained"] and summary["decision"] == "first"  # the judge promoted it
    assert summary["audit_labelled_into"].endswith("audit-v1/labels/labelstudio.json")
    assert summary["settled"] == ["v1 audit rolled back"]
    assert summary["champion_before"] is None and summary["champion_after"] is None
    assert summary["collected"] is None  # no champion to sample a batch from
    (alert,) = summary["alerts"]
    assert "policy v1's promotion rolled back by its audit" in alert
    assert "people's win rate against the reference 0.000" in alert
    gate = json.loads((project / "labeling/audit-v1/gate.json").read_text())
    assert (gate["kind"], gate["state"], gate["verdict"]) == ("audit", "decided", "rolled back")

    open_store(load_settings(project / "params.yaml"))
    client = MlflowClient()
    v1 = client.get_model_version("rlhf-policy", "1")
    assert v1.tags["promotion.verdict"] == "first" and v1.tags["audit.state"] == "rolled back"
    assert v1.tags["rolled_back.by"].startswith("audit run ")
    assert "champion" not in client.get_registered_model("rlhf-policy").aliases
    loop_run = client.get_run(summary["mlflow_run"])
    assert "rolled back by its audit" in loop_run.data.tags["alerts"]
