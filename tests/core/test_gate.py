"""The human gate's pairs: paired samples of challenger and incumbent, one per prompt first."""

import pandas as pd

from rlhf.core.gate import gate_pairs


def samples(responses: dict[str, list[tuple[str, int, str]]]) -> pd.DataFrame:
    rows = [
        {"policy": policy, "prompt": p, "seed": s, "response": r}
        for policy, found in responses.items()
        for p, s, r in found
    ]
    return pd.DataFrame(rows)


def test_pairs_match_prompt_and_seed_skip_identical_and_cover_prompts_first():
    new = [("p1", 1, "a"), ("p1", 2, "b"), ("p2", 1, "c"), ("p2", 2, "d"), ("p3", 1, "e")]
    old = [("p1", 1, "A"), ("p1", 2, "B"), ("p2", 1, "C"), ("p2", 2, "D"), ("p3", 1, "e")]
    pairs = gate_pairs(samples({"ppo": new, "champion": old}), "champion", n=3, seed=0)
    assert len(pairs) == 3
    assert {p["prompt"] for p in pairs[:2]} == {"p1", "p2"}  # p3's responses are identical
    for p in pairs:
        assert p["incumbent"] == p["challenger"].upper()  # same prompt, same seed
    assert len(gate_pairs(samples({"ppo": new, "sft": old}), "sft", n=10, seed=0)) == 4
