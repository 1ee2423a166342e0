"""Reward functions beside the reward model, through the policy and evaluate stages of a tiny
project: weighted into the reward, logged per function (history, MLflow, summary), versioned
(cache key and lineage), reported by the evaluation; a bad one stops the stage with one line
and leaves artifacts/ as it was."""

import json
import re
import textwrap

import pandas as pd
import pytest
from mlflow import MlflowClient

from rlhf.core.settings import UserError, load_settings
from rlhf.flows.runner import cache_key, own_code, run_stage, stage_code
from rlhf.tasks import BY_NAME
from tests.support.project import clone_project, write_params

OWN = """
import helper
from rlhf.core.rewards import length_band  # rlhf's own code, outside the project

def says_good(prompts, completions, **fields):
    return [helper.score(c) for c in completions]

def infinite(prompts, completions, **fields):
    return [float("inf")] * len(completions)

def nan(prompts, completions, **fields):
    return [float("nan")] * len(completions)

def raises(prompts, completions, **fields):
    raise ValueError("no answer field")

def short(prompts, completions, **fields):
    return [1.0]

def slow(prompts, completions, **fields):
    import time
    time.sleep(30)
"""
BAD = {  # own_rewards' bad functions and what the stage's one line says of each
    "infinite": r"sample 0 \(.*\): returned inf",
    "nan": r"sample 0 \(.*\): returned nan",
    "raises": r"raised ValueError: no answer field",
    "short": r"returned 1 values for \d+ completions",
    "slow": r"took longer than rewards.timeout_seconds 1 s",
}
HELPER = "def score(text):\n    return float('good' in text)\n"
REWARDS = {
    "model_weight": 1.0,
    "functions": [
        {"name": "length", "fn": "rlhf.core.rewards:length_band", "weight": 0.5,
         "args": {"target": 4, "tolerance": 2}},
        {"name": "good", "fn": "own_rewards:says_good", "weight": 1.0},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory, trained_upstream):
    root = clone_project(
        trained_upstream,
        tmp_path_factory.mktemp("rewards") / "project",
        {"policy": {"method": "grpo"}, "rewards": REWARDS},
    )
    (root / "own_rewards.py").write_text(textwrap.dedent(OWN), encoding="utf-8")
    (root / "helper.py").write_text(HELPER, encoding="utf-8")
    (root / "unrelated.py").write_text("X = 1\n", encoding="utf-8")
    return root


def test_functions_are_weighted_in_logged_versioned_and_evaluated(project):
    settings = load_settings(project / "params.yaml")
    policy = run_stage(BY_NAME["policy"], settings)
    m = policy["metrics"]
    assert {"final_reward_length", "final_reward_good"} <= set(m)
    history = pd.read_csv(project / "artifacts/policy/history.csv")
    assert {"reward_length", "reward_length_std", "reward_good", "reward_good_std"} <= set(
        history.columns
    )
    assert history["reward_length"].between(0, 1).all()
    client = MlflowClient()
    logged = client.get_metric_history(policy["run_id"], "reward_length")
    assert len(logged) == len(history)
    summary = json.loads((project / "artifacts/policy/summary.json").read_text())["policy"]
    assert {"final_reward_length", "final_reward_good"} <= set(summary)
    name, version = policy["model"]["uri"].removeprefix("models:/").split("/")
    made_by = client.get_model_version(name, version).tags["rewards"]
    assert made_by.startswith("model×1; length=rlhf.core.rewards:length_band×0.5@")
    assert "good=own_rewards:says_good×1@" in made_by

    evaluated = run_stage(BY_NAME["evaluate"], settings)["metrics"]
    for fn in ("length", "good"):
        low, gain, high = (evaluated[f"reward_{fn}_gain{s}"] for s in ("_lower", "", "_upper"))
        assert low <= gain <= high
        assert gain == pytest.approx(
            evaluated[f"reward_{fn}_policy"] - evaluated[f"reward_{fn}_sft"]
        )
    samples = pd.read_csv(project / "artifacts/evaluate/samples.csv")
    assert samples["reward_length"].notna().all()
    assert "## Reward functions" in (project / "artifacts/evaluate/report.md").read_text()


def test_editing_a_function_or_what_it_imports_retrains_and_nothing_else_does(project):
    settings = load_settings(project / "params.yaml")
    stage = BY_NAME["policy"]
    key = cache_key(stage, settings)
    (project / "unrelated.py").write_text("X = 2\n", encoding="utf-8")
    assert cache_key(stage, settings) == key
    helper = project / "helper.py"
    helper.write_text(HELPER + "# tuned\n", encoding="utf-8")
    assert cache_key(stage, settings) != key
    helper.write_text(HELPER, encoding="utf-8")
    assert cache_key(stage, settings) == key
    assert "rlhf.core.rewards.builtins" in stage_code(stage, settings)  # what own_rewards imports
    assert own_code(stage, settings) == ["helper.py", "own_rewards.py"]


@pytest.mark.parametrize("fn", list(BAD))
def test_a_bad_function_stops_the_stage_in_one_line_before_anything_is_written(
    project, tmp_path, fn
):
    params = tmp_path / "params.yaml"
    bad = {
        **REWARDS,
        "timeout_seconds": 1,
        "functions": [{"name": "bad", "fn": f"own_rewards:{fn}"}],
    }
    write_params(params, {"rewards": bad}, base=project / "params.yaml")
    before = tree(project / "artifacts")
    settings = load_settings(params).model_copy(update={"root": str(project)})
    with pytest.raises(UserError) as e:
        run_stage(BY_NAME["policy"], settings)
    assert str(e.value).startswith(f"rewards.functions bad (own_rewards:{fn}): ")
    assert re.search(BAD[fn], str(e.value)) and "\n" not in str(e.value), str(e.value)
    assert tree(project / "artifacts") == before


def tree(folder):
    """Every file and folder under folder, hidden ones (checkpoints) included, with content."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


def test_without_a_reward_model_the_functions_choose_and_judge(project, tmp_path):
    own = {"model_weight": 0.0, "functions": [{"name": "good", "fn": "own_rewards:says_good"}]}
    params = tmp_path / "params.yaml"
    write_params(params, {"rewards": own}, base=project / "params.yaml")
    settings = load_settings(params).model_copy(update={"root": str(project)})
    assert "reward/model" not in BY_NAME["policy"].inputs(settings)
    policy = run_stage(BY_NAME["policy"], settings)
    name, version = policy["model"]["uri"].removeprefix("models:/").split("/")
    selected = MlflowClient().get_model_version(name, version).tags["selected"]
    assert "the reward functions' best" in selected or "nearest" in selected, selected
    selection = pd.read_csv(project / "artifacts/policy/selection.csv")
    assert selection["judge"].between(0, 1).all()

    evaluated = run_stage(BY_NAME["evaluate"], settings)["metrics"]
    assert evaluated["functions_judge"] == 1 and "judge_accuracy" not in evaluated
    samples = pd.read_csv(project / "artifacts/evaluate/samples.csv")
    says_good = samples["response"].fillna("").str.contains("good").astype(float)
    assert (samples["judge"] == says_good).all() and (samples["rm"] == says_good).all()
    assert evaluated["judge_win_rate_policy_vs_sft"] is not None
