"""Starting from a local Hugging Face checkpoint instead of pretraining."""

import pytest

from tasks.runner import run_stage
from tasks.settings import UserError, load_settings
from tests.conftest import write_params


def test_local_checkpoint_is_imported_as_the_base_model(tiny_project):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from models.tokenizer import train_tokenizer

    # A GPT-2-style checkpoint whose tokenizer has no PAD, as many published ones do.
    tok = train_tokenizer(["a small corpus of words"] * 20, vocab_size=300)
    tok.pad_token = None
    ckpt = tiny_project / "my-checkpoint"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tok),
                               bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
                    ).save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    params = tiny_project / "params.yaml"
    write_params(params, {"pretrain": {"init_checkpoint": "my-checkpoint"}}, base=params)

    record = run_stage("pretrain", load_settings(params))
    assert record["metrics"]["trained"] == 0
    assert record["model"]["uri"] == "models:/rlhf-base/1"
    model = AutoModelForCausalLM.from_pretrained(tiny_project / "artifacts/pretrain/model")
    assert model.config.model_type == "gpt2"
    assert model.config.pad_token_id not in (None, model.config.eos_token_id)


def test_checkpoint_folder_without_config_is_a_clear_error(tiny_project):
    (tiny_project / "empty").mkdir()
    params = tiny_project / "params.yaml"
    write_params(params, {"pretrain": {"init_checkpoint": "empty"}}, base=params)
    with pytest.raises(UserError, match=r"empty: not a Hugging Face checkpoint \(no config.json\)"):
        run_stage("pretrain", load_settings(params))
