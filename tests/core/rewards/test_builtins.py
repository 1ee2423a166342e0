"""The built-in reward functions, on completions whose right score is known by hand."""

import pytest

from rlhf.core.rewards import exact_match, length_band, numeric_match, regex, repetition

PROMPTS = [[{"role": "user", "content": "q"}]] * 3


def test_exact_match_ignores_spaces_case_and_a_final_full_stop():
    out = exact_match(PROMPTS, [" Paris.", "paris  is", "Lyon"], answer=["paris", "Paris", None])
    assert out == [1.0, 0.0, None]
    assert exact_match(PROMPTS[:1], ["Paris"], answer=["paris"], ignore_case=False) == [0.0]


def test_exact_match_reads_the_field_it_is_told():
    assert exact_match(PROMPTS[:1], ["4"], field="label", label=["4"], answer=["5"]) == [1.0]


def test_numeric_match_takes_the_first_number_within_tolerance():
    out = numeric_match(PROMPTS, ["it is 3.5 kg", "no number", "-2e1"], answer=[3.4, 1, "-20"])
    assert out == [0.0, 0.0, 1.0]
    assert numeric_match(PROMPTS[:1], ["3.5"], answer=[3.4], tolerance=0.2) == [1.0]


def test_regex_must_or_must_not_match():
    texts = ["Answer: 4", "four"]
    assert regex(PROMPTS[:2], texts, pattern=r"^Answer: \d+$") == [1.0, 0.0]
    assert regex(PROMPTS[:2], texts, pattern=r"\d", must_match=False) == [0.0, 1.0]


def test_length_band_is_one_inside_and_falls_to_zero_at_twice_the_tolerance():
    texts = ["a b c", "a b c d e f g", "a " * 20]
    assert length_band(PROMPTS, texts, target=3, tolerance=2) == [1.0, 0.0, 0.0]
    assert length_band(PROMPTS[:1], ["a b c d e f"], target=3, tolerance=2) == [0.5]
    assert length_band(PROMPTS[:1], ["abcd"], target=2, tolerance=1, unit="chars") == [0.0]
    with pytest.raises(ValueError, match="unit"):
        length_band(PROMPTS[:1], ["x"], target=1, tolerance=1, unit="tokens")


def test_repetition_is_the_share_of_repeated_ngrams():
    assert repetition(PROMPTS[:2], ["a b c d", "x y x y x y"], n=2) == [0.0, pytest.approx(0.6)]
