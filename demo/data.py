"""`rlhf data`: the demo's raw inputs, the same bytes for the same seed and sizes.

data/corpus/reviews.txt            pretraining text
data/sft/demonstrations.jsonl      demonstrations of mixed quality
data/exports/*.jsonl               the annotators' comparisons, as a labelling tool exports
data/prompts/{train,eval}.jsonl    PPO prompts; held-out evaluation prompts
data/feedback/                     the exports imported as two batches
"""

from __future__ import annotations

import random
from pathlib import Path

from rlhf.core.feedback.batches import import_batch
from rlhf.core.io import write_jsonl
from rlhf.core.settings import Settings
from rlhf.demo.annotators import ANNOTATORS, prefers_first, second_opinions
from rlhf.demo.task import corpus_document, split_specs, write_review


def generate(
    data_dir: str | Path,
    seed: int,
    *,
    corpus_docs: int,
    sft_examples: int,
    comparisons: int,
    train_prompts: int,
    eval_prompts: int,
    second_opinion_fraction: float,
) -> None:
    """Write the demo's raw inputs into data_dir: the same bytes for the same arguments.

    The annotators' judgements are written as exports (data/exports/), the way they would
    arrive from a labelling tool; write_demo_data imports them into the feedback dataset."""
    data_dir = Path(data_dir)
    rng = random.Random(seed)
    train, held_out = split_specs(rng, eval_prompts)

    write_corpus(data_dir, rng, corpus_docs)

    sft = []
    for _ in range(sft_examples):
        spec = rng.choice(train)
        sft.append({"prompt": spec.prompt, "response": write_review(spec, rng)})
    write_jsonl(data_dir / "sft" / "demonstrations.jsonl", sft)

    pairs: list[dict[str, str]] = []
    while len(pairs) < comparisons:
        spec = rng.choice(train)
        a, b = write_review(spec, rng), write_review(spec, rng)
        if a == b:
            continue
        ann = rng.choice(ANNOTATORS)
        chosen, rejected = (a, b) if prefers_first(ann, spec.prompt, a, b, rng) else (b, a)
        pairs.append(
            {
                "id": f"cmp-{len(pairs):06d}",
                "prompt": spec.prompt,
                "chosen": chosen,
                "rejected": rejected,
                "annotator": ann.name,
            }
        )
    exports = data_dir / "exports"
    write_jsonl(exports / "comparisons.jsonl", pairs)
    again = second_opinions(pairs, second_opinion_fraction, seed)
    (exports / "second-opinions.jsonl").unlink(missing_ok=True)
    if again:
        write_jsonl(exports / "second-opinions.jsonl", again)

    ppo_prompts = [{"prompt": s.prompt} for s in rng.sample(train, min(train_prompts, len(train)))]
    write_jsonl(data_dir / "prompts" / "train.jsonl", ppo_prompts)
    write_jsonl(data_dir / "prompts" / "eval.jsonl", [{"prompt": s.prompt} for s in held_out])


def write_corpus(data_dir: Path, rng: random.Random, docs: int) -> None:
    """The pretraining text: docs review documents."""
    corpus = "\n\n".join(corpus_document(rng) for _ in range(docs)) + "\n"
    (data_dir / "corpus").mkdir(parents=True, exist_ok=True)
    (data_dir / "corpus" / "reviews.txt").write_text(corpus, encoding="utf-8")


def write_demo_data(settings: Settings) -> None:
    """`rlhf data`: the raw inputs, with the two annotation rounds imported as feedback
    batches exactly as a user's exports would be."""
    generate(settings.data_dir, settings.seed, **settings.demo.model_dump(exclude={"generator"}))
    for name in ("comparisons.jsonl", "second-opinions.jsonl"):
        if (settings.data_dir / "exports" / name).exists():
            import_batch(
                [settings.data_dir / "exports" / name], "auto", settings.feedback_dir, settings
            )
