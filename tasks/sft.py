"""Stage 3, sft: supervised fine-tuning on demonstrations (prompt/response, Alpaca or chat;
ingest has turned each into prompt, response and the conversation before it).

The model starts from the pretrain stage's output: the base trained here, or the local
checkpoint named by pretrain.init_checkpoint. The loss covers response tokens and the EOS
that ends them only: prompt tokens, earlier turns and padding carry label -100. A row too
long for max_length loses the start of its prompt; one whose response with EOS alone does
not fit is dropped; both are counted. A held-out slice (heldout.parquet) measures this
model's response perplexity and, in the evaluation, every policy's.
"""

from __future__ import annotations

import math
import sys
from functools import partial

import pandas as pd

from rlhf.core.pipeline.context import StageContext
from rlhf.core.settings import UserError
from rlhf.models.batching import examples_rows, pack_rows, response_loss, sft_batch
from rlhf.models.lm import load_causal_lm, max_positions, start_run
from rlhf.models.lora import save_model, with_adapter
from rlhf.models.tokenizer import load_tokenizer
from rlhf.models.train import Job, Target, train


def heldout_split(
    df: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, held-out) examples: a seeded shuffle cut at `fraction`."""
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n = max(1, int(len(df) * fraction))
    return df.iloc[n:], df.iloc[:n]


def run(ctx: StageContext) -> dict:
    cfg, settings = ctx.settings.sft, ctx.settings
    device = start_run(settings.seed, settings.device)

    base_dir = str(ctx.input("pretrain", "model"))
    tok = load_tokenizer(base_dir)
    model = load_causal_lm(base_dir, tok).to(device)
    if cfg.lora:
        model = with_adapter(model, settings.lora)

    df = pd.read_parquet(
        ctx.input("ingest", "sft.parquet"), columns=["prompt", "response", "context"]
    )
    train_df, eval_df = heldout_split(df, cfg.heldout_fraction, settings.seed)
    eval_df.to_parquet(ctx.out / "heldout.parquet", index=False)
    budget = settings.token_budget(cfg.max_length, max_positions(model))
    fit, held = examples_rows(tok, train_df, budget), examples_rows(tok, eval_df, budget)
    if not fit.rows or not held.rows:
        raise UserError(
            f"{ctx.input('ingest', 'sft.parquet')}: {len(fit.rows)} training and "
            f"{len(held.rows)} held-out examples fit {budget} tokens (of {len(df)}): need both; "
            "a larger context_length or sft.max_length, or more examples"
        )
    rows = pack_rows(fit.rows, budget) if cfg.packing else fit.rows

    def evaluate(m) -> dict:
        loss = response_loss(m, held.rows, tok.pad_token_id, next(m.parameters()).device)
        return {"eval_loss": loss, "eval_perplexity": math.exp(loss)}

    job = Job(
        "sft",
        model,
        rows,
        partial(sft_batch, pad_id=tok.pad_token_id),
        cfg,
        settings.seed,
        device,
        ctx.checkpoints,
        ctx.log_metrics,
        evaluate=evaluate,
        target=Target("eval_loss", lower_is_better=True),
        tokenizer=tok,
        lengths=[len(ids) for ids, _ in rows],
    )
    final = train(job)
    metrics = {
        "max_length": budget,
        "examples": len(fit.rows),
        "rows": len(rows),
        "heldout_examples": len(held.rows),
        "dropped_too_long": fit.dropped + held.dropped,
        "prompt_truncated": fit.truncated + held.truncated,
        **final,
    }
    if ctx.tracking:
        print(
            f"sft: {metrics['steps']} steps in {metrics['seconds']:.0f} s on {len(fit.rows)} "
            f"examples ({metrics['dropped_too_long']} dropped, {metrics['prompt_truncated']} "
            f"with the prompt cut), loss {metrics['train_loss']:.3f}, held-out response "
            f"perplexity {metrics['eval_perplexity']:.2f}",
            file=sys.stderr,
        )
    save_model(model, tok, ctx.out / "model")
    ctx.register(ctx.out / "model")
    return metrics
