"""The demo's prompts and responses of mixed quality.

Prompt: "Write a <positive|negative> review of the <item> that mentions the <aspect>."
A generated response breaks each constraint with some probability, as careless writers do.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

ITEMS = [
    "lamp",
    "chair",
    "kettle",
    "phone",
    "jacket",
    "blender",
    "camera",
    "backpack",
    "desk",
    "pillow",
    "watch",
    "speaker",
    "bicycle",
    "mug",
    "tent",
    "keyboard",
    "heater",
    "scarf",
    "oven",
    "printer",
]
ASPECTS = [
    "color",
    "price",
    "battery",
    "size",
    "weight",
    "handle",
    "sound",
    "design",
    "screen",
    "fabric",
    "lid",
    "strap",
    "button",
    "cable",
    "box",
    "smell",
    "finish",
    "grip",
    "manual",
    "warranty",
]
POSITIVE = [
    "great",
    "excellent",
    "lovely",
    "perfect",
    "reliable",
    "sturdy",
    "wonderful",
    "comfortable",
    "fantastic",
    "pleasant",
]
NEGATIVE = [
    "awful",
    "broken",
    "flimsy",
    "terrible",
    "useless",
    "poor",
    "disappointing",
    "cheap",
    "noisy",
    "horrible",
]
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
FILLER = [
    "it arrived on time",
    "I use it every day",
    "my friend has one",
    "it came in a box",
    "I would tell others",
    "we got it on sale",
]


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
    return " ".join(
        write_review(spec, rng, Quality(0.7, 0.9, 0.7, 0.9)) for _ in range(rng.randint(1, 3))
    )


def split_specs(rng: random.Random, n_eval: int) -> tuple[list[Spec], list[Spec]]:
    """All prompt combinations, shuffled; the first n_eval are held out from all training."""
    specs = [Spec(s, i, a) for s in SENTIMENTS for i in ITEMS for a in ASPECTS]
    rng.shuffle(specs)
    return specs[n_eval:], specs[:n_eval]
