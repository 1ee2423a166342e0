"""Where the judges were validated (the feedback's test responses) and how far a policy's
responses lie outside it; the KL budget the held-out score-vs-KL curve gives."""

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch

from rlhf.core.evaluation.extrapolation import (
    curve_kl_budget,
    describe,
    extrapolated,
    nll_per_token,
    prompt_relevance,
    repetition,
    validated_range,
)
from rlhf.core.evaluation.records import Range, Validated
from rlhf.demo import task as demo
from rlhf.models.lm import build_causal_lm
from rlhf.models.tokenizer import train_tokenizer
from tests.models.conftest import MICRO


def test_repetition_counts_bigrams_that_repeat_an_earlier_one():
    assert repetition("a fine lamp with a long cable") == 0.0
    assert repetition("good good good good good") == pytest.approx(3 / 4)
    assert repetition("") == 0.0 and repetition("one") == 0.0


def test_a_sample_outside_any_validated_range_is_extrapolated():
    v = Validated(
        {"surprise": Range(0.5, 2.0), "length": Range(4, 40), "repetition": Range(0, 0.1)}, 100
    )
    samples = pd.DataFrame(
        {
            "surprise": [1.0, 0.1, 1.0, 1.0],  # too predictable to the reference
            "length": [10, 10, 80, 10],  # too long
            "repetition": [0.0, 0.0, 0.0, 0.5],  # loops
        }
    )
    assert extrapolated(samples, v).tolist() == [False, True, True, True]


@pytest.fixture(scope="module")
def reference():
    rng = random.Random(0)
    tok = train_tokenizer([demo.corpus_document(rng) for _ in range(200)], vocab_size=300)
    torch.manual_seed(0)
    return build_causal_lm(tok, MICRO).eval(), tok


def test_the_validated_range_spans_the_test_responses_and_a_loop_falls_outside(reference):
    ref, tok = reference
    rng = random.Random(1)
    test = [demo.corpus_document(rng)[:120] for _ in range(60)]
    pairs = pd.DataFrame(
        {
            "prompt": ["Review the lamp."] * 30 + ["Review the kettle."] * 30,
            "chosen": test[:30] * 2,
            "rejected": test[30:] * 2,
            "split": ["test"] * 40 + ["train"] * 20,  # only the test pairs count
        }
    )
    v = validated_range(ref, tok, pairs, torch.device("cpu"))
    assert v.responses == 80
    described = describe(ref, tok, ["Review the lamp."] * 2, [test[0], "good " * 40], "cpu")
    assert not extrapolated(described.iloc[:1], v).any()  # a validated response itself
    assert extrapolated(described.iloc[1:], v).all()  # a loop no test response resembles
    too_long = "word " * 500  # beyond the reference's positions: left out, not cut
    assert len(describe(ref, tok, ["p"], [too_long], torch.device("cpu"))) == 0
    long_only = pairs.assign(chosen=too_long, rejected=too_long)
    assert validated_range(ref, tok, long_only, torch.device("cpu")) is None  # nothing fits


def test_prompt_relevance_is_what_its_own_prompt_adds_to_a_response(reference):
    ref, tok = reference
    lamp, kettle, cpu = "Review the lamp.", "Review the kettle.", torch.device("cpu")
    responses = ["The lamp is bright.", "The kettle is loud.", "A fine lamp."]
    found = prompt_relevance(ref, tok, [lamp, kettle, lamp], responses, cpu)
    own = nll_per_token(ref, tok, [lamp, kettle, lamp], responses, cpu)
    elsewhere = nll_per_token(ref, tok, [kettle, lamp, kettle], responses, cpu)
    assert found == pytest.approx((elsewhere - own).tolist())
    assert all(math.isnan(x) for x in prompt_relevance(ref, tok, [lamp] * 2, responses[:2], cpu))
    assert math.isnan(prompt_relevance(ref, tok, [lamp, kettle], ["word " * 500, "ok"], cpu)[0])


def curve(kl, judge):
    return pd.DataFrame({"iteration": range(len(kl)), "kl": kl, "judge": judge})


def test_the_curve_budget_lies_past_the_judges_peak_where_the_gain_has_dropped():
    kl = np.array([0.0, 1.0, 2.0, 4.0, 6.0, 9.0, 12.0])
    d = np.sqrt(kl)
    gain = 2.0 * d - 0.5 * d**2  # peak at d = 2 (KL 4); 10% below it at d = 2 (1 + sqrt 0.1)
    budget = curve_kl_budget(curve(kl, 0.3 + gain), "judge", drop=0.1)
    assert budget == pytest.approx((2 * (1 + 0.1**0.5)) ** 2, rel=1e-6)
    assert 4.0 < budget < 9.0


def test_a_curve_that_never_turns_down_gives_no_budget():
    kl = [0.0, 1.0, 2.0, 4.0, 8.0]
    assert curve_kl_budget(curve(kl, [0.0, 0.5, 0.7, 1.0, 1.4]), "judge", 0.1) is None
    assert curve_kl_budget(curve(kl[:2], [0.0, 0.5]), "judge", 0.1) is None  # too few
    assert curve_kl_budget(curve(kl, [0.0, -0.1, -0.2, -0.4, -0.8]), "judge", 0.1) is None
