"""Stage 3, sft: supervised fine-tuning on prompt/response demonstrations.

The loss covers response tokens (and the EOS that ends them) only: prompt tokens and
padding carry label -100. Rows too long to keep their response whole are dropped and
counted, never trained on with the end cut off. A held-out slice (heldout.parquet) measures
this model's response perplexity and, in the evaluation, every policy's.
"""

from __future__ import annotations

import math
import random

import pandas as pd

from tasks.runner import StageContext


def run(ctx: StageContext) -> dict:
    from models.batching import response_loss, sft_batch, sft_rows
    from models.lm import load_causal_lm, start_run
    from models.tokenizer import load_tokenizer
    from models.train import run_steps

    cfg, settings = ctx.settings.sft, ctx.settings
    device = start_run(settings.seed, settings.device)
    rng = random.Random(settings.seed)

    base_dir = str(ctx.input("pretrain", "model"))
    tok = load_tokenizer(base_dir)
    model = load_causal_lm(base_dir, tok).to(device)

    ctx.log_dataset("ingest", "sft.parquet")
    df = pd.read_parquet(ctx.input("ingest", "sft.parquet"), columns=["prompt", "response"])
    order = list(range(len(df)))
    rng.shuffle(order)  # seeded; the first 5% is held out, the rest trained on in this order
    df = df.iloc[order].reset_index(drop=True)
    n_eval = max(1, len(df) // 20)
    df.iloc[:n_eval].to_parquet(ctx.out / "heldout.parquet", index=False)
    train_rows, dropped = sft_rows(tok, df["prompt"][n_eval:].tolist(),
                                   df["response"][n_eval:].tolist(), cfg.max_length)
    eval_rows, dropped_eval = sft_rows(tok, df["prompt"][:n_eval].tolist(),
                                       df["response"][:n_eval].tolist(), cfg.max_length)

    def loss_fn(step: int):
        batch = rng.sample(train_rows, min(cfg.batch_size, len(train_rows)))
        ids, mask, labels = (t.to(device) for t in sft_batch(batch, tok.pad_token_id))
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss, int(mask.sum())

    final = run_steps(model, loss_fn, cfg.steps, cfg.lr, cfg.warmup_steps,
                      lambda step, m: ctx.log_metrics(m, step))
    eval_loss = response_loss(model, eval_rows, tok.pad_token_id, device)

    model.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    ctx.register(ctx.out / "model", "sft", parent=ctx.upstream_record("pretrain")["model"]["uri"])
    return {"examples": len(train_rows), "heldout_examples": len(eval_rows),
            "dropped_too_long": dropped + dropped_eval, "train_loss": final["train_loss"],
            "eval_loss": eval_loss, "eval_perplexity": math.exp(eval_loss),
            "tokens_per_s": final["tokens_per_s"]}
