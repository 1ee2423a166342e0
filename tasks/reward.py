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

import pandas as pd
import torch

from rlhf.core.feedback.pairs import read_pairs
from rlhf.core.io import write_json
from rlhf.core.pipeline.context import StageContext
from rlhf.core.settings import UserError
from rlhf.models.lm import load_causal_lm, max_positions, start_run
from rlhf.models.lora import save_model, with_adapter
from rlhf.models.reward import SCORE_STATS, build_reward_model, reference_score_stats
from rlhf.models.reward_train import accuracy, encode_splits, fit, gaps
from rlhf.models.tokenizer import load_tokenizer


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
    if cfg.lora:
        model = with_adapter(model, settings.lora, classifier=True)

    df = read_pairs(ctx.input("feedback", "pairs.parquet"), ties=cfg.ties == "draw")
    budget = settings.token_budget(cfg.max_length, max_positions(model))
    train_pairs, test_pairs, dropped = encode_splits(tok, df, "train", budget, cfg.margin)
    if not train_pairs or not test_pairs:
        raise UserError(
            f"{ctx.input('feedback', 'pairs.parquet')}: need train and test pairs "
            f"(have {len(train_pairs)} and {len(test_pairs)}); check feedback.test_fraction"
        )

    final, gap = fit(
        "reward",
        model,
        tok,
        train_pairs,
        test_pairs,
        cfg,
        center_coef=cfg.center_coef,
        seed=settings.seed,
        device=device,
        work=ctx.checkpoints,
        log=ctx.log_metrics,
    )
    if not ctx.tracking:
        return final  # a helper process: rank 0 alone evaluates, measures and saves
    table = calibration(gap, cfg.calibration_buckets)
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
    save_model(model, tok, ctx.out / "model")
    write_json(ctx.out / "model" / SCORE_STATS, stats)
    metrics = {
        "max_length": budget,
        "train_pairs": len(train_pairs),
        "test_pairs": len(test_pairs),
        "dropped_too_long": dropped,
        **final,
        "train_accuracy": accuracy(gaps(model, train_pairs[: len(test_pairs)], tok.pad_token_id)),
        "reference_score_mean": stats["mean"],
        "reference_score_std": stats["std"],
    }
    print(
        f"reward: {metrics['steps']} steps in {metrics['seconds']:.0f} s on {len(train_pairs)} "
        f"pairs ({dropped} too long for {budget} tokens dropped), held-out accuracy "
        f"{metrics['accuracy']:.3f} on {len(test_pairs)} pairs (widest-gap bucket: "
        f"{table['accuracy'].iloc[-1]:.3f}), reference score {stats['mean']:+.3f} +- "
        f"{stats['std']:.3f}",
        file=sys.stderr,
    )
    ctx.register(ctx.out / "model")
    return metrics
