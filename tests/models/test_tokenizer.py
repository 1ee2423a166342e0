"""The tokenizer the pretrain stage trains: special tokens, chat template, round trip."""

import pytest
from jinja2 import TemplateError
from transformers import AutoTokenizer

from rlhf.models.tokenizer import (
    BOS,
    EOS,
    PAD,
    ROLE_TOKENS,
    format_prompt,
    format_response,
    train_tokenizer,
)

TEXTS = ["the quick brown fox jumps over the lazy dog", "a small corpus of plain words"] * 30


def test_bos_eos_and_pad_are_distinct_special_tokens():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    ids = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    assert len(ids) == 3 and (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, PAD)
    ids = tok(f"{BOS}fox{EOS}", add_special_tokens=False)["input_ids"]
    assert ids == [tok.bos_token_id, *tok("fox")["input_ids"], tok.eos_token_id]  # one id each


def test_round_trip_through_save_and_from_pretrained_keeps_ids_and_chat_template(tmp_path):
    tok = train_tokenizer(TEXTS, vocab_size=300, chat_tokens=True)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = format_prompt(tok, "the lazy fox") + format_response("jumps") + EOS
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert again.chat_template == tok.chat_template
    assert len(again) == len(tok) and again.decode(again(text)["input_ids"]) == text
    for role in ROLE_TOKENS.values():  # one id each
        assert len(again(role, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.parametrize(
    "chat_tokens, user, assistant",
    [(False, "Human:", "Assistant:"), (True, "<|user|>", "<|assistant|>")],
)
def test_the_chat_template_renders_what_the_stages_train_on(chat_tokens, user, assistant):
    tok = train_tokenizer(TEXTS, vocab_size=300, chat_tokens=chat_tokens)
    system = {"role": "system", "content": "be brief"}
    turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert format_prompt(tok, "a fox?") == f"{BOS}{user} a fox?\n{assistant}"
    assert format_prompt(tok, "and a dog?", [system, *turn]) == (
        f"{BOS}System: be brief\n{user} hi\n{assistant} hello{EOS}\n{user} and a dog?\n{assistant}"
        if not chat_tokens
        else f"{BOS}<|system|> be brief\n{user} hi\n{assistant} hello{EOS}\n{user} and a dog?\n{assistant}"  # noqa: E501
    )
    # a whole conversation rendered by transformers == prompt + response + EOS
    whole = tok.apply_chat_template(turn, tokenize=False)
    assert whole == format_prompt(tok, "hi") + format_response("hello") + EOS


def test_an_unknown_role_is_refused():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    with pytest.raises(TemplateError, match="unknown role narrator"):
        format_prompt(tok, "x", [{"role": "narrator", "content": "once"}])
