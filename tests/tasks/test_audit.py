"""The audit of an automatic promotion on a real SQLite registry: people's side-by-side labels
uphold it, or the champion alias goes back to the version it replaced, recorded on the
version and in an `audit` run. The loop's own audit is in tests/flows/test_audit.py."""

import json

import pandas as pd
import pytest
from mlflow import MlflowClient

from rlhf.core.evaluation.gate import GATE, LABELS, gate_dir, open_gate
from rlhf.core.evaluation.records import Evaluation
from rlhf.core.settings import load_settings
from rlhf.core.tracking.registry import alias_version, move_champion
from rlhf.core.tracking.store import open_store
from rlhf.tasks.promote import audit_due, settle_gates
from tests.support.project import write_params

PROMPTS = ["Review the lamp.", "Review the kettle.", "Review the desk."]


@pytest.fixture
def audited(tmp_path):
    """v1 was champion, v2 took it automatically, and its audit batch is out for labels."""
    write_params(tmp_path / "params.yaml", {"promotion": {"audit_fraction": 1.0}})
    settings = load_settings(tmp_path / "params.yaml")
    open_store(settings)
    client = MlflowClient()
    client.create_registered_model("rlhf-policy")
    for version in ("1", "2"):
        client.create_model_version("rlhf-policy", str(tmp_path))
        move_champion("rlhf-policy", version, "ci", "promoted")
    rows = [
        {"policy": policy, "prompt": p, "seed": 1, "response": f"{policy} on {p}"}
        for policy in ("policy", "champion")
        for p in PROMPTS
    ]
    open_gate(settings, "2", "1", pd.DataFrame(rows), Evaluation({}, {}), kind="audit")
    return settings, client


def label(settings, prefer: str) -> None:
    """People's votes, as plain pairwise JSONL, for the audited policy or the champion."""
    folder = gate_dir(settings, "2", "audit")
    lines = []
    for p in PROMPTS:
        new, old = f"policy on {p}", f"champion on {p}"
        chosen, rejected = (new, old) if prefer == "policy" else (old, new)
        lines.append(json.dumps({"prompt": p, "chosen": chosen, "rejected": rejected}))
    (folder / LABELS / "people.jsonl").write_text("\n".join(lines) + "\n")


def test_an_audit_waits_for_labels_then_rolls_back_what_people_reject(audited):
    settings, client = audited
    assert settle_gates(settings) == []  # no labels yet: still waiting, nothing moved
    assert alias_version("rlhf-policy", "champion") == "2"
    label(settings, prefer="champion")
    (record,) = settle_gates(settings)
    assert record["verdict"] == "audit rolled back"
    assert (record["champion_before"], record["champion_after"]) == ("2", "1")
    assert "people's win rate against v1 0.000" in record["reasons"][0]
    assert alias_version("rlhf-policy", "champion") == "1"
    v2 = client.get_model_version("rlhf-policy", "2")
    assert v2.tags["audit.state"] == "rolled back" and "rolled_back.at" in v2.tags
    assert v2.tags["rolled_back.by"] == f"audit run {record['run_id']}"
    assert client.get_run(record["run_id"]).data.tags["stage"] == "audit"
    gate = json.loads((gate_dir(settings, "2", "audit") / GATE).read_text())
    assert gate["state"] == "decided" and gate["verdict"] == "rolled back"
    assert settle_gates(settings) == []  # decided once


def test_an_audit_people_agree_with_leaves_the_champion(audited):
    settings, client = audited
    label(settings, prefer="policy")
    (record,) = settle_gates(settings)
    assert record["verdict"] == "audit upheld" and record["champion_after"] == "2"
    assert client.get_model_version("rlhf-policy", "2").tags["audit.state"] == "upheld"


def test_a_rejected_audit_of_a_champion_replaced_since_moves_nothing(audited):
    settings, client = audited
    client.create_model_version("rlhf-policy", "x")
    move_champion("rlhf-policy", "3", "ci", "promoted after v2")
    label(settings, prefer="champion")
    (record,) = settle_gates(settings)
    assert record["verdict"] == "audit rejected"
    assert "the champion is v3 since" in record["reasons"][1]
    assert alias_version("rlhf-policy", "champion") == "3"


def test_automatic_promotions_are_audited_by_share_and_by_count(tmp_path):
    def record(verdict="promoted", judge="judge", version="5"):
        promoted = verdict in ("first", "promoted")
        policy = {"name": "rlhf-policy", "version": version}
        return {"policy": policy, "verdict": verdict, "judge": judge, "promoted": promoted}

    write_params(tmp_path / "params.yaml", {"promotion": {"audit_fraction": 1.0}})
    always = load_settings(tmp_path / "params.yaml")
    assert audit_due(always, record()) and audit_due(always, record("first"))
    assert not audit_due(always, record("held")) and not audit_due(always, record(judge="human"))
    write_params(tmp_path / "params.yaml", {"promotion": {"audit_fraction": 0.3}})
    share = load_settings(tmp_path / "params.yaml")
    picked = [audit_due(share, record(version=str(v))) for v in range(1, 401)]
    assert 0.2 < sum(picked) / len(picked) < 0.4  # seeded by version: the same each time
    assert picked == [audit_due(share, record(version=str(v))) for v in range(1, 401)]


def test_every_nth_automatic_promotion_is_audited(audited):
    settings, client = audited
    params = settings.path("params.yaml")
    write_params(params, {"promotion": {"audit_every": 2}})
    every_second = load_settings(params)
    client.create_model_version("rlhf-policy", "x")  # v3
    due = []
    for version in ("1", "2", "3"):
        for key, value in (("promotion.verdict", "promoted"), ("promotion.judge", "judge")):
            client.set_model_version_tag("rlhf-policy", version, key, value)
        record = {
            "policy": {"name": "rlhf-policy", "version": version},
            "judge": "judge",
            "promoted": True,
        }
        due.append(audit_due(every_second, record))
    assert due == [False, True, False]  # the 2nd automatic promotion; the 3rd is no 4th
