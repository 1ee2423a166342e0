"""SFT rows: loss on the response only, truncation that never cuts a reply, packing; reward
pairs scored in one row as if each response were alone."""

import pytest
import torch

from rlhf.models.batching import (
    IGNORE,
    pack_blocks,
    pack_rows,
    pair_batch,
    reward_pairs,
    sft_batch,
    sft_rows,
)
from rlhf.models.reward_train import pair_scores
from rlhf.models.tokenizer import format_prompt, format_response
from tests.models.conftest import tiny_reward_model


def test_prompt_tokens_get_label_minus_100_and_the_response_with_eos_is_learnt(tok, lm):
    fit = sft_rows(tok, ["a short prompt"], ["the reply"], max_length=64)
    ((ids, labels),) = fit.rows
    prompt = tok(format_prompt(tok, "a short prompt"), add_special_tokens=False)["input_ids"]
    reply = tok(format_response("the reply"), add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    assert ids == prompt + reply
    assert labels == [IGNORE] * len(prompt) + reply
    batch = sft_batch(
        fit.rows + sft_rows(tok, ["p"], ["a much longer reply than the other"], 64).rows,
        tok.pad_token_id,
    )
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()  # padding
    # the model's loss is the mean over the response tokens (and EOS) alone
    logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted = batch["labels"][:, 1:]
    manual = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), shifted.flatten(), ignore_index=IGNORE
    )
    assert torch.allclose(lm(**batch).loss, manual)
    second = batch["labels"][1]
    assert int((shifted != IGNORE).sum()) == len(reply) + int((second != IGNORE).sum())


def test_too_long_rows_lose_the_start_of_the_prompt_never_the_reply_and_are_counted(tok):
    reply = tok(format_response("short reply"), add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    budget = len(tok(format_prompt(tok, "ok"), add_special_tokens=False)["input_ids"]) + len(reply)
    fit = sft_rows(
        tok,
        ["many words " * 40, "ok", "ok"],
        ["short reply", "short reply", "word " * 80],
        max_length=budget,
    )
    assert fit.truncated == 1 and fit.dropped == 1 and len(fit.rows) == 2
    ids, labels = fit.rows[0]
    assert len(ids) == budget and ids[-len(reply) :] == reply and ids[-1] == tok.eos_token_id
    assert labels[-len(reply) :] == reply and set(labels[: budget - len(reply)]) == {IGNORE}


def test_packing_joins_whole_rows_and_keeps_their_labels():
    rows = [
        ([1, 2, 3], [IGNORE, 2, 3]),
        ([4, 5], [IGNORE, 5]),
        ([6, 7, 8, 9], [IGNORE, IGNORE, 8, 9]),
    ]
    assert pack_rows(rows, max_length=5) == [
        ([1, 2, 3, 4, 5], [IGNORE, 2, 3, IGNORE, 5]),
        ([6, 7, 8, 9], [IGNORE, IGNORE, 8, 9]),
    ]


def test_pretraining_blocks_put_bos_and_eos_around_every_document():
    blocks = pack_blocks([[5, 6], [7]], bos_id=2, eos_id=0, block_size=3)
    assert blocks.tolist() == [[2, 5, 6], [0, 2, 7]]  # the last EOS does not fill a block


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_pair_row_scores_each_response_as_if_alone_after_its_prompt(tok, lm, attention):
    """One row per pair (prompt computed once) gives the scores of prompt + response rows
    scored one by one, whatever the widths, truncation and padding."""
    rm = tiny_reward_model(lm)
    rm.config._attn_implementation = attention
    prompts = ["Write a positive review of the kettle.", "Say hi.", "x " * 60]
    chosen = ["It works well and the box was fine.", "Hi!", "ok"]
    rejected = ["Bad.", "Hello there, how are you doing today?", "no no no"]
    pairs = reward_pairs(tok, prompts, chosen, rejected, [0.0, 1.0, 0.5], max_length=48)
    assert all(p is not None for p in pairs) and len(pairs[2][0]) < len(tok(prompts[2]).input_ids)
    with torch.no_grad():
        c, r = pair_scores(rm, pair_batch(pairs, tok.pad_token_id))

    for i, (q, a, b, _) in enumerate(pairs):
        for response, score in ((a, c[i]), (b, r[i])):
            with torch.no_grad():
                alone = rm(input_ids=torch.tensor([q + response])).logits.squeeze()
            assert abs(float(alone) - float(score)) < 1e-5


def test_a_pair_whose_longer_response_does_not_fit_is_none(tok):
    pairs = reward_pairs(tok, ["Hi."], ["a " * 40], ["b"], [0.0], max_length=16)
    assert pairs == [None]
