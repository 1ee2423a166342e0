"""The judge stage's members from different backbones: member i starts from
judge.backbones[i % len], the SFT model or the pretrained base, and only a judge that uses the
base declares (and records) it as an input."""

import pytest
from mlflow import MlflowClient

from rlhf.core.settings import load_settings
from rlhf.core.tracking.lineage import input_model_ids, registered_uris
from rlhf.core.tracking.store import open_store
from rlhf.flows.runner import run_stage
from rlhf.tasks import BY_NAME, STAGES
from tests.support.project import TINY, make_project, write_params


@pytest.mark.e2e  # every pipeline test trains the default judge; this trains two backbones
def test_members_start_from_their_backbones_and_only_a_used_base_is_an_input(tmp_path):
    root = make_project(tmp_path / "project")
    settings = load_settings(root / "params.yaml")
    judge = BY_NAME["judge"]
    assert "pretrain/model" not in judge.inputs(settings)
    for stage in STAGES[: [s.name for s in STAGES].index("judge")]:
        run_stage(stage, settings)
    params = root / "params-mixed.yaml"
    mixed = {**TINY["judge"], "members": 3, "backbones": ["sft", "pretrain"]}
    write_params(params, {"judge": mixed}, base=root / "params.yaml")
    mixed_settings = load_settings(params)
    assert "pretrain/model" in judge.inputs(mixed_settings)
    record = run_stage(judge, mixed_settings)
    assert all(record["metrics"][f"accuracy_member_{i}"] > 0 for i in range(3))
    open_store(mixed_settings)
    client = MlflowClient()
    members = client.search_model_versions("name='rlhf-judge'")
    backbones = {v.tags["member"]: v.tags["backbone"] for v in members}
    assert backbones == {"0": "sft", "1": "pretrain", "2": "sft"}
    run = client.get_run(record["run_id"])
    started = {u for m in input_model_ids(run) for u in registered_uris(m)}
    assert started == {"models:/rlhf-sft/1", "models:/rlhf-base/1"}
