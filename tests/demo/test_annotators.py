import random

from rlhf.demo.annotators import ANNOTATORS, prefers_first, second_opinions
from rlhf.demo.gold import gold_score
from rlhf.demo.task import Spec, write_review

PROMPT = "Write a positive review of the kettle that mentions the lid."


def test_second_opinions_come_from_another_annotator():
    pairs = [
        {
            "prompt": PROMPT,
            "chosen": f"The kettle is great {i}.",
            "rejected": "Bad.",
            "annotator": ANNOTATORS[i % 5].name,
        }
        for i in range(50)
    ]
    again = second_opinions(pairs, 0.5, seed=0)
    assert len(again) == 25
    firsts = {p["chosen"]: p["annotator"] for p in pairs} | {p["rejected"]: None for p in pairs}
    for vote in again:
        first = firsts[vote["chosen"]] or firsts[vote["rejected"]]
        assert vote["annotator"] != first


def test_annotators_agree_with_gold_imperfectly():
    rng = random.Random(0)
    spec = Spec("positive", "kettle", "lid")
    agree = []
    for _ in range(400):
        a, b = write_review(spec, rng), write_review(spec, rng)
        ga, gb = gold_score(spec.prompt, a), gold_score(spec.prompt, b)
        if ga != gb:
            first = prefers_first(rng.choice(ANNOTATORS), spec.prompt, a, b, rng)
            agree.append(first == (ga > gb))
    rate = sum(agree) / len(agree)
    assert 0.7 < rate < 0.99
