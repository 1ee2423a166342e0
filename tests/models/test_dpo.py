"""DPO on the Trainer loop with a tiny real model: it starts from the reference (loss log 2,
no pair ranked), and learns to rank pairs about items it never trained on."""

import copy
import math
from functools import partial

import pytest

from rlhf.demo.task import ITEMS
from rlhf.models.config import DPO
from rlhf.models.dpo import (
    pair_rows_batch,
    preference_accuracy,
    preference_loss,
    preference_rows,
    with_reference,
)
from rlhf.models.train import Job, train


def no_log(metrics: dict, step: int) -> None:
    """Training figures go nowhere in these tests."""


def pairs(tok, ref, items):
    rows, dropped = preference_rows(
        tok,
        [f"Write a positive review of the {i}." for i in items],
        [f"The {i} is great, really great." for i in items],
        [f"The {i} is awful." for i in items],
        max_length=64,
    )
    assert dropped == 0
    return with_reference(ref, rows, tok.pad_token_id)


def test_a_pair_that_does_not_fit_is_dropped_whole(tok):
    rows, dropped = preference_rows(
        tok, ["Review it."] * 2, ["Fine.", "Fine."], ["x " * 80, "No."], 32
    )
    assert dropped == 1 and len(rows) == 1


@pytest.mark.integration  # trains for 40 Trainer steps
@pytest.mark.parametrize("kind", ["dpo", "ipo"])
def test_dpo_learns_to_rank_pairs_it_never_saw(tok, lm, tmp_path, kind):
    train_pairs, held_out = pairs(tok, lm, ITEMS[:8]), pairs(tok, lm, ITEMS[8:12])
    policy = copy.deepcopy(lm)
    cfg = DPO(loss=kind, beta=0.5, steps=40, batch_size=8, lr=3e-3, warmup_steps=0)
    loss = preference_loss(cfg.beta, cfg.loss)
    first = loss(policy, pair_rows_batch(train_pairs, tok.pad_token_id)).item()
    assert first == pytest.approx(math.log(2) if kind == "dpo" else (1 / (2 * cfg.beta)) ** 2)
    assert preference_accuracy(policy, held_out, tok.pad_token_id) == 0.0  # h = 0 everywhere

    rows = train_pairs * 4
    batch = partial(pair_rows_batch, pad_id=tok.pad_token_id)
    train(Job("dpo", policy, rows, batch, cfg, 0, lm.device, tmp_path, no_log, loss=loss))
    assert preference_accuracy(policy, train_pairs, tok.pad_token_id) == 1.0
    assert preference_accuracy(policy, held_out, tok.pad_token_id) >= 0.75
