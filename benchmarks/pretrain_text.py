"""Pretraining on real text: held-out perplexity against the unigram baseline.

    .venv/bin/python benchmarks/pretrain_text.py ../shared/data/tinyshakespeare.txt \\
        --model small --minutes 10

Reads the corpus as ingest does (a .txt file: blank-line separated documents; JSONL, JSON or
Parquet: the `text` field), then runs the pretrain stage's own function (tokenizer, packing,
Trainer loop, held-out evaluation) with params.yaml's pretrain section and the overrides
below. The LR schedule is set to end where the time budget is expected to run out (from a
short timed warm-up), and the run stops at the budget in any case. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rlhf.core.settings import UserError, load_settings
from rlhf.models.lm import start_run
from rlhf.tasks.ingest import read_table
from rlhf.tasks.pretrain import train_base

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_corpus(path: Path) -> list[str]:
    good, bad = read_table(path)
    if bad:
        print(
            f"{path}: {len(bad)} unreadable record(s) left out, first {bad[0]['_record']}: "
            f"{bad[0]['reason']}",
            file=sys.stderr,
        )
    docs = [r["text"] for r in good if isinstance(r.get("text"), str) and r["text"].strip()]
    if not docs:
        raise UserError(f"{path}: no documents")
    return docs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus", type=Path)
    p.add_argument("--model", default="small", help="a preset of params.yaml's pretrain section")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    base = load_settings(ROOT / "params.yaml").pretrain
    device = start_run(0, args.device)
    docs = read_corpus(args.corpus)
    cfg = base.model_copy(
        update={
            "model": args.model,
            "vocab_size": args.vocab_size,
            "block_size": args.block_size,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "eval_every": args.eval_every,
            "checkpoint_every": 10**9,
            "log_every": 10,
        }
    )

    # A short timed run sets how many steps fit the budget besides the tokenizer, packing
    # and the evaluations.
    with tempfile.TemporaryDirectory() as work:
        t0 = time.perf_counter()
        _, _, trial = train_base(
            docs,
            cfg.model_copy(update={"steps": 20, "warmup_steps": 2}),
            seed=0,
            device=device,
            work=Path(work),
            log=lambda m, s: None,
        )
        overhead = time.perf_counter() - t0 - trial["seconds"]
    per_step = trial["seconds"] / trial["steps"]
    steps = int((args.minutes * 60 - overhead) / per_step * 0.9)
    cfg = cfg.model_copy(
        update={"steps": steps, "warmup_steps": max(10, steps // 50), "max_minutes": args.minutes}
    )
    history = []
    with tempfile.TemporaryDirectory() as work:
        start_run(0, args.device)
        _, tok, metrics = train_base(
            docs,
            cfg,
            seed=0,
            device=device,
            work=Path(work),
            log=lambda m, s: history.append({"step": s, **m}),
        )
    evals = [h for h in history if "eval_perplexity" in h]
    print(
        json.dumps(
            {
                "corpus": args.corpus.name,
                "documents": len(docs),
                "model": args.model,
                "parameters": metrics["parameters"],
                "vocab_size": len(tok),
                "block_size": args.block_size,
                "device": str(device),
                "steps": metrics["steps"],
                "planned_steps": steps,
                "minutes": round(metrics["seconds"] / 60, 2),
                "train_tokens": metrics["train_tokens"],
                "tokens_seen": metrics["steps"] * args.batch_size * args.block_size,
                "tokens_per_s": round(metrics["tokens_per_s"]),
                "train_loss": round(metrics["train_loss"], 4),
                "eval_perplexity": round(metrics["eval_perplexity"], 2),
                "unigram_perplexity": round(metrics["unigram_perplexity"], 2),
                "eval_curve": [(h["step"], round(h["eval_perplexity"], 2)) for h in evals],
            }
        )
    )


if __name__ == "__main__":
    main()
