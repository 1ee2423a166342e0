"""The human gate's batch: paired samples of challenger and incumbent, one per prompt first,
kept with its labels while the champion it was opened against stands."""

import json

import pandas as pd

from rlhf.core.evaluation.gate import GATE, LABELS, gate_pairs, open_gate
from rlhf.core.evaluation.records import Evaluation
from rlhf.core.settings import load_settings
from tests.support.project import write_params


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
    pairs = gate_pairs(samples({"policy": new, "champion": old}), "champion", n=3, seed=0)
    assert len(pairs) == 3
    assert {p["prompt"] for p in pairs[:2]} == {"p1", "p2"}  # p3's responses are identical
    for p in pairs:
        assert p["incumbent"] == p["challenger"].upper()  # same prompt, same seed
    assert len(gate_pairs(samples({"policy": new, "sft": old}), "sft", n=10, seed=0)) == 4


def test_a_gate_keeps_its_labels_unless_the_champion_it_was_opened_against_changed(tmp_path):
    write_params(tmp_path / "params.yaml", {})
    settings = load_settings(tmp_path / "params.yaml")
    new = [("p1", 1, "a"), ("p2", 1, "b")]
    rows = samples({"policy": new, "champion": [("p1", 1, "A"), ("p2", 1, "B")]})
    folder = open_gate(settings, "3", "2", rows, Evaluation(scores={}, wins={}))
    tasks = [json.loads(line) for line in (folder / "tasks.jsonl").read_text().splitlines()]
    assert len(tasks) == 2 and all("challenger" not in t for t in tasks)
    (folder / LABELS / "people.jsonl").write_text("{}\n")
    assert open_gate(settings, "3", "2", rows, Evaluation(scores={}, wins={})) == folder
    assert (folder / LABELS / "people.jsonl").exists()  # same champion: kept, labels too
    open_gate(settings, "3", "1", rows, Evaluation(scores={}, wins={}))
    assert json.loads((folder / GATE).read_text())["champion"] == "1"
    assert not (folder / LABELS / "people.jsonl").exists()  # another champion: a new gate
