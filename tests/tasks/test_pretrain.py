"""Pretraining: held-out perplexity against the unigram baseline, determinism, resuming after
SIGKILL, real text, and starting from a local Hugging Face checkpoint instead."""

import random
import sys

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from benchmarks.pretrain_text import read_corpus
from rlhf.core.io import digest_path, read_json
from rlhf.core.settings import UserError, load_settings
from rlhf.demo import task as demo
from rlhf.flows.runner import run_stage
from rlhf.models.config import PRESETS
from rlhf.models.errors import InputError
from rlhf.models.lm import build_causal_lm, count_parameters, start_run
from rlhf.models.tokenizer import train_tokenizer
from rlhf.tasks import BY_NAME
from rlhf.tasks.pretrain import train_base
from tests.support.processes import kill_at_checkpoint
from tests.support.project import ROOT, TINY, make_project, write_params

PRETRAIN = {**TINY["pretrain"], "steps": 60, "eval_every": 20, "checkpoint_every": 20}
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("pretrain") / "project", {"pretrain": PRETRAIN})
    run_stage(BY_NAME["ingest"], load_settings(root / "params.yaml"))
    return root


def test_perplexity_is_reported_each_interval_next_to_the_unigram_baseline(project):
    record = run_stage(BY_NAME["pretrain"], load_settings(project / "params.yaml"))
    m = record["metrics"]
    client = MlflowClient()

    def history(key):  # during training (step 0 holds the stage's final figures)
        return [p for p in client.get_metric_history(record["run_id"], key) if p.step]

    curve = history("eval_perplexity")
    assert [p.step for p in curve] == [20, 40, 60]
    assert curve[-1].value < curve[0].value
    assert m["eval_perplexity"] == curve[-1].value < m["unigram_perplexity"]  # learnt beyond counts
    assert [p.step for p in history("unigram_perplexity")] == [20, 40, 60]
    losses = history("train_loss")
    assert [p.step for p in losses] == [10, 20, 30, 40, 50, 60]
    assert m["steps"] == 60 and m["parameters"] > 0
    # the loss curve DVC plots, and the headline DVC's metrics show, beside the outs
    curve_file = pd.read_csv(project / "artifacts/pretrain/loss.csv")
    assert curve_file["step"].tolist() == [p.step for p in losses]
    assert curve_file["train_loss"].tolist() == pytest.approx([p.value for p in losses])
    summary = read_json(project / "artifacts/pretrain/summary.json")
    assert summary == {"pretrain": {k: m[k] for k in BY_NAME["pretrain"].headline}}
    assert not (project / "artifacts/.work/pretrain").exists()  # checkpoints dropped once saved

    # what it saved is a plain transformers checkpoint that generates
    folder = project / "artifacts/pretrain/model"
    tok, lm = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    assert lm.config.model_type == "llama"
    ids = tok(tok.bos_token + "The", return_tensors="pt", add_special_tokens=False)
    out = lm.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_two_runs_with_one_seed_end_with_the_same_loss(tmp_path):
    write_params(tmp_path / "params.yaml", {"pretrain": {**PRETRAIN, "steps": 15}})
    cfg = load_settings(tmp_path / "params.yaml").pretrain
    rng = random.Random(0)
    docs = [demo.corpus_document(rng) for _ in range(200)]
    runs = []
    for n in range(2):
        device = start_run(0, "cpu")
        model, _, metrics = train_base(
            docs, cfg, seed=0, device=device, work=tmp_path / str(n), log=lambda m, s: None
        )
        runs.append((metrics["train_loss"], metrics["eval_perplexity"], model.state_dict()))
    assert runs[0][:2] == runs[1][:2]
    assert all(torch.equal(v, runs[1][2][k]) for k, v in runs[0][2].items())


@pytest.mark.faults
def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_the_same(project):
    settings = load_settings(project / "params.yaml")
    model = project / "artifacts/pretrain/model"
    whole = run_stage(BY_NAME["pretrain"], settings)
    whole_digest, whole_curve = digest_path(model), (model.parent / "loss.csv").read_text()

    work = project / "artifacts/.work/pretrain"
    command = [sys.executable, "-m", "rlhf.flows.cli", "--params", str(project / "params.yaml")]
    kill_at_checkpoint(
        [*command, "stage", "pretrain"], project, work, "*/checkpoint-*/trainer_state.json"
    )

    resumed = run_stage(BY_NAME["pretrain"], settings)
    assert resumed["metrics"]["resumed_from"] in (20, 40)
    assert resumed["metrics"]["train_loss"] == whole["metrics"]["train_loss"]
    assert resumed["metrics"]["eval_perplexity"] == whole["metrics"]["eval_perplexity"]
    assert digest_path(model) == whole_digest  # bitwise the same weights
    assert (model.parent / "loss.csv").read_text() == whole_curve  # the steps before it too


@pytest.mark.skipif(
    not SHAKESPEARE.is_file(),
    reason=f"{SHAKESPEARE} absent (real data lives outside the project, in ../shared/data)",
)
def test_a_small_model_on_shakespeare_beats_the_unigram_baseline(tmp_path):
    docs = read_corpus(SHAKESPEARE)[:1000]  # a seventh of the plays keeps this quick
    base = load_settings(ROOT / "params.yaml").pretrain
    cfg = base.model_copy(
        update={
            "vocab_size": 512,
            "block_size": 64,
            "steps": 50,
            "batch_size": 16,
            "warmup_steps": 5,
            "eval_every": 50,
        }
    )
    _, tok, m = train_base(
        docs, cfg, seed=0, device=start_run(0, "cpu"), work=tmp_path, log=lambda m, s: None
    )
    assert m["heldout_documents"] == 50 and len(tok) == 512
    assert m["eval_perplexity"] < 0.75 * m["unigram_perplexity"]  # 110 vs 179 when written


def test_local_checkpoint_is_imported_as_the_base_model_and_fine_tuned(tiny_project):
    # A GPT-2-style checkpoint whose tokenizer has no PAD and no chat template, as many
    # published ones do, built and saved here with save_pretrained.
    tok = train_tokenizer(["a small corpus of words"] * 20, vocab_size=300)
    tok.pad_token, tok.chat_template = None, None
    ckpt = tiny_project / "my-checkpoint"
    GPT2LMHeadModel(
        GPT2Config(
            n_layer=1,
            n_embd=16,
            n_head=2,
            vocab_size=len(tok),
            bos_token_id=tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    ).save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    params = tiny_project / "params.yaml"
    write_params(params, {"pretrain": {"init_checkpoint": "my-checkpoint"}}, base=params)
    settings = load_settings(params)

    record = run_stage(BY_NAME["pretrain"], settings)
    assert record["metrics"]["trained"] == 0
    assert record["model"]["uri"] == "models:/rlhf-base/1"
    model = AutoModelForCausalLM.from_pretrained(tiny_project / "artifacts/pretrain/model")
    assert model.config.model_type == "gpt2"
    assert model.config.pad_token_id not in (None, model.config.eos_token_id)

    run_stage(BY_NAME["ingest"], settings)
    sft = run_stage(BY_NAME["sft"], settings)
    assert (
        sft["metrics"]["steps"] == TINY["sft"]["steps"]
        and sft["model"]["uri"] == "models:/rlhf-sft/1"
    )
    tuned = AutoModelForCausalLM.from_pretrained(tiny_project / "artifacts/sft/model")
    assert tuned.config.model_type == "gpt2"
    assert not torch.equal(tuned.transformer.wte.weight, model.transformer.wte.weight)


def test_checkpoint_folder_without_config_is_a_clear_error(tiny_project):
    (tiny_project / "empty").mkdir()
    params = tiny_project / "params.yaml"
    write_params(params, {"pretrain": {"init_checkpoint": "empty"}}, base=params)
    with pytest.raises(
        InputError, match=r"empty: not a Hugging Face checkpoint \(no config.json\)"
    ):
        run_stage(BY_NAME["pretrain"], load_settings(params))


def test_an_unknown_model_preset_is_named(tmp_path):
    params = tmp_path / "params.yaml"
    write_params(params, {"pretrain": {"model": "huge"}})
    with pytest.raises(
        UserError, match=r"pretrain: .*model 'huge' is not a preset \(tiny, small, base\)"
    ):
        load_settings(params)


def test_presets_have_the_sizes_they_claim():
    presets = PRESETS
    tok = train_tokenizer(["x"] * 10, vocab_size=300)
    with torch.device("meta"):  # shapes only
        sizes = {name: count_parameters(build_causal_lm(tok, a)) for name, a in presets.items()}
    assert sizes["tiny"] < 1e6 and 9e6 < sizes["small"] < 12e6 and 80e6 < sizes["base"] < 90e6
