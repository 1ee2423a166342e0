"""Two iterations of the feedback loop flow, unattended: labels in, a judged policy out."""

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
    "collect_prompts": 24,
    "annotators": "tests.support.annotators:prefer_challenger",
}
# people decide each promotion, side by side (the scripted annotators always prefer the new
# policy, so the gate's outcome is known)
GATE = {"judge": "human", "human_min_labels": 8}


@pytest.fixture(scope="module")
def looped(tmp_path_factory):
    """A project, two bad files in its inbox, and two iterations of the loop."""
    project = make_project(
        tmp_path_factory.mktemp("loop") / "project", {"loop": LOOP, "promotion": GATE}
    )
    annotators.OUTBOX[:] = [project / "labeling"]
    inbox = project / "inbox"
    inbox.mkdir()
    (inbox / "broken.jsonl").write_text('{"prompt": "p", "chosen": "same", "rejected": "same"}\n')
    (inbox / "notes.txt").write_text("not an export\n")
    (inbox / ".half-written.json").write_text("[")  # still being written: left alone
    params = str(project / "params.yaml")
    return project, feedback_loop(params_path=params), feedback_loop(params_path=params)


def test_first_iteration_trains_sets_bad_files_aside_and_collects(looped):
    project, first, _ = looped
    assert first["retrained"] and first["champion_before"] is None
    assert first["champion_after"] == "1" and first["decision"] == "first"
    # the gate waited for people, who answered, and the decision was theirs
    gate = json.loads((project / "labeling/gate-v1/gate.json").read_text())
    assert gate["state"] == "decided" and first["gate_labelled_into"].endswith("labelstudio.json")
    rejected = project / "inbox/rejected"
    reports = {
        json.loads(p.read_text())["file"]: json.loads(p.read_text())["error"]
        for p in rejected.glob("*.report.json")
    }
    assert set(reports) == {"broken.jsonl", "notes.txt"}
    assert "unknown file type" in reports["notes.txt"]
    assert "broken.jsonl" in reports["broken.jsonl"]
    kept = {
        p.name.split("-", 1)[1]: p.read_text()
        for p in rejected.iterdir()
        if not p.name.endswith(".report.json")
    }
    assert kept == {
        "broken.jsonl": '{"prompt": "p", "chosen": "same", "rejected": "same"}\n',
        "notes.txt": "not an export\n",
    }  # moved whole, never deleted
    assert (project / "inbox/.half-written.json").exists()

    batch = project / "labeling/batch-0001"
    tasks = [json.loads(line) for line in (batch / "tasks.jsonl").read_text().splitlines()]
    studio = json.loads((batch / "tasks.labelstudio.json").read_text())
    assert first["collected"]["tasks"] == len(tasks) == len(studio) > 0
    assert all(t["response_a"] != t["response_b"] for t in tasks)
    assert [s["data"]["answer1"] for s in studio] == [t["response_a"] for t in tasks]
    assert "<Pairwise" in (batch / "labeling_config.xml").read_text()
    assert first["collected"]["champion_version"] == "1"


def test_second_iteration_imports_the_labels_and_trains_on_more_feedback(looped):
    project, first, second = looped
    assert second["imported_files"] == 1 and second["rejected_files"] == 0
    assert second["added_pairs"] == first["collected"]["tasks"]
    assert second["new_comparisons"] >= LOOP["min_new_comparisons"] and second["retrained"]
    assert second["trained_pairs"] == first["trained_pairs"] + second["added_pairs"]
    assert list((project / "inbox/imported").glob("*-batch-0001-labelstudio.json"))
    batches = sorted(p.name for p in (project / "data/feedback/batches").iterdir())
    assert len(batches) == 3  # the demo's two rounds and the loop's labels

    open_store(load_settings(project / "params.yaml"))
    client = MlflowClient()
    version = client.get_model_version("rlhf-policy", str(second["policy_version"]))
    assert second["policy_version"] == 2
    assert second["policy_parent"] == second["champion_parent"] == "models:/rlhf-sft/1"
    # people always prefer it: promoted, unless a reward model disagrees (held); a tiny
    # policy may also answer every held-out prompt as the champion does (nothing to compare)
    reasons = version.tags["promotion.reasons"]
    assert version.tags["promotion.verdict"] == second["decision"]
    assert version.tags["promotion.judge"] == "human"
    if second["decision"] == "rejected":
        assert "nothing for people to compare" in reasons
    else:
        assert second["decision"] in ("promoted", "held")
        assert "people, side by side: win rate against champion v1 1.000" in reasons
    reward_runs = client.search_runs(
        [client.get_experiment_by_name("rlhf").experiment_id],
        "tags.stage = 'reward'",
        order_by=["attributes.start_time ASC"],
    )
    assert len(reward_runs) == 2  # the reward model retrained on the larger table
    assert second["collected"]["batch"] == "batch-0002"
    loops = client.search_runs(
        [client.get_experiment_by_name("rlhf").experiment_id],
        "attributes.run_name = 'feedback-loop'",
    )
    assert sorted(r.data.metrics["trained_pairs"] for r in loops) == [
        first["trained_pairs"],
        second["trained_pairs"],
    ]
