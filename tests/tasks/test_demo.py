import random

from tasks import demo
from tasks.io import digest_path

PROMPT = "Write a positive review of the kettle that mentions the lid."


def test_gold_judge_rewards_each_constraint():
    perfect = demo.gold_score(PROMPT, "The kettle is great and the lid is lovely.")
    assert perfect == 1.0
    assert demo.gold_score(PROMPT, "The kettle is awful and the lid is poor.") < perfect
    assert demo.gold_score(PROMPT, "The chair is great and the lid is lovely.") < perfect
    assert demo.gold_score(PROMPT, "The kettle is great and the box is lovely.") < perfect


def test_gold_judge_punishes_degenerate_output():
    assert demo.gold_score(PROMPT, "") == 0.0
    assert demo.gold_score(PROMPT, "great great great kettle lid") == 0.0
    assert demo.gold_score(PROMPT, "kettle lid") == 0.0


def test_generation_is_byte_identical(tmp_path):
    args = dict(seed=3, corpus_docs=50, sft_examples=40, comparisons=30, train_prompts=20,
                eval_prompts=8)
    demo.generate(tmp_path / "a", **args)
    demo.generate(tmp_path / "b", **args)
    assert digest_path(tmp_path / "a") == digest_path(tmp_path / "b")
    demo.generate(tmp_path / "c", **{**args, "seed": 4})
    assert digest_path(tmp_path / "a") != digest_path(tmp_path / "c")


def test_held_out_prompts_never_appear_in_training(tmp_path):
    import pandas as pd

    demo.generate(tmp_path, seed=0, corpus_docs=10, sft_examples=300, comparisons=300,
                  train_prompts=100, eval_prompts=40)
    held = set(pd.read_json(tmp_path / "prompts/eval.jsonl", lines=True)["prompt"])
    for f in ["sft/demonstrations.jsonl", "feedback/comparisons.jsonl", "prompts/train.jsonl"]:
        assert not held & set(pd.read_json(tmp_path / f, lines=True)["prompt"])


def test_annotators_agree_with_gold_imperfectly():
    rng = random.Random(0)
    spec = demo.Spec("positive", "kettle", "lid")
    agree = []
    for _ in range(400):
        a, b = demo.write_review(spec, rng), demo.write_review(spec, rng)
        ga, gb = demo.gold_score(spec.prompt, a), demo.gold_score(spec.prompt, b)
        if ga != gb:
            first = demo.prefers_first(rng.choice(demo.ANNOTATORS), spec.prompt, a, b, rng)
            agree.append(first == (ga > gb))
    rate = sum(agree) / len(agree)
    assert 0.7 < rate < 0.99
