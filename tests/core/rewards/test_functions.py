"""Reward functions in their worker process: scores per function, a project's own module, and
every way a function can go wrong as one line naming it, the sample and the cause."""

import math
import textwrap

import pandas as pd
import pytest

from rlhf.core.rewards.functions import RewardFunctions, fields_of, prompt_fields, score_table
from rlhf.core.settings import Rewards, UserError

OWN = """
import time

def starts_with_a(prompts, completions, **fields):
    assert prompts[0][-1]["role"] == "user"  # chat messages, the user's turn last
    return [1.0 if c.startswith("a") else None for c in completions]

def raises(prompts, completions, **fields):
    raise ValueError("no answer column")

def nan(prompts, completions, **fields):
    return [0.0, float("nan")]

def short(prompts, completions, **fields):
    return [0.0]

def text(prompts, completions, **fields):
    return ["high", 0.0]

def slow(prompts, completions, **fields):
    time.sleep(30)
"""


@pytest.fixture
def root(tmp_path):
    (tmp_path / "own_rewards.py").write_text(textwrap.dedent(OWN), encoding="utf-8")
    return tmp_path


def functions(root, *fns, timeout: float = 20.0) -> RewardFunctions:
    cfg = Rewards.model_validate(
        {
            "functions": [{"name": name, "fn": fn, "weight": 0.5} for name, fn in fns],
            "timeout_seconds": timeout,
        }
    )
    return RewardFunctions(cfg, root)


def test_each_function_scores_each_completion_none_as_nan(root):
    fns = [("exact", "rlhf.core.rewards:exact_match"), ("own", "own_rewards:starts_with_a")]
    with functions(root, *fns) as f:
        found = f.scores(["q1", "q2"], ["a", "b"], {"answer": ["a", "a"]})
    assert found["exact"].tolist() == [1.0, 0.0]
    assert found["own"][0] == 1.0 and math.isnan(found["own"][1])


def test_samples_gain_a_column_per_function_from_their_prompt_records(root):
    prompts = pd.DataFrame(
        {"prompt": ["q1", "q2"], "record": ["f:1", "f:2"], "answer": ["x", None]}
    )
    fields = prompt_fields(prompts)
    assert fields_of(["q2", "q1"], fields) == {"answer": [None, "x"]}
    samples = pd.DataFrame({"prompt": ["q1", "q2", "q1"], "response": ["x", "x", "y"]})
    with functions(root, ("exact", "rlhf.core.rewards:exact_match")) as f:
        scored = score_table(samples, f, fields)
    assert scored["reward_exact"].tolist()[0::2] == [1.0, 0.0]
    assert math.isnan(scored["reward_exact"][1])


WHO = "rewards.functions bad (own_rewards:{})"


@pytest.mark.parametrize(
    "fn, cause",
    [
        ("raises", "raised ValueError: no answer column"),
        ("nan", "sample 1 ('b'): returned nan"),
        ("short", "returned 1 values for 2 completions"),
        ("text", "sample 0 ('a'): returned str 'high', not a number or None"),
        (
            "missing",
            "cannot load own_rewards:missing (AttributeError: module 'own_rewards' has no "
            "attribute 'missing')",
        ),
    ],
)
def test_a_bad_function_is_one_line_naming_it_the_sample_and_the_cause(root, fn, cause):
    with pytest.raises(UserError) as e, functions(root, ("bad", f"own_rewards:{fn}")) as f:
        f.scores(["q1", "q2"], ["a", "b"], {})
    assert str(e.value) == f"{WHO.format(fn)}: {cause}"


def test_a_slow_function_is_stopped_at_its_timeout(root):
    with (
        pytest.raises(UserError) as e,
        functions(root, ("slow", "own_rewards:slow"), timeout=1) as f,
    ):
        f.scores(["q1"], ["a"], {})
    assert str(e.value) == (
        "rewards.functions slow (own_rewards:slow): took longer than rewards.timeout_seconds 1 s "
        "on a batch of 1"
    )
    assert not f.proc.is_alive()  # killed, not left running
