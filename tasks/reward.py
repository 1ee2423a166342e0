"""Stage 5, reward: a scalar head on the SFT backbone, trained with the Bradley-Terry loss.

Reports held-out pairwise accuracy on the test split of the pair table (prompts the model
never saw in training).
"""

from __future__ import annotations

import random

import pandas as pd
import torch

from tasks.runner import StageContext


def encode(tok, df: pd.DataFrame, max_length: int) -> tuple[list[tuple[list[int], list[int]]], int]:
    """(chosen ids, rejected ids) per pair that fits max_length; and how many did not."""
    from models.batching import reward_rows

    chosen = reward_rows(tok, df["prompt"].tolist(), df["chosen"].tolist(), max_length)
    rejected = reward_rows(tok, df["prompt"].tolist(), df["rejected"].tolist(), max_length)
    kept = [(c, r) for c, r in zip(chosen, rejected) if c is not None and r is not None]
    return kept, len(df) - len(kept)


def pair_scores(model, pairs, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of chosen and rejected, in one right-padded forward pass."""
    from models.batching import right_pad
    from models.reward import scores

    ids, mask = right_pad([c for c, _ in pairs] + [r for _, r in pairs], pad_id)
    s = scores(model, ids.to(device), mask.to(device))
    return s[: len(pairs)], s[len(pairs):]


@torch.no_grad()
def accuracy(model, pairs, pad_id: int, device, batch_size: int = 128) -> float:
    model.eval()
    wins = 0.0
    for i in range(0, len(pairs), batch_size):
        c, r = pair_scores(model, pairs[i : i + batch_size], pad_id, device)
        wins += float((c > r).sum() + 0.5 * (c == r).sum())
    return wins / max(1, len(pairs))


def run(ctx: StageContext) -> dict:
    from models.lm import start_run
    from models.reward import bradley_terry_loss, build_reward_model
    from models.tokenizer import load_tokenizer
    from models.train import run_steps

    cfg, settings = ctx.settings.reward, ctx.settings
    device = start_run(settings.seed, settings.device)
    rng = random.Random(settings.seed)

    sft_dir = str(ctx.input("sft", "model"))
    tok = load_tokenizer(sft_dir)
    model = build_reward_model(sft_dir, tok).to(device)

    ctx.log_dataset("feedback", "pairs.parquet")
    df = pd.read_parquet(ctx.input("feedback", "pairs.parquet"))
    train, dropped_train = encode(tok, df[df["split"] == "train"], cfg.max_length)
    test, dropped_test = encode(tok, df[df["split"] == "test"], cfg.max_length)
    if not train or not test:
        from tasks.settings import UserError

        raise UserError(f"{ctx.input('feedback', 'pairs.parquet')}: need train and test pairs "
                        f"(have {len(train)} and {len(test)}); check feedback.test_fraction")

    def loss_fn(step: int):
        batch = rng.sample(train, min(cfg.batch_size, len(train)))
        c, r = pair_scores(model, batch, tok.pad_token_id, device)
        return bradley_terry_loss(c, r), sum(len(a) + len(b) for a, b in batch)

    final = run_steps(model, loss_fn, cfg.steps, cfg.lr, cfg.warmup_steps,
                      lambda step, m: ctx.log_metrics(m, step))

    model.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    ctx.register(ctx.out / "model", "reward", task="text-classification",
                 parent=ctx.upstream_record("sft")["model"]["uri"])
    return {"train_pairs": len(train), "test_pairs": len(test),
            "dropped_too_long": dropped_train + dropped_test, "train_loss": final["train_loss"],
            "train_accuracy": accuracy(model, train[:len(test)], tok.pad_token_id, device),
            "accuracy": accuracy(model, test, tok.pad_token_id, device)}
