import re

import pandas as pd

from rlhf.core.io import digest_path
from rlhf.core.rewards import exact_match
from rlhf.core.settings import load_settings
from rlhf.demo.answers import RIGHT, write_demo_data
from rlhf.demo.task import ASPECTS, ITEMS
from tests.support.project import write_params

PRODUCT = re.compile(r"of the (\w+) that")
SMALL = {"corpus_docs": 20, "sft_examples": 400, "train_prompts": 50, "eval_prompts": 30}


def answers_data(tmp_path, name: str, seed: int = 3):
    demo = {**SMALL, "generator": "rlhf.demo.answers:write_demo_data"}
    write_params(tmp_path / f"{name}.yaml", {"seed": seed, "paths": {"data": name}, "demo": demo})
    settings = load_settings(tmp_path / f"{name}.yaml")
    write_demo_data(settings)
    return settings.data_dir


def test_the_same_bytes_for_the_same_seed_and_no_feedback(tmp_path):
    a, b, c = (answers_data(tmp_path, n, seed) for n, seed in (("a", 3), ("b", 3), ("c", 4)))
    assert digest_path(a) == digest_path(b)
    assert digest_path(a) != digest_path(c)
    assert sorted(p.name for p in a.iterdir()) == ["corpus", "prompts", "sft"]


def test_answers_are_checkable_and_the_demonstrations_only_partly_right(tmp_path):
    data = answers_data(tmp_path, "a")
    train = pd.read_json(data / "prompts/train.jsonl", lines=True)
    held = pd.read_json(data / "prompts/eval.jsonl", lines=True)
    sft = pd.read_json(data / "sft/demonstrations.jsonl", lines=True)
    for table in (train, held):
        assert [PRODUCT.search(p)[1] for p in table["prompt"]] == table["answer"].tolist()
    assert not set(held["prompt"]) & (set(train["prompt"]) | set(sft["prompt"]))
    # the demonstrations, checked by the built-in the verifiable run optimises
    products = [PRODUCT.search(p)[1] for p in sft["prompt"]]
    right = exact_match([], sft["response"].tolist(), answer=products)
    assert abs(sum(right) / len(right) - RIGHT) < 0.1
    assert set(sft["response"]) <= set(ITEMS) | set(ASPECTS)
