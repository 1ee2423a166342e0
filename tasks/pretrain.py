"""Stage 2, pretrain: a byte-level BPE tokenizer and a Llama-style LM from scratch.

Documents (one per corpus record) are split whole into training and held-out sets, tokenized,
packed into blocks as BOS doc EOS and trained on with the Trainer loop (models/train.py).
Every eval interval reports the held-out perplexity next to the unigram baseline: the
perplexity of the same tokens under the training set's token frequencies, which a model
has to beat to have learnt anything beyond them.

When params.yaml names a local checkpoint (pretrain.init_checkpoint) this stage trains
nothing: it copies that checkpoint in as the base model, so the rest of the pipeline is the
same either way.
"""

from __future__ import annotations

import math
import random
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.core.pipeline.context import StageContext
from rlhf.core.settings import Pretrain, UserError
from rlhf.models.batching import block_batch, pack_blocks
from rlhf.models.lm import build_causal_lm, count_parameters, load_causal_lm, start_run
from rlhf.models.tokenizer import load_tokenizer, train_tokenizer
from rlhf.models.train import Job, Target, train


def split_documents(docs: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) documents, a seeded shuffle cut at `fraction`."""
    docs = list(docs)
    random.Random(seed).shuffle(docs)
    n = max(1, int(len(docs) * fraction))
    if len(docs) <= n:
        raise UserError(
            f"pretrain: {len(docs)} corpus document(s): too few to hold out "
            f"{fraction:.0%} and train on the rest"
        )
    return docs[n:], docs[:n]


def unigram_perplexity(train: torch.Tensor, held_out: torch.Tensor, vocab: int) -> float:
    """Perplexity of the tokens a model predicts in held_out blocks (all but each block's
    first) under the training blocks' token frequencies, add-one smoothed."""
    counts = Counter(train.flatten().tolist())
    total = sum(counts.values()) + vocab
    tokens = held_out[:, 1:].flatten().tolist()
    return math.exp(-sum(math.log((counts[t] + 1) / total) for t in tokens) / len(tokens))


@torch.no_grad()
def block_perplexity(model, blocks: torch.Tensor, batch_size: int = 64) -> float:
    model.eval()
    device = next(model.parameters()).device
    losses = [
        model(input_ids=b.to(device), labels=b.to(device)).loss.item() * len(b)
        for b in blocks.split(batch_size)
    ]
    return math.exp(sum(losses) / len(blocks))


def train_base(
    docs: list[str],
    cfg: Pretrain,
    *,
    seed: int,
    device: torch.device,
    work: Path,
    log: Callable[[dict, int], None],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """Tokenizer, model and metrics from corpus documents (also what benchmarks/ calls)."""
    train_docs, eval_docs = split_documents(docs, cfg.eval_fraction, seed)
    tok = train_tokenizer(train_docs, cfg.vocab_size, cfg.chat_tokens)

    def blocks(texts: list[str], which: str) -> torch.Tensor:
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        try:
            return pack_blocks(ids, tok.bos_token_id, tok.eos_token_id, cfg.block_size)
        except ValueError as e:
            raise UserError(
                f"pretrain: {which} corpus: {e}; lower pretrain.block_size or "
                "pretrain.eval_fraction"
            ) from None

    train_blocks, eval_blocks = blocks(train_docs, "training"), blocks(eval_docs, "held-out")
    arch = cfg.architecture
    if cfg.block_size > arch.max_positions:
        raise UserError(
            f"pretrain: block_size {cfg.block_size} exceeds the {cfg.model} preset's "
            f"max_positions {arch.max_positions}"
        )
    model = build_causal_lm(tok, arch)
    model.to(device)  # type: ignore[arg-type]
    baseline = unigram_perplexity(train_blocks, eval_blocks, len(tok))

    def evaluate(m) -> dict:
        return {"eval_perplexity": block_perplexity(m, eval_blocks), "unigram_perplexity": baseline}

    job = Job(
        "pretrain",
        model,
        list(train_blocks),
        block_batch,
        cfg,
        seed,
        device,
        work,
        log,
        evaluate=evaluate,
        target=Target("eval_perplexity", lower_is_better=True),
        tokenizer=tok,
    )
    final = train(job)
    metrics = {
        "parameters": count_parameters(model),
        "trained": 1,
        "train_documents": len(train_docs),
        "heldout_documents": len(eval_docs),
        "train_tokens": int(train_blocks.numel()),
        "heldout_tokens": int(eval_blocks.numel()),
        **final,
    }
    return model, tok, metrics


def import_checkpoint(ctx: StageContext, path: str) -> dict:
    """Start from a local HF checkpoint: normalise it (PAD added if missing) into out/model."""
    tok = load_tokenizer(path)
    model = load_causal_lm(path, tok)
    model.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    ctx.register(ctx.out / "model", initialised_from=f"file://{path}")
    return {"parameters": count_parameters(model), "trained": 0}


def run(ctx: StageContext) -> dict:
    cfg, settings = ctx.settings.pretrain, ctx.settings
    checkpoint = ctx.named_input("pretrain.init_checkpoint")
    if checkpoint is not None:
        return import_checkpoint(ctx, str(checkpoint))

    device = start_run(settings.seed, settings.device)  # seeds every draw below
    docs = pd.read_parquet(ctx.input("ingest", "corpus.parquet"))["text"].tolist()
    model, tok, metrics = train_base(
        docs, cfg, seed=settings.seed, device=device, work=ctx.checkpoints, log=ctx.log_metrics
    )
    if ctx.tracking:
        print(
            f"pretrain: {metrics['steps']} steps in {metrics['seconds']:.0f} s, "
            f"{metrics['parameters'] / 1e6:.2f}M parameters, loss {metrics['train_loss']:.3f}, "
            f"held-out perplexity {metrics['eval_perplexity']:.2f} (unigram baseline "
            f"{metrics['unigram_perplexity']:.1f}), {metrics['tokens_per_s']:.0f} tok/s",
            file=sys.stderr,
        )
    model.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    ctx.register(ctx.out / "model")
    return metrics
