"""The demo task: constrained product reviews, a gold judge, and simulated annotators.

Prompt: "Write a <positive|negative> review of the <item> that mentions the <aspect>."
The gold judge scores a response by checking those constraints (and punishing degenerate
text, so PPO cannot win by reward-hacking to empty or looping answers). It only labels and
evaluates; nothing trains on it. Annotators are noisy Bradley-Terry choosers over the gold
score, one of them biased towards length, so their agreement with gold is imperfect as with
real people. Everything is generated from a seed: the same bytes on every machine.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

from tasks.io import write_jsonl

ITEMS = ["lamp", "chair", "kettle", "phone", "jacket", "blender", "camera", "backpack", "desk",
         "pillow", "watch", "speaker", "bicycle", "mug", "tent", "keyboard", "heater", "scarf",
         "oven", "printer"]
ASPECTS = ["color", "price", "battery", "size", "weight", "handle", "sound", "design", "screen",
           "fabric", "lid", "strap", "button", "cable", "box", "smell", "finish", "grip",
           "manual", "warranty"]
POSITIVE = ["great", "excellent", "lovely", "perfect", "reliable", "sturdy", "wonderful",
            "comfortable", "fantastic", "pleasant"]
NEGATIVE = ["awful", "broken", "flimsy", "terrible", "useless", "poor", "disappointing",
            "cheap", "noisy", "horrible"]
NEUTRAL = ["okay", "fine", "average", "normal", "plain"]  # in neither lexicon
GENERIC = ["product", "thing", "item"]  # stand-ins that name no item
SENTIMENTS = ["positive", "negative"]

PROMPT = "Write a {sentiment} review of the {item} that mentions the {aspect}."
PROMPT_RE = re.compile(r"Write a (positive|negative) review of the (\w+) that mentions the (\w+)\.")

# {a}/{b}: sentiment words; templates mention item and aspect, the generator breaks them.
TEMPLATES = [
    "The {item} is {a} and the {aspect} is {b}.",
    "I bought this {item} last week. The {aspect} is {a}.",
    "This {item} feels {a}, and the {aspect} is {b} too.",
    "My new {item} is {a}. I think the {aspect} is {b}.",
    "The {aspect} of this {item} is {a}, really {b}.",
    "A {a} {item} with a {b} {aspect}.",
]
TEMPLATES_NO_ASPECT = [
    "The {item} is {a} and {b}.",
    "I bought this {item} last week. It is {a}.",
    "This {item} feels {a}, and it is {b} too.",
    "My new {item} is {a}. I think it is {b}.",
]
FILLER = ["it arrived on time", "I use it every day", "my friend has one", "it came in a box",
          "I would tell others", "we got it on sale"]


@dataclass(frozen=True)
class Spec:
    sentiment: str
    item: str
    aspect: str

    @property
    def prompt(self) -> str:
        return PROMPT.format(sentiment=self.sentiment, item=self.item, aspect=self.aspect)


def parse_prompt(prompt: str) -> Spec | None:
    m = PROMPT_RE.search(prompt)
    return Spec(*m.groups()) if m else None


# ---------------------------------------------------------------------------- the gold judge
WORD_RE = re.compile(r"[a-z]+")


def is_degenerate(words: list[str]) -> bool:
    """Too short, or looping: the shapes reward hacking takes in small models."""
    if len(words) < 3:
        return True
    if any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)):
        return True
    return len(set(words)) / len(words) < 0.5


def gold_score(prompt: str, response: str) -> float:
    """Score in [0, 1]: sentiment 0.4, item 0.25, aspect 0.2, length and ending 0.15."""
    spec = parse_prompt(prompt)
    if spec is None:
        raise ValueError(f"not a demo prompt: {prompt!r}")
    words = WORD_RE.findall(response.lower())
    if is_degenerate(words):
        return 0.0
    right, wrong = (POSITIVE, NEGATIVE) if spec.sentiment == "positive" else (NEGATIVE, POSITIVE)
    n_right = sum(w in right for w in words)
    n_wrong = sum(w in wrong for w in words)
    score = 0.4 if n_right and not n_wrong else 0.1 if n_right else 0.0
    score += 0.25 * (spec.item in words)
    score += 0.2 * (spec.aspect in words)
    score += 0.15 * (5 <= len(words) <= 20 and response.rstrip().endswith("."))
    return round(score, 4)


# ------------------------------------------------------------------ responses of mixed quality
@dataclass(frozen=True)
class Quality:
    """Probability that a generated response honours each constraint."""

    sentiment: float = 0.55
    item: float = 0.6
    aspect: float = 0.5
    length: float = 0.75


def write_review(spec: Spec, rng: random.Random, q: Quality = Quality()) -> str:
    """A response that breaks each of the prompt's constraints with some probability.

    A broken constraint is either left out (no sentiment word, a generic noun, no aspect) or
    contradicted (the other polarity, another item or aspect), as careless writers do.
    """
    right, wrong = (POSITIVE, NEGATIVE) if spec.sentiment == "positive" else (NEGATIVE, POSITIVE)
    if rng.random() < q.sentiment:
        a, b = rng.choice(right), rng.choice(right)
    elif rng.random() < 0.5:
        a, b = rng.choice(NEUTRAL), rng.choice(NEUTRAL)
    else:  # the wrong polarity, or mixed
        a, b = rng.choice(wrong), rng.choice(rng.choice([right, wrong]))
    if rng.random() < q.item:
        item = spec.item
    else:
        item = rng.choice(GENERIC if rng.random() < 0.5 else [i for i in ITEMS if i != spec.item])
    templates, aspect = TEMPLATES, spec.aspect
    if rng.random() >= q.aspect:
        if rng.random() < 0.5:
            templates = TEMPLATES_NO_ASPECT
        else:
            aspect = rng.choice([x for x in ASPECTS if x != spec.aspect])
    text = rng.choice(templates).format(item=item, aspect=aspect, a=a, b=b)
    if rng.random() >= q.length:  # too short, or rambling past twenty words
        if rng.random() < 0.5:
            text = f"{a.capitalize()} {item}"
        else:
            text = text[:-1] + ", and " + ", and ".join(rng.sample(FILLER, 4)) + "."
    return text


def corpus_document(rng: random.Random) -> str:
    """One to three review sentences on one random product: the pretraining text."""
    spec = Spec(rng.choice(SENTIMENTS), rng.choice(ITEMS), rng.choice(ASPECTS))
    return " ".join(write_review(spec, rng, Quality(0.7, 0.9, 0.7, 0.9))
                    for _ in range(rng.randint(1, 3)))


# ---------------------------------------------------------------------- simulated annotators
@dataclass(frozen=True)
class Annotator:
    name: str
    rationality: float  # Bradley-Terry inverse temperature on the gold-score difference
    length_bias: float = 0.0  # extra preference per word of length difference


ANNOTATORS = [
    Annotator("ann-careful-1", 12.0),
    Annotator("ann-careful-2", 12.0),
    Annotator("ann-hasty", 4.0),
    Annotator("ann-verbose", 6.0, length_bias=0.25),
    Annotator("ann-careful-3", 10.0),
]


def prefers_first(ann: Annotator, prompt: str, a: str, b: str, rng: random.Random) -> bool:
    logit = ann.rationality * (gold_score(prompt, a) - gold_score(prompt, b))
    logit += ann.length_bias * (len(a.split()) - len(b.split()))
    return rng.random() < 1.0 / (1.0 + math.exp(-logit))


def label_studio_export(tasks: list[dict], seed: int) -> list[dict]:
    """The annotators label a Label Studio import (tasks/collect.py) and export it: each task
    with one pairwise annotation, as Label Studio writes them ("left" = answer1)."""
    rng = random.Random(seed)
    out = []
    for i, task in enumerate(tasks):
        d, ann = task["data"], rng.choice(ANNOTATORS)
        left = prefers_first(ann, d["prompt"], d["answer1"], d["answer2"], rng)
        result = {"type": "pairwise", "from_name": "comparison", "to_name": ["answer1", "answer2"],
                  "value": {"selected": "left" if left else "right"}}
        out.append({"id": i + 1, "data": d, "annotations": [
            {"id": i + 1, "completed_by": {"email": ann.name}, "was_cancelled": False,
             "result": [result]}]})
    return out


# ------------------------------------------------------------------------------ the data set
def split_specs(rng: random.Random, n_eval: int) -> tuple[list[Spec], list[Spec]]:
    """All prompt combinations, shuffled; the first n_eval are held out from all training."""
    specs = [Spec(s, i, a) for s in SENTIMENTS for i in ITEMS for a in ASPECTS]
    rng.shuffle(specs)
    return specs[n_eval:], specs[:n_eval]


def second_opinions(pairs: list[dict], fraction: float, seed: int) -> list[dict]:
    """A later round: another annotator judges a sample of the same comparisons, so the
    feedback has overlap to measure agreement on (its own generator keeps the first round's
    data unchanged)."""
    rng = random.Random(seed + 1)
    out = []
    for pair in rng.sample(pairs, int(len(pairs) * fraction)):
        ann = rng.choice([a for a in ANNOTATORS if a.name != pair["annotator"]])
        a, b = pair["chosen"], pair["rejected"]
        chosen, rejected = (a, b) if prefers_first(ann, pair["prompt"], a, b, rng) else (b, a)
        out.append({**pair, "chosen": chosen, "rejected": rejected, "annotator": ann.name})
    return out


def generate(data_dir: str | Path, seed: int, corpus_docs: int, sft_examples: int,
             comparisons: int, train_prompts: int, eval_prompts: int,
             second_opinion_fraction: float) -> None:
    """Write the demo's raw inputs into data_dir: the same bytes for the same arguments.

    The annotators' judgements are written as exports (data/exports/), the way they would
    arrive from a labelling tool; write_demo_data imports them into the feedback dataset."""
    data_dir = Path(data_dir)
    rng = random.Random(seed)
    train, held_out = split_specs(rng, eval_prompts)

    corpus = "\n\n".join(corpus_document(rng) for _ in range(corpus_docs)) + "\n"
    (data_dir / "corpus").mkdir(parents=True, exist_ok=True)
    (data_dir / "corpus" / "reviews.txt").write_text(corpus, encoding="utf-8")

    sft = []
    for _ in range(sft_examples):
        spec = rng.choice(train)
        sft.append({"prompt": spec.prompt, "response": write_review(spec, rng)})
    write_jsonl(data_dir / "sft" / "demonstrations.jsonl", sft)

    pairs = []
    while len(pairs) < comparisons:
        spec = rng.choice(train)
        a, b = write_review(spec, rng), write_review(spec, rng)
        if a == b:
            continue
        ann = rng.choice(ANNOTATORS)
        chosen, rejected = (a, b) if prefers_first(ann, spec.prompt, a, b, rng) else (b, a)
        pairs.append({"id": f"cmp-{len(pairs):06d}", "prompt": spec.prompt, "chosen": chosen,
                      "rejected": rejected, "annotator": ann.name})
    exports = data_dir / "exports"
    write_jsonl(exports / "comparisons.jsonl", pairs)
    again = second_opinions(pairs, second_opinion_fraction, seed)
    (exports / "second-opinions.jsonl").unlink(missing_ok=True)
    if again:
        write_jsonl(exports / "second-opinions.jsonl", again)

    ppo_prompts = [{"prompt": s.prompt} for s in rng.sample(train, min(train_prompts, len(train)))]
    write_jsonl(data_dir / "prompts" / "train.jsonl", ppo_prompts)
    write_jsonl(data_dir / "prompts" / "eval.jsonl", [{"prompt": s.prompt} for s in held_out])


def write_demo_data(settings) -> None:
    """`rlhf data`: the raw inputs, with the two annotation rounds imported as feedback
    batches exactly as a user's exports would be."""
    from tasks.feedback import import_batch

    generate(settings.data_dir, settings.seed, **settings.demo.model_dump())
    for name in ("comparisons.jsonl", "second-opinions.jsonl"):
        if (settings.data_dir / "exports" / name).exists():
            import_batch([settings.data_dir / "exports" / name], "auto", settings.feedback_dir, settings)
