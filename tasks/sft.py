"""Stage 3, sft: supervised fine-tuning on prompt/response demonstrations.

The loss covers response tokens (and the EOS that ends them) only: prompt tokens and
padding carry label -100. Rows too long to keep their response whole are dropped and
counted, never trained on with the end cut off.
"""

from __future__ import annotations

import math
import random

import pandas as pd
import torch

from tasks.runner import StageContext


@torch.no_grad()
def response_loss(model, rows, pad_id: int, device, batch_size: int = 64) -> float:
    """Mean per-token loss on the responses of held-out rows."""
    from models.batching import sft_batch

    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        ids, mask, labels = (t.to(device) for t in sft_batch(rows[i : i + batch_size], pad_id))
        n = int((labels[:, 1:] != -100).sum())
        total += model(input_ids=ids, attention_mask=mask, labels=labels).loss.item() * n
        count += n
    return total / max(1, count)


def run(ctx: StageContext) -> dict:
    from models.batching import sft_batch, sft_rows
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
    df = pd.read_parquet(ctx.input("ingest", "sft.parquet"))
    rows, dropped = sft_rows(tok, df["prompt"].tolist(), df["response"].tolist(), cfg.max_length)
    rng.shuffle(rows)
    n_eval = max(1, len(rows) // 20)
    train_rows, eval_rows = rows[n_eval:], rows[:n_eval]

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
    return {"examples": len(rows), "dropped_too_long": dropped, "train_loss": final["train_loss"],
            "eval_loss": eval_loss, "eval_perplexity": math.exp(eval_loss),
            "tokens_per_s": final["tokens_per_s"]}
