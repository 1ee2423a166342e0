"""Stage 6, judge: evaluation reward models, which choose PPO's snapshot and decide promotion.

The reward model PPO optimises is the one judge a policy learns to please, so it must not be
the one that decides. These members are trained like it (rlhf.models.reward_train.fit) but only on
the feedback's judge split: prompts, fixed by hash, whose pairs the reward model never sees.
Each member starts from its own seed and trains on its own bootstrap resample of those pairs,
so where they disagree the data does not settle the question; judge.backbones lets members
start from the pretrained base instead of SFT, so they differ in more than seed and data.
Measured on the test split, which neither the reward model nor the members train on.
  model/member-<i>/   a sequence-classification checkpoint each, registered as <prefix>-judge
"""

from __future__ import annotations

import random
import sys

from rlhf.core.evaluation.judges import MEMBER
from rlhf.core.feedback.pairs import read_pairs
from rlhf.core.pipeline.context import StageContext
from rlhf.core.settings import UserError
from rlhf.models.lm import max_positions, start_run
from rlhf.models.lora import save_model, with_adapter
from rlhf.models.reward import build_reward_model
from rlhf.models.reward_train import accuracy, encode_splits, fit
from rlhf.models.tokenizer import load_tokenizer
from rlhf.models.train import Log

SEED_STRIDE = 7919  # member i trains from seed + SEED_STRIDE * (i + 1)


def resample(pairs: list, seed: int) -> list:
    """A bootstrap resample: as many pairs, drawn with replacement."""
    rng = random.Random(seed)
    return [pairs[rng.randrange(len(pairs))] for _ in pairs]


def member_log(ctx: StageContext, member: int) -> Log:
    """A member's training metrics in the stage's run, prefixed so members do not mix."""

    def log(metrics: dict, step: int) -> None:
        ctx.log_metrics({f"member_{member}_{k}": v for k, v in metrics.items()}, step)

    return log


def run(ctx: StageContext) -> dict:
    cfg, settings = ctx.settings.judge, ctx.settings
    start_run(settings.seed, settings.device)
    sft_dir = str(ctx.input("sft", "model"))
    tok = load_tokenizer(sft_dir)
    backbones = {
        b: sft_dir if b == "sft" else str(ctx.input("pretrain", "model")) for b in cfg.backbones
    }

    df = read_pairs(ctx.input("feedback", "pairs.parquet"), ties=cfg.ties == "draw")
    budget = settings.token_budget(cfg.max_length, max_positions(sft_dir))
    judge_pairs, test_pairs, dropped = encode_splits(tok, df, "judge", budget, cfg.margin)
    if not judge_pairs or not test_pairs:
        raise UserError(
            f"{ctx.input('feedback', 'pairs.parquet')}: need judge and test pairs (have "
            f"{len(judge_pairs)} and {len(test_pairs)}); check feedback.judge_fraction"
        )
    metrics: dict = {
        "max_length": budget,
        "judge_pairs": len(judge_pairs),
        "test_pairs": len(test_pairs),
        "dropped_too_long": dropped,
    }
    for i in range(cfg.members):
        seed = settings.seed + SEED_STRIDE * (i + 1)
        device = start_run(seed, settings.device)  # the member's own head initialisation
        backbone = cfg.backbones[i % len(cfg.backbones)]
        model = build_reward_model(backbones[backbone], tok).to(device)
        if cfg.lora:
            model = with_adapter(model, settings.lora, classifier=True)
        final, gap = fit(
            f"judge {i}",
            model,
            tok,
            resample(judge_pairs, seed) if cfg.members > 1 else judge_pairs,
            test_pairs,
            cfg,
            center_coef=0.0,
            seed=seed,
            device=device,
            work=ctx.checkpoints / MEMBER.format(i),
            log=member_log(ctx, i),
        )
        if not ctx.tracking:
            continue  # a helper process: rank 0 alone saves and registers
        folder = ctx.out / "model" / MEMBER.format(i)
        save_model(model, tok, folder)
        metrics[f"accuracy_member_{i}"] = accuracy(gap)
        metrics[f"seconds_member_{i}"] = final["seconds"]
        metrics["tokens_seen"] = metrics.get("tokens_seen", 0) + final["tokens_seen"]
        ctx.register(folder, member=str(i), backbone=backbone)
    if not ctx.tracking:
        return metrics
    accuracies = [metrics[f"accuracy_member_{i}"] for i in range(cfg.members)]
    metrics["accuracy"] = sum(accuracies) / len(accuracies)
    print(
        f"judge: {cfg.members} member(s) on {len(judge_pairs)} judge pairs, held-out accuracy "
        + ", ".join(f"{a:.3f}" for a in accuracies)
        + f" on {len(test_pairs)} test pairs ({dropped} too long for {budget} tokens dropped)",
        file=sys.stderr,
    )
    return metrics
