"""The demo's verifiable task: prompts whose answer a rule checks, and no feedback at all.

Prompt: "Name the product: a <sentiment> review of the <item> that mentions the <aspect>."
Answer: the item, in the prompt record's `answer` column. The demonstrations answer right with
probability RIGHT and otherwise name the aspect or another item, as a careless labeller does,
so SFT learns the format and only part of the task; the built-in exact_match
(rlhf.core.rewards) checks each answer, and GRPO with it alone, no reward model, is the
verifiable-reward run (docs/rewards.md).

`rlhf data` with `demo.generator: rlhf.demo.answers:write_demo_data` writes:
data/corpus/reviews.txt            pretraining text, as the review demo's
data/sft/demonstrations.jsonl      answers of mixed quality, one per training combination
data/prompts/{train,eval}.jsonl    prompts with their answer; held-out combinations for eval
"""

from __future__ import annotations

import random

from rlhf.core.io import write_jsonl
from rlhf.core.settings import Settings
from rlhf.demo.data import write_corpus
from rlhf.demo.task import ITEMS, Spec, split_specs

PROMPT = "Name the product: a {sentiment} review of the {item} that mentions the {aspect}."
RIGHT = 0.5  # the share of demonstrations that name the product; the rest, a distractor


def prompt(spec: Spec) -> str:
    return PROMPT.format(sentiment=spec.sentiment, item=spec.item, aspect=spec.aspect)


def write_answer(spec: Spec, rng: random.Random) -> str:
    """The product, or a distractor: the aspect the prompt also names, or another product."""
    if rng.random() < RIGHT:
        return spec.item
    if rng.random() < 0.5:
        return spec.aspect
    return rng.choice([i for i in ITEMS if i != spec.item])


def record(spec: Spec) -> dict[str, str]:
    return {"prompt": prompt(spec), "answer": spec.item}


def write_demo_data(settings: Settings) -> None:
    """`rlhf data` for the verifiable task: the same bytes for the same seed and sizes."""
    cfg, data_dir = settings.demo, settings.data_dir
    rng = random.Random(settings.seed)
    train, held_out = split_specs(rng, cfg.eval_prompts)
    write_corpus(data_dir, rng, cfg.corpus_docs)
    # one answer per prompt: a repeated one-word answer would be a duplicate record
    shown = rng.sample(train, min(cfg.sft_examples, len(train)))
    sft = [{"prompt": prompt(s), "response": write_answer(s, rng)} for s in shown]
    write_jsonl(data_dir / "sft" / "demonstrations.jsonl", sft)
    asked = rng.sample(train, min(cfg.train_prompts, len(train)))
    write_jsonl(data_dir / "prompts" / "train.jsonl", [record(s) for s in asked])
    write_jsonl(data_dir / "prompts" / "eval.jsonl", [record(s) for s in held_out])
