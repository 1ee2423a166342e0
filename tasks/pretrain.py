"""Stage 2, pretrain: a byte-level BPE tokenizer and a small Llama-style LM from scratch.

When params.yaml names a local checkpoint (pretrain.init_checkpoint) this stage trains
nothing: it copies that checkpoint in as the base model, so the rest of the pipeline is the
same either way.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pandas as pd
import torch

from tasks.runner import StageContext


def unigram_perplexity(train: list[list[int]], held_out: list[list[int]], vocab: int) -> float:
    """Perplexity of held-out tokens under the training unigram distribution (add-one): the
    baseline a language model has to beat to have learnt anything beyond token frequencies."""
    counts = Counter(t for doc in train for t in doc)
    total = sum(counts.values()) + vocab
    tokens = [t for doc in held_out for t in doc]
    nll = -sum(math.log((counts[t] + 1) / total) for t in tokens) / len(tokens)
    return math.exp(nll)


@torch.no_grad()
def block_perplexity(model, blocks: torch.Tensor, device, batch_size: int = 64) -> float:
    model.eval()
    losses = [model(input_ids=b.to(device), labels=b.to(device)).loss.item() * len(b)
              for b in blocks.split(batch_size)]
    return math.exp(sum(losses) / len(blocks))


def import_checkpoint(ctx: StageContext, path: str) -> dict:
    """Start from a local HF checkpoint: normalise it (PAD added if missing) into out/model."""
    from models.lm import count_parameters, load_causal_lm
    from models.tokenizer import load_tokenizer

    tok = load_tokenizer(path)
    model = load_causal_lm(path, tok)
    model.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    ctx.register(ctx.out / "model", "base", parent=f"file://{path}")
    return {"parameters": count_parameters(model), "trained": 0}


def run(ctx: StageContext) -> dict:
    from models.batching import pack_blocks
    from models.lm import build_causal_lm, count_parameters, start_run
    from models.train import run_steps
    from models.tokenizer import train_tokenizer

    cfg, settings = ctx.settings.pretrain, ctx.settings
    if cfg.init_checkpoint:
        return import_checkpoint(ctx, str(settings.path(cfg.init_checkpoint)))

    # ---- seeding: every random draw below comes from these
    device = start_run(settings.seed, settings.device)
    rng = random.Random(settings.seed)

    ctx.log_dataset("ingest", "corpus.parquet")
    docs = pd.read_parquet(ctx.input("ingest", "corpus.parquet"))["text"].tolist()
    rng.shuffle(docs)
    n_eval = max(1, int(len(docs) * cfg.eval_fraction))
    train_docs, eval_docs = docs[n_eval:], docs[:n_eval]

    tok = train_tokenizer(train_docs, cfg.vocab_size)
    train_ids = tok(train_docs, add_special_tokens=False)["input_ids"]
    eval_ids = tok(eval_docs, add_special_tokens=False)["input_ids"]
    train_blocks = pack_blocks(train_ids, tok.eos_token_id, cfg.block_size)
    eval_blocks = pack_blocks(eval_ids, tok.eos_token_id, cfg.block_size)

    model = build_causal_lm(tok, cfg.hidden_size, cfg.num_layers, cfg.num_heads,
                            cfg.intermediate_size, max_positions=256).to(device)
    gen = torch.Generator().manual_seed(settings.seed)

    def loss_fn(step: int):
        idx = torch.randint(len(train_blocks), (cfg.batch_size,), generator=gen)
        x = train_blocks[idx].to(device)
        return model(input_ids=x, labels=x).loss, x.numel()

    final = run_steps(model, loss_fn, cfg.steps, cfg.lr, cfg.warmup_steps,
                      lambda step, m: ctx.log_metrics(m, step))

    model.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    ctx.register(ctx.out / "model", "base")
    return {
        "parameters": count_parameters(model),
        "trained": 1,
        "train_tokens": int(train_blocks.numel()),
        "train_loss": final["train_loss"],
        "tokens_per_s": final["tokens_per_s"],
        "eval_perplexity": block_perplexity(model, eval_blocks, device),
        "unigram_perplexity": unigram_perplexity(train_ids, eval_ids, len(tok)),
    }
