"""LoRA through the pipeline: SFT, the reward model and the judge each train an adapter, and
every online method and DPO train one against the weights under it; every model a stage saves
is a plain checkpoint transformers loads, with the adapter beside it."""

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhf.core.settings import load_settings
from rlhf.flows.runner import run_stage
from rlhf.tasks import BY_NAME, STAGES
from tests.support.project import TINY, make_project, write_params


def plain(folder, kind) -> None:
    """folder holds a plain checkpoint of kind, and the adapter it was merged from."""
    model = kind.from_pretrained(folder)
    assert not any("lora" in k or "modules_to_save" in k for k in model.state_dict())
    assert (folder / "adapter" / "adapter_config.json").is_file()


@pytest.mark.e2e  # the adapter's unit tests are in the default suite (tests/models/test_lora.py)
def test_every_stage_trains_a_lora_adapter_and_saves_plain_weights(tmp_path):
    adapter = {"lora": True}
    root = make_project(
        tmp_path / "project",
        {
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
            "sft": {**TINY["sft"], **adapter},
            "reward": {**TINY["reward"], **adapter},
            "judge": {**TINY["judge"], **adapter},
            "ppo": {**TINY["ppo"], "reference": "lora"},
        },
    )
    settings = load_settings(root / "params.yaml")
    records = {s.name: run_stage(s, settings) for s in STAGES}
    art = root / "artifacts"
    plain(art / "sft/model", AutoModelForCausalLM)
    plain(art / "reward/model", AutoModelForSequenceClassification)
    plain(art / "judge/model/member-0", AutoModelForSequenceClassification)
    policy = AutoModelForCausalLM.from_pretrained(art / "policy/model")
    assert not any("lora" in k for k in policy.state_dict())
    assert records["reward"]["metrics"]["accuracy"] > 0
    assert records["evaluate"]["metrics"]["judge_win_rate_policy_vs_sft"] is not None

    for method, section, values in (
        ("grpo", "group", {**TINY["group"], "reference": "lora"}),
        ("dpo", "dpo", {**TINY["dpo"], **adapter}),
    ):
        params = root / f"params-{method}.yaml"
        write_params(
            params, {"policy": {"method": method}, section: values}, base=root / "params.yaml"
        )
        record = run_stage(BY_NAME["policy"], load_settings(params))
        assert record["metrics"]["selected_iteration"] >= 0
        trained = AutoModelForCausalLM.from_pretrained(art / "policy/model")
        assert not any("lora" in k for k in trained.state_dict())
