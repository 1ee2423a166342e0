"""Supervised fine-tuning through the stage: real Alpaca data, chat records, packing, two
processes under torchrun, and a model that plain transformers loads and generates with."""

import json
import shutil
import subprocess

import pytest
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.core.settings import load_settings
from rlhf.flows.runner import run_stage
from rlhf.tasks import BY_NAME
from tests.support.processes import torchrun
from tests.support.project import ROOT, TINY, make_project

ALPACA = ROOT.parent / "shared" / "data" / "alpaca-eval-gpt35.json"
CHAT = [
    {
        "messages": [
            {"role": "system", "content": "You review products."},
            {"role": "user", "content": f"Review item {i}."},
            {"role": "assistant", "content": f"Item {i} is good."},
            {"role": "user", "content": "Why?"},
            {"role": "assistant", "content": f"It lasts {i} years."},
        ]
    }
    for i in range(60)
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The demo's prompt/response demos plus chat conversations, pretrained."""
    root = make_project(
        tmp_path_factory.mktemp("sft") / "project",
        {"sft": {"steps": 20, "batch_size": 8, "warmup_steps": 5, "eval_every": 10}},
    )
    (root / "data/sft/chat.jsonl").write_text("\n".join(json.dumps(r) for r in CHAT) + "\n")
    settings = load_settings(root / "params.yaml")
    for stage in ("ingest", "pretrain"):
        run_stage(BY_NAME[stage], settings)
    return root


def test_sft_trains_on_every_format_and_the_model_generates_with_plain_transformers(project):
    record = run_stage(BY_NAME["sft"], load_settings(project / "params.yaml"))
    m = record["metrics"]
    assert m["examples"] + m["heldout_examples"] + m["dropped_too_long"] == 200 + 2 * len(CHAT)
    assert m["steps"] == 20 and m["eval_perplexity"] > 1
    history = MlflowClient().get_metric_history(record["run_id"], "eval_loss")
    assert [p.step for p in history if p.step] == [10, 20]

    folder = project / "artifacts/sft/model"
    tok, lm = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Review the lamp."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = lm.generate(**prompt, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def test_packing_fills_rows_with_several_examples(tmp_path):
    # Rows of 512 tokens hold several of the demo's examples (the shared project's model has
    # 128 positions, about one example each at this vocabulary).
    micro = {**TINY["pretrain"]["presets"]["micro"], "max_positions": 512}
    root = make_project(
        tmp_path / "project",
        {
            "pretrain": {**TINY["pretrain"], "presets": {"micro": micro}},
            "sft": {**TINY["sft"], "packing": True, "max_length": 512},
        },
    )
    settings = load_settings(root / "params.yaml")
    for stage in ("ingest", "pretrain"):
        run_stage(BY_NAME[stage], settings)
    m = run_stage(BY_NAME["sft"], settings)["metrics"]
    assert m["max_length"] == 512 and m["dropped_too_long"] == 0
    assert m["rows"] < 0.5 * m["examples"]


@pytest.mark.skipif(
    not ALPACA.is_file(),
    reason=f"{ALPACA} absent (real data lives outside the project, in ../shared/data)",
)
def test_alpaca_instructions_with_and_without_input_are_fine_tuned_on(tmp_path):
    root = make_project(
        tmp_path / "project", {"sft": {"steps": 10, "batch_size": 8, "max_length": 128}}
    )
    shutil.rmtree(root / "data/sft")
    (root / "data/sft").mkdir()
    shutil.copy(ALPACA, root / "data/sft/alpaca.json")  # inside the test's temp project only
    settings = load_settings(root / "params.yaml")
    ingest = run_stage(BY_NAME["ingest"], settings)["metrics"]
    rows = json.loads(ALPACA.read_text())
    assert ingest["sft_records"] == len(rows) == 805
    assert ingest["sft_clean"] + ingest["sft_quarantined"] == 805
    run_stage(BY_NAME["pretrain"], settings)
    m = run_stage(BY_NAME["sft"], settings)["metrics"]
    # long answers cannot keep their EOS in 128 tokens: dropped and counted, never cut
    assert (
        m["dropped_too_long"] > 0
        and m["examples"] + m["heldout_examples"] + m["dropped_too_long"] == ingest["sft_clean"]
    )


@pytest.mark.e2e  # two torchrun processes
def test_two_processes_under_torchrun_train_and_register_once(project):
    out = subprocess.run(
        [
            *torchrun(2),
            "-m",
            "rlhf.flows.cli",
            "--params",
            str(project / "params.yaml"),
            "stage",
            "sft",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 1  # printed by rank 0 only
    assert records[0]["metrics"]["processes"] == 2 and records[0]["metrics"]["steps"] == 20
    assert records[0]["model"]["name"] == "rlhf-sft"
