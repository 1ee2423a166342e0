import pandas as pd

from rlhf.core.io import digest_path
from rlhf.core.settings import load_settings
from rlhf.demo.data import generate, write_demo_data
from tests.support.project import write_params

SMALL = {
    "corpus_docs": 50,
    "sft_examples": 40,
    "comparisons": 60,
    "train_prompts": 20,
    "eval_prompts": 8,
    "second_opinion_fraction": 0.2,
}


def demo_data(tmp_path, name: str, seed: int = 3):
    """The demo data as `rlhf data` writes it (exports imported as feedback batches)."""
    write_params(tmp_path / f"{name}.yaml", {"seed": seed, "paths": {"data": name}, "demo": SMALL})
    settings = load_settings(tmp_path / f"{name}.yaml")
    write_demo_data(settings)
    return settings.data_dir


def test_demo_data_is_byte_identical(tmp_path):
    a, b, c = demo_data(tmp_path, "a"), demo_data(tmp_path, "b"), demo_data(tmp_path, "c", seed=4)
    assert digest_path(a) == digest_path(b)  # so data.dvc stays valid when data/ is regenerated
    assert digest_path(a) != digest_path(c)
    assert len(list((a / "feedback/batches").iterdir())) == 2


def test_held_out_prompts_never_appear_in_training(tmp_path):
    generate(
        tmp_path,
        seed=0,
        corpus_docs=10,
        sft_examples=300,
        comparisons=300,
        train_prompts=100,
        eval_prompts=40,
        second_opinion_fraction=0.1,
    )
    held = set(pd.read_json(tmp_path / "prompts/eval.jsonl", lines=True)["prompt"])
    for f in [
        "sft/demonstrations.jsonl",
        "exports/comparisons.jsonl",
        "exports/second-opinions.jsonl",
        "prompts/train.jsonl",
    ]:
        assert not held & set(pd.read_json(tmp_path / f, lines=True)["prompt"])
