"""A PPO run that crashes resumes from its last checkpoint and ends where an uninterrupted
run ends (bitwise on CPU with fixed seeds)."""

import pytest

import tasks.ppo
from tasks.io import digest_path
from tasks.runner import run_stage
from tasks.settings import load_settings
from tests.conftest import write_params


def test_crashed_ppo_resumes_and_matches_an_uninterrupted_run(tiny_project, monkeypatch):
    params = tiny_project / "params.yaml"
    write_params(params, {"ppo": {"iterations": 4, "checkpoint_every": 2}}, base=params)
    settings = load_settings(params)
    for stage in ("ingest", "pretrain", "sft", "feedback", "reward"):
        run_stage(stage, settings)
    model = tiny_project / "artifacts/ppo/model"
    whole = run_stage("ppo", settings)
    whole_digest = digest_path(model)

    real_update, calls = tasks.ppo.update, []

    def crash_in_third_iteration(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(tasks.ppo, "update", crash_in_third_iteration)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_stage("ppo", settings)
    assert digest_path(model) == whole_digest  # the earlier outputs were not touched
    assert (tiny_project / "artifacts/.work/ppo/checkpoint.pt").exists()

    monkeypatch.setattr(tasks.ppo, "update", real_update)
    resumed = run_stage("ppo", settings)
    assert resumed["metrics"]["resumed_from"] == 2
    assert digest_path(model) == whole_digest
    assert resumed["model"] == whole["model"]  # the same weights: no second registry version
    assert {k: v for k, v in resumed["metrics"].items() if k != "resumed_from"} == \
        {k: v for k, v in whole["metrics"].items() if k != "resumed_from"}
    assert not (tiny_project / "artifacts/.work/ppo/checkpoint.pt").exists()
