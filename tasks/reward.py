"""Stage 5, reward: a scalar head on the SFT backbone, trained with the Bradley-Terry loss.

Each response is scored at its EOS (appended, right padding). The loss subtracts the
feedback's margin where one is given (reward.margin) and may add a centring term. Measured
on the test split of the pair table (prompts never seen in training): accuracy every eval
interval, and at the end its calibration, accuracy by bucket of score gap (calibration.csv).
Saved with the model: the score's mean and std on the SFT model's own samples, which PPO
normalises rewards by.
"""

from __future__ import annotations

import sys
from functools import partial

import pandas as pd
import torch

from rlhf.core.context import StageContext
from rlhf.core.io import write_json
from rlhf.core.settings import UserError
from rlhf.models.batching import pair_batch, reward_rows
from rlhf.models.lm import load_causal_lm, start_run
from rlhf.models.reward import (
    SCORE_STATS,
    bradley_terry_loss,
    build_reward_model,
    reference_score_stats,
    scores,
)
from rlhf.models.tokenizer import load_tokenizer
from rlhf.models.train import train

Pair = tuple[list[int], list[int], float]  # chosen ids, rejected ids, margin


def encode(tok, df: pd.DataFrame, max_length: int, use_margin: bool) -> tuple[list[Pair], int]:
    """(chosen, rejected, margin) per pair that fits max_length; and how many did not."""
    chosen = reward_rows(tok, df["prompt"].tolist(), df["chosen"].tolist(), max_length)
    rejected = reward_rows(tok, df["prompt"].tolist(), df["rejected"].tolist(), max_length)
    margins = df["margin"].fillna(0.0).tolist() if use_margin else [0.0] * len(df)
    kept = [
        (c, r, float(m))
        for c, r, m in zip(chosen, rejected, margins)
        if c is not None and r is not None
    ]
    return kept, len(df) - len(kept)


def pair_scores(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of the chosen and the rejected half of a models.batching.pair_batch."""
    s = scores(model, batch["input_ids"], batch["attention_mask"])
    return s[: len(s) // 2], s[len(s) // 2 :]


@torch.no_grad()
def gaps(model, pairs: list[Pair], pad_id: int, batch_size: int = 128) -> torch.Tensor:
    """[N] score(chosen) - score(rejected) of each pair."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(pairs), batch_size):
        batch = {k: v.to(device) for k, v in pair_batch(pairs[i : i + batch_size], pad_id).items()}
        c, r = pair_scores(model, batch)
        out.append((c - r).cpu())
    return torch.cat(out)


def accuracy(gap: torch.Tensor) -> float:
    """Share of pairs ranked as labelled (a tie counts half)."""
    return float(((gap > 0).float() + 0.5 * (gap == 0).float()).mean())


def calibration(gap: torch.Tensor, buckets: int) -> pd.DataFrame:
    """Per quantile bucket of |gap|: how often the RM agrees with the label, against the
    agreement its own Bradley-Terry probabilities predict (sigmoid |gap|)."""
    df = pd.DataFrame(
        {
            "gap": gap.abs().numpy(),
            "predicted": torch.sigmoid(gap.abs()).numpy(),
            "agrees": ((gap > 0).float() + 0.5 * (gap == 0).float()).numpy(),
        }
    )
    df["bucket"] = pd.qcut(df["gap"].rank(method="first"), min(buckets, len(df)), labels=False)
    table = df.groupby("bucket").agg(
        pairs=("gap", "size"),
        gap_min=("gap", "min"),
        gap_max=("gap", "max"),
        accuracy=("agrees", "mean"),
        predicted=("predicted", "mean"),
    )
    return table.reset_index()


def run(ctx: StageContext) -> dict:
    cfg, settings = ctx.settings.reward, ctx.settings
    device = start_run(settings.seed, settings.device)

    sft_dir = str(ctx.input("sft", "model"))
    tok = load_tokenizer(sft_dir)
    model = build_reward_model(sft_dir, tok).to(device)

    ctx.log_dataset("feedback", "pairs.parquet")
    df = pd.read_parquet(ctx.input("feedback", "pairs.parquet"))
    train_pairs, dropped_train = encode(tok, df[df["split"] == "train"], cfg.max_length, cfg.margin)
    test_pairs, dropped_test = encode(tok, df[df["split"] == "test"], cfg.max_length, cfg.margin)
    if not train_pairs or not test_pairs:
        raise UserError(
            f"{ctx.input('feedback', 'pairs.parquet')}: need train and test pairs "
            f"(have {len(train_pairs)} and {len(test_pairs)}); check feedback.test_fraction"
        )

    def loss(m, batch) -> torch.Tensor:
        c, r = pair_scores(m, batch)
        return bradley_terry_loss(c, r, batch["margin"], cfg.center_coef)

    held_out = {}  # the test pairs' score gaps at the latest evaluation (the last: the final model)

    def evaluate(m) -> dict:
        held_out["gap"] = gaps(m, test_pairs, tok.pad_token_id)
        return {"accuracy": accuracy(held_out["gap"])}

    final = train(
        "reward",
        model,
        train_pairs,
        partial(pair_batch, pad_id=tok.pad_token_id),
        cfg,
        seed=settings.seed,
        device=device,
        work=ctx.checkpoints,
        log=ctx.log_metrics,
        evaluate=evaluate,
        loss=loss,
        processing_class=tok,
    )
    if not ctx.tracking:
        return final  # a helper process: rank 0 alone evaluates, measures and saves
    table = calibration(held_out["gap"], cfg.calibration_buckets)
    table.to_csv(ctx.out / "calibration.csv", index=False)
    ctx.log_table(table, "reward_calibration.json")

    prompts = pd.read_parquet(ctx.input("ingest", "prompts_train.parquet"))["prompt"].tolist()
    stats = reference_score_stats(
        load_causal_lm(sft_dir, tok).to(device).eval(),
        model,
        tok,
        prompts[: cfg.reference_samples],
        max_new_tokens=cfg.reference_max_new_tokens,
        temperature=cfg.reference_temperature,
        device=device,
    )
    model.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    write_json(ctx.out / "model" / SCORE_STATS, stats)
    metrics = {
        "train_pairs": len(train_pairs),
        "test_pairs": len(test_pairs),
        "dropped_too_long": dropped_train + dropped_test,
        **final,
        "train_accuracy": accuracy(gaps(model, train_pairs[: len(test_pairs)], tok.pad_token_id)),
        "reference_score_mean": stats["mean"],
        "reference_score_std": stats["std"],
    }
    print(
        f"reward: {metrics['steps']} steps in {metrics['seconds']:.0f} s on {len(train_pairs)} "
        f"pairs, held-out accuracy {metrics['accuracy']:.3f} on {len(test_pairs)} pairs "
        f"(widest-gap bucket: {table['accuracy'].iloc[-1]:.3f}), reference score "
        f"{stats['mean']:+.3f} +- {stats['std']:.3f}",
        file=sys.stderr,
    )
    ctx.register(
        ctx.out / "model",
        "reward",
        task="text-classification",
        parent=ctx.upstream_record("sft")["model"]["uri"],
    )
    return metrics
