"""The promote step on tiny projects: a reward hack the judge refuses while the reward model it
hacked prefers it, and the human gate waiting for labels, then deciding on them."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from mlflow import MlflowClient

from rlhf.core.evaluation.gate import GATE, LABELS, gate_dir
from rlhf.core.feedback.batches import splits as feedback_splits
from rlhf.core.feedback.dataset import BATCHES
from rlhf.core.settings import load_settings
from rlhf.core.tracking.store import open_store
from rlhf.flows.pipeline import rlhf_pipeline
from rlhf.tasks.promote import settle_gates
from tests.support.project import TINY, make_project

# a judge and a reward model that learn something from the tiny data, and a first policy
# that moves far enough from SFT for the judge to see it (3 iterations left it at KL 0.07,
# where the judge's noise alone could call it worse than the reference)
TRAINED = {
    "demo": {"comparisons": 900, "train_prompts": 48, "eval_prompts": 16},
    "ppo": {**TINY["ppo"], "iterations": 12, "lr": 0.001},
    "reward": {"steps": 60, "batch_size": 16, "lr": 0.003},
    "judge": {"steps": 60, "batch_size": 16, "lr": 0.003, "selection_prompts": 8},
    "evaluate": {"samples_per_prompt": 2, "max_new_tokens": 12},
}


def invert_training_labels(project) -> int:
    """Swap chosen and rejected of every pair in the train split (the reward model's): a
    reward model that learns the opposite of what people said, and a judge (trained on the
    judge split, left as it is) that does not."""
    splits, swapped = feedback_splits(load_settings(project / "params.yaml")), 0
    for votes in (project / "data/feedback" / BATCHES).glob("*/votes.parquet"):
        df = pq.read_table(votes).to_pandas()
        train = df["prompt"].map(splits.of) == "train"
        df.loc[train, ["chosen", "rejected"]] = df.loc[train, ["rejected", "chosen"]].to_numpy()
        df.to_parquet(votes, index=False)
        swapped += int(train.sum())
    return swapped


def set_params(project, **sections) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        params[name] |= values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def hacked(tmp_path_factory):
    """A champion trained on the real labels, then a challenger PPO over-optimised (no KL
    penalty, a large step) against a reward model trained on inverted labels."""
    project = make_project(tmp_path_factory.mktemp("hack") / "project", TRAINED)
    params = str(project / "params.yaml")
    first = rlhf_pipeline(params_path=params)["promotion"]
    assert invert_training_labels(project) > 100
    set_params(project, ppo={"kl_coef": 0.0, "kl_target": None, "lr": 0.003, "iterations": 8})
    return project, first, rlhf_pipeline(params_path=params)["promotion"]


def test_a_reward_hack_the_optimised_reward_model_prefers_is_refused_by_the_judge(hacked):
    project, first, second = hacked
    assert first["verdict"] == "first"
    m = second["metrics"]
    assert m["rm_win_rate_policy_vs_champion"] > 0.5  # the hacked reward model wants it
    assert m["judge_win_rate_policy_vs_champion"] < 0.5  # the judge does not
    assert m["gold_win_rate_policy_vs_champion"] <= 0.5  # the referee: no better (often ties)
    assert second["verdict"] in ("rejected", "held") and not second["promoted"]
    assert second["champion_after"] == first["policy"]["version"]
    open_store(load_settings(project / "params.yaml"))
    tags = MlflowClient().get_model_version("rlhf-policy", second["policy"]["version"]).tags
    assert tags["promotion.judge"] == "judge"
    assert "optimised reward model's win rate" in tags["promotion.reasons"]


def label(folder, challenger_wins: int) -> None:
    """People's labels for the gate's tasks, as a plain pairwise JSONL export: the first
    challenger_wins tasks go to the challenger, the rest to the incumbent."""
    tasks = json.loads((folder / GATE).read_text())["tasks"]
    rows = []
    for i, t in enumerate(tasks):
        a_is_challenger = t["challenger"] == "a"
        pick_a = a_is_challenger if i < challenger_wins else not a_is_challenger
        chosen, rejected = (
            (t["response_a"], t["response_b"]) if pick_a else (t["response_b"], t["response_a"])
        )
        rows.append({"prompt": t["prompt"], "chosen": chosen, "rejected": rejected})
    pd.DataFrame(rows).to_json(folder / LABELS / "people.jsonl", orient="records", lines=True)


def test_the_human_gate_waits_for_labels_then_decides_on_them(tmp_path):
    project = make_project(
        tmp_path / "project",
        {
            "promotion": {"judge": "human", "human_min_labels": 4},
            "evaluate": {"samples_per_prompt": 2, "max_new_tokens": 12},
        },
    )
    settings = load_settings(project / "params.yaml")
    pending = rlhf_pipeline(params_path=str(project / "params.yaml"))["promotion"]
    assert pending["verdict"] == "pending" and pending["champion_after"] is None
    folder = gate_dir(settings, pending["policy"]["version"])
    tasks = json.loads((folder / GATE).read_text())["tasks"]
    assert len(tasks) >= 4
    studio = json.loads((folder / "tasks.labelstudio.json").read_text())
    assert "challenger" not in json.dumps(studio)  # people do not see which side is which
    assert settle_gates(settings) == []  # no labels yet: still waiting

    label(folder, challenger_wins=2)
    (folder / LABELS / "people.jsonl").write_text(
        "\n".join((folder / LABELS / "people.jsonl").read_text().splitlines()[:3]) + "\n"
    )
    assert settle_gates(settings) == []  # 3 of the 4 labels it waits for

    label(folder, challenger_wins=len(tasks))
    (decided,) = settle_gates(settings)
    assert decided["verdict"] == "first" and decided["judge"] == "human"
    assert decided["metrics"]["human_win_rate_policy_vs_sft"] == 1.0
    assert decided["champion_after"] == pending["policy"]["version"]
    assert json.loads((folder / GATE).read_text())["state"] == "decided"
    assert settle_gates(settings) == []  # decided once
    # the labels judged held-out prompts: they never join the feedback the models train on
    assert len(list((project / "data/feedback" / BATCHES).iterdir())) == 2
