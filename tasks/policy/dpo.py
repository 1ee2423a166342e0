"""Method `dpo` of the policy stage: DPO (or IPO) on the feedback's preference pairs, offline,
with no reward model in the loop (rlhf.models.dpo).

  pairs      the feedback's train split, the reward model's own (the judge split stays unseen
             by every policy method, so the judge that picks and promotes is still independent);
             the test split measures held-out preference accuracy
  reference  the SFT model; its log-probabilities of every pair are computed once, then freed
  train      on the Trainer loop of the supervised stages, a snapshot of the weights at every
             evaluation (dpo.eval_every)
  publish    as every method: the judge's best snapshot within the KL budget, registered with
             its method (rlhf.core.policy.publish)
"""

from __future__ import annotations

import json
import sys
from functools import partial

import pandas as pd

from rlhf.core.feedback.pairs import read_pairs
from rlhf.core.pipeline.context import StageContext
from rlhf.core.policy.publish import publish, save_snapshot
from rlhf.core.settings import DPO, Method, UserError
from rlhf.models.dpo import (
    pair_rows_batch,
    preference_accuracy,
    preference_loss,
    preference_rows,
    with_reference,
)
from rlhf.models.lm import load_causal_lm, max_positions, start_run
from rlhf.models.lora import with_adapter
from rlhf.models.tokenizer import load_tokenizer
from rlhf.models.train import Job, Target, train

HISTORY = "history.jsonl"  # every logged step, kept with the checkpoints so a resume keeps it


def split_rows(tok, pairs: pd.DataFrame, split: str, max_length: int):
    rows = pairs[pairs["split"] == split]
    return preference_rows(
        tok,
        rows["prompt"].tolist(),
        rows["chosen"].tolist(),
        rows["rejected"].tolist(),
        max_length,
    )


def run(ctx: StageContext, method: Method) -> dict:
    cfg, settings = ctx.settings.method_config(DPO), ctx.settings
    device = start_run(settings.seed, settings.device)
    sft_dir = str(ctx.input("sft", "model"))
    tok = load_tokenizer(sft_dir)
    pad = tok.pad_token_id

    pairs_path = ctx.input("feedback", "pairs.parquet")
    pairs = read_pairs(pairs_path, columns=["prompt", "chosen", "rejected", "split"])
    budget = settings.token_budget(cfg.max_length, max_positions(sft_dir))
    train_rows, dropped_train = split_rows(tok, pairs, "train", budget)
    test_rows, dropped_test = split_rows(tok, pairs, "test", budget)
    if not train_rows or not test_rows:
        raise UserError(
            f"{pairs_path}: dpo needs train and test pairs that fit {budget} tokens "
            f"(dpo.max_length, context_length; have {len(train_rows)} and {len(test_rows)})"
        )
    # the reference is the SFT model as it starts: its log-probabilities first, then it trains
    model = load_causal_lm(sft_dir, tok).to(device)
    fit, held = with_reference(model, train_rows, pad), with_reference(model, test_rows, pad)
    if cfg.lora:
        model = with_adapter(model, settings.lora)
    snapshots, history = ctx.checkpoints / "snapshots", ctx.checkpoints / HISTORY

    def log(metrics: dict, step: int) -> None:
        ctx.log_metrics(metrics, step)
        if ctx.tracking:
            with history.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"iteration": step, **metrics}) + "\n")

    job = Job(
        method.name,
        model,
        fit,
        partial(pair_rows_batch, pad_id=pad),
        cfg,
        settings.seed,
        device,
        ctx.checkpoints,
        log,
        evaluate=lambda m: {"preference_accuracy": preference_accuracy(m, held, pad)},
        target=Target("preference_accuracy", lower_is_better=False),
        loss=preference_loss(cfg.beta, cfg.loss),
        snapshot=lambda m, step: save_snapshot(snapshots, step, m),
        tokenizer=tok,
        lengths=[max(len(c[0]), len(r[0])) for c, r, _, _ in fit],
    )
    final = train(job)
    metrics = {
        "max_length": budget,
        "train_pairs": len(fit),
        "test_pairs": len(held),
        "dropped_too_long": dropped_train + dropped_test,
        **final,
        "generated_tokens": 0,  # offline: the pairs are its only data
    }
    if not ctx.tracking:
        return metrics
    print(
        f"dpo: {metrics['steps']} steps in {metrics['seconds']:.0f} s on {len(fit)} pairs, "
        f"loss {metrics['train_loss']:.3f}, held-out preference accuracy "
        f"{metrics['preference_accuracy']:.3f} on {len(held)} pairs",
        file=sys.stderr,
    )
    # a resumed run logged some steps twice: the later record of a step is the one that holds
    logged = pd.read_json(history, lines=True).groupby("iteration").last()
    return metrics | publish(ctx, method, model, tok, snapshots, logged, cfg, device)
