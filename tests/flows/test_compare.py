"""`rlhf compare` on a tiny project: every method from the same SFT and reward model, one
scoreboard; and best-of-n's choice."""

import math

import pandas as pd
import pytest
from mlflow import MlflowClient

from rlhf.core.evaluation.best_of_n import best_of_n_kl, choose_best
from rlhf.core.io import read_json
from rlhf.core.settings import METHODS, UserError, load_settings
from rlhf.flows.cli import main
from rlhf.flows.compare import chosen_methods, method_settings
from rlhf.flows.runner import cache_key
from rlhf.models.config import Config
from rlhf.tasks import BY_NAME
from tests.support.project import WITHOUT_MODEL, clone_project, make_project, write_params
from tests.support.toy_method import TOY


def test_best_of_n_keeps_the_reward_models_favourite_of_each_prompt_and_seed():
    candidates = pd.DataFrame(
        {
            "seed": [1, 1, 1, 1, 2, 2, 2, 2],
            "item": [0, 1, 0, 1, 0, 1, 0, 1],
            "candidate": [0, 0, 1, 1, 0, 0, 1, 1],
            "rm": [0.1, 0.9, 0.5, -0.2, 0.3, 0.3, 0.2, 0.4],
            "response": list("abcdefgh"),
        }
    )
    best = choose_best(candidates)
    assert best["response"].tolist() == ["c", "b", "e", "h"]  # ties keep the first


def test_best_of_n_kl_is_the_analytic_bound():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)


def test_an_unknown_method_is_one_clear_error(tmp_path):
    settings = load_settings(make_project(tmp_path / "p") / "params.yaml")
    with pytest.raises(UserError, match="unknown method.*sft"):
        chosen_methods(settings, ["dpo", "sft"])
    assert chosen_methods(settings, ["dpo", "dpo", "rloo"]) == ["dpo", "rloo"]


def test_without_a_reward_model_only_online_methods_compare(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    write_params(params, {"policy": {"method": "grpo"}, "rewards": WITHOUT_MODEL})
    settings = load_settings(params)
    assert chosen_methods(settings, None) == [m for m in METHODS if METHODS[m].online]
    assert "dpo, best_of_n left out" in capsys.readouterr().err
    with pytest.raises(UserError, match="no online method to compare"):
        chosen_methods(settings, ["dpo"])


def test_a_methods_cache_key_covers_its_own_section_only(tmp_path):
    settings = load_settings(make_project(tmp_path / "p") / "params.yaml")
    policy = BY_NAME["policy"]

    def key(method: str, **sections) -> str:
        changed = settings.model_copy(
            update={
                name: settings.section(name, Config).model_copy(update=values)
                for name, values in sections.items()
            }
        )
        return cache_key(policy, method_settings(changed, method))

    ppo = key("ppo")
    assert key("ppo", dpo={"lr": 0.5}, group={"lr": 0.5}) == ppo
    assert key("ppo", ppo={"lr": 0.5}) != ppo
    assert key("dpo", ppo={"lr": 0.5}) == key("dpo") != key("dpo", dpo={"beta": 0.5})


def test_compare_trains_each_method_from_the_same_models_and_prints_one_scoreboard(
    tmp_path, capsys, monkeypatch, trained_upstream
):
    """rloo, dpo, a toy method declared by one table entry (tests/support/toy_method.py), and
    best-of-n, from the same upstream stages (trained once for the session)."""
    monkeypatch.setitem(METHODS, TOY.name, TOY)
    root = clone_project(trained_upstream, tmp_path / "p")
    params = str(root / "params.yaml")
    assert main(["--params", params, "compare", "--methods", "rloo,dpo,toy,best_of_n"]) == 0
    out = capsys.readouterr().out
    assert "| sft |" in out and "| rloo |" in out and "| dpo |" in out and "| best_of_4 |" in out
    assert "| toy |" in out
    folder = root / "artifacts/compare"
    board = pd.read_csv(folder / "scoreboard/compare.csv")
    assert board["method"].tolist() == ["sft", "rloo", "dpo", "toy", "best_of_4"]
    # the toy's policy is the SFT model: it samples what SFT samples at the same seeds
    assert board.loc[3, "kl"] == pytest.approx(0.0, abs=1e-4)
    assert board.loc[3, "gold_win_rate"] == pytest.approx(0.5)
    assert board["gold_win_rate"].iloc[1:].between(0, 1).all()
    assert (board["gold_win_lower"] <= board["gold_win_rate"]).iloc[1:].all()
    assert board.loc[4, "kl"] == pytest.approx(best_of_n_kl(4))
    assert board.loc[1, "generated_tokens"] > 0 and board.loc[2, "generated_tokens"] == 0
    assert (folder / "scoreboard/compare.png").stat().st_size > 0
    # the same SFT and reward model: each method's folder links to the shared stages
    for method in ("rloo", "dpo", "toy"):
        assert (folder / method / "sft").resolve() == (root / "artifacts/sft").resolve()
        record = pd.read_json(folder / method / "policy/stage.json", typ="series")
        version = MlflowClient().get_model_version(
            record["model"]["name"], record["model"]["version"]
        )
        assert version.tags["method"] == method
    sft_rows = pd.read_csv(folder / "dpo/evaluate/samples.csv").query("policy == 'sft'")
    rloo_sft = pd.read_csv(folder / "rloo/evaluate/samples.csv").query("policy == 'sft'")
    assert sft_rows["response"].tolist() == rloo_sft["response"].tolist()  # same seeds

    # a second compare reuses every method's outputs and gives the same table, though another
    # method's section changed
    runs = {m: read_json(folder / m / "policy/stage.json")["run_id"] for m in ("rloo", "toy")}
    write_params(root / "params.yaml", {"dpo": {"beta": 0.2}}, base=root / "params.yaml")
    assert main(["--params", params, "compare", "--methods", "rloo,toy,best_of_n"]) == 0
    again = pd.read_csv(folder / "scoreboard/compare.csv")
    pd.testing.assert_frame_equal(again, board.drop(index=2).reset_index(drop=True))
    assert runs == {m: read_json(folder / m / "policy/stage.json")["run_id"] for m in runs}
