import random

from tasks import demo
from tasks.io import digest_path
from tasks.settings import load_settings
from tests.conftest import write_params

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


SMALL = {"corpus_docs": 50, "sft_examples": 40, "comparisons": 60, "train_prompts": 20,
         "eval_prompts": 8, "second_opinion_fraction": 0.2}


def demo_data(tmp_path, name: str, seed: int = 3):
    """The demo data as `rlhf data` writes it (exports imported as feedback batches)."""
    write_params(tmp_path / f"{name}.yaml", {"seed": seed, "paths": {"data": name}, "demo": SMALL})
    settings = load_settings(tmp_path / f"{name}.yaml")
    demo.write_demo_data(settings)
    return settings.data_dir


def test_demo_data_is_byte_identical(tmp_path):
    a, b, c = demo_data(tmp_path, "a"), demo_data(tmp_path, "b"), demo_data(tmp_path, "c", seed=4)
    assert digest_path(a) == digest_path(b)  # so data.dvc stays valid when data/ is regenerated
    assert digest_path(a) != digest_path(c)
    assert len(list((a / "feedback/batches").iterdir())) == 2


def test_held_out_prompts_never_appear_in_training(tmp_path):
    import pandas as pd

    demo.generate(tmp_path, seed=0, corpus_docs=10, sft_examples=300, comparisons=300,
                  train_prompts=100, eval_prompts=40, second_opinion_fraction=0.1)
    held = set(pd.read_json(tmp_path / "prompts/eval.jsonl", lines=True)["prompt"])
    for f in ["sft/demonstrations.jsonl", "exports/comparisons.jsonl",
              "exports/second-opinions.jsonl", "prompts/train.jsonl"]:
        assert not held & set(pd.read_json(tmp_path / f, lines=True)["prompt"])


def test_second_opinions_come_from_another_annotator():
    pairs = [{"prompt": PROMPT, "chosen": f"The kettle is great {i}.", "rejected": "Bad.",
              "annotator": demo.ANNOTATORS[i % 5].name} for i in range(50)]
    again = demo.second_opinions(pairs, 0.5, seed=0)
    assert len(again) == 25
    firsts = {p["chosen"]: p["annotator"] for p in pairs} | {p["rejected"]: None for p in pairs}
    for vote in again:
        first = firsts[vote["chosen"]] or firsts[vote["rejected"]]
        assert vote["annotator"] != first


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
