"""Training a reward model on preference pairs: encoding, the Bradley-Terry fit, held-out
accuracy. The reward stage trains one; the judge stage its evaluation reward models."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from rlhf.models.batching import Pair, pair_batch, pair_width, reward_pairs
from rlhf.models.config import Training
from rlhf.models.reward import bradley_terry_loss, token_scores
from rlhf.models.train import Job, Log, Target, train


def encode(tok, df: pd.DataFrame, max_length: int, use_margin: bool) -> tuple[list[Pair], int]:
    """(prompt, chosen, rejected, margin) per pair that fits max_length, a tie's margin NaN;
    and how many did not fit."""
    margins = df["margin"].fillna(0.0) if use_margin else pd.Series(0.0, index=df.index)
    margins = margins.where(~df["tie"], math.nan).tolist()
    pairs = reward_pairs(
        tok,
        df["prompt"].tolist(),
        df["chosen"].tolist(),
        df["rejected"].tolist(),
        [float(m) for m in margins],
        max_length,
    )
    kept = [p for p in pairs if p is not None]
    return kept, len(df) - len(kept)


def encode_splits(
    tok, pairs: pd.DataFrame, split: str, max_length: int, use_margin: bool
) -> tuple[list[Pair], list[Pair], int]:
    """The pairs of `split` to train on (with the ties pairs holds) and of `test` to measure on
    (never a tie: it ranks neither), each that fits max_length; and how many did not fit."""
    fit_pairs, dropped_fit = encode(tok, pairs[pairs["split"] == split], max_length, use_margin)
    test = pairs[(pairs["split"] == "test") & ~pairs["tie"]]
    test_pairs, dropped_test = encode(tok, test, max_length, use_margin)
    return fit_pairs, test_pairs, dropped_fit + dropped_test


def pair_scores(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the chosen and the rejected responses of a models.batching.pair_batch."""
    s = token_scores(model, batch["input_ids"], batch["pair_mask"], batch["position_ids"])
    at = s.gather(1, batch["ends"])  # [B, 2]
    return at[:, 0], at[:, 1]


@torch.no_grad()
def gaps(model, pairs: list[Pair], pad_id: int, batch_size: int = 128) -> torch.Tensor:
    """[N] score(chosen) - score(rejected) of each pair."""
    model.eval()
    device = next(model.parameters()).device
    # scored by width, so each batch pads little; returned in the pairs' order
    order = sorted(range(len(pairs)), key=lambda i: pair_width(pairs[i]))
    out = torch.empty(len(pairs))
    for i in range(0, len(pairs), batch_size):
        rows = order[i : i + batch_size]
        batch = pair_batch([pairs[j] for j in rows], pad_id)
        c, r = pair_scores(model, {k: v.to(device) for k, v in batch.items()})
        out[rows] = (c - r).cpu()
    return out


def accuracy(gap: torch.Tensor) -> float:
    """Share of pairs ranked as labelled (a tie counts half)."""
    return float(((gap > 0).float() + 0.5 * (gap == 0).float()).mean())


def fit(
    name: str,
    model,
    tok,
    train_pairs: list[Pair],
    test_pairs: list[Pair],
    cfg: Training,
    *,
    center_coef: float,
    seed: int,
    device: torch.device,
    work: Path,
    log: Log,
) -> tuple[dict, torch.Tensor]:
    """Train a reward model with the Bradley-Terry loss (the judge stage's members too): the
    final figures, and the test pairs' score gaps of the final model."""

    def loss(m, batch) -> torch.Tensor:
        c, r = pair_scores(m, batch)
        return bradley_terry_loss(c, r, batch["margin"], center_coef)

    held_out = {}  # the test pairs' score gaps at the latest evaluation (the last: the final model)

    def evaluate(m) -> dict:
        held_out["gap"] = gaps(m, test_pairs, tok.pad_token_id)
        return {"accuracy": accuracy(held_out["gap"])}

    job = Job(
        name,
        model,
        train_pairs,
        partial(pair_batch, pad_id=tok.pad_token_id),
        cfg,
        seed,
        device,
        work,
        log,
        evaluate=evaluate,
        target=Target("accuracy", lower_is_better=False),
        loss=loss,
        tokenizer=tok,
        lengths=[pair_width(p) for p in train_pairs],
    )
    final = train(job)
    if "best_step" in final:  # early stopping brought back an earlier evaluation's weights
        held_out["gap"] = gaps(model, test_pairs, tok.pad_token_id)
    return final, held_out.get("gap", torch.empty(0))
