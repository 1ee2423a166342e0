"""The labelling batch: which prompts are asked, and the simulated annotators' export."""

import random
from collections import Counter

from rlhf.core.feedback.collect import pick_prompts
from rlhf.core.feedback.formats import labelstudio
from rlhf.demo.annotators import label_studio_export
from rlhf.demo.gold import gold_score


def test_prompts_asked_least_often_go_first():
    pool = [f"p{i}" for i in range(10)] + ["p0", "p1"]  # duplicates in the pool count once
    asked = Counter({"p0": 2, "p1": 1, "p2": 1})
    picked = pick_prompts(pool, asked, 8, random.Random(0))
    assert len(picked) == len(set(picked)) == 8
    assert set(picked) == {f"p{i}" for i in range(3, 10)} | {picked[-1]}
    assert picked[-1] in ("p1", "p2")  # once-asked prompts fill the remaining place
    assert pick_prompts(pool, asked, 8, random.Random(0)) == picked  # seeded


def test_simulated_export_reads_back_as_the_annotators_votes():
    good = "The lamp is great and the color is lovely."
    worse = "The lamp is great and the price is lovely."  # misses the aspect
    prompt = "Write a positive review of the lamp that mentions the color."
    assert (gold_score(prompt, good), gold_score(prompt, worse)) == (1.0, 0.8)
    tasks = [
        {"data": {"prompt": prompt, "answer1": a, "answer2": b}}
        for a, b in [(good, worse), (worse, good)] * 100
    ]
    export = label_studio_export(tasks, seed=3)
    votes = [v for row in export for v in labelstudio(row)]
    assert len(votes) == len(tasks)  # one completed annotation per task
    assert all(v.annotator.startswith("ann-") for v in votes)
    agree = sum(v.chosen == good for v in votes) / len(votes)
    assert 0.65 < agree < 0.95  # noisy, like people, but far better than chance
    assert label_studio_export(tasks, seed=3) == export
