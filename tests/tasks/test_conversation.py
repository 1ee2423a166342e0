"""One conversation, brought in every format a dataset takes, reaches SFT, the reward model,
DPO, the policy and the evaluation as the same rendered prompt, its markers written once."""

import json

import pandas as pd
import pytest
import torch

from rlhf.core.data.examples import examples, prompt_record
from rlhf.core.feedback.formats import votes_of
from rlhf.models.batching import IGNORE, examples_rows, reward_pairs
from rlhf.models.chat import conversation, dialogue_text
from rlhf.models.dpo import preference_rows
from rlhf.models.generation import sample
from rlhf.models.lm import build_causal_lm
from rlhf.models.tokenizer import train_tokenizer
from tests.models.conftest import MICRO

TURNS = [
    {"role": "user", "content": "Is the lamp bright?"},
    {"role": "assistant", "content": "Yes, very."},
    {"role": "user", "content": "And the cable?"},
]
HH = "".join(
    f"\n\n{'Human' if t['role'] == 'user' else 'Assistant'}: {t['content']}" for t in TURNS
)
GOOD, BAD = "It is long enough.", "No."


@pytest.fixture(scope="module")
def tok():
    text = [HH + f"\n\nAssistant: {GOOD} {BAD}"] * 50 + ["the lamp and the cable"] * 50
    return train_tokenizer(text, vocab_size=300)


def the_forms():
    """(where it comes from, the prompt and the context a stage will render)."""
    sft_chat = examples({"messages": [*TURNS, {"role": "assistant", "content": GOOD}]})[-1]
    sft_hh = examples({"prompt": HH + "\n\nAssistant:", "response": GOOD})[0]
    hh_vote = votes_of(
        "hh", {"chosen": f"{HH}\n\nAssistant: {GOOD}", "rejected": f"{HH}\n\nAssistant: {BAD}"}
    )
    trl_vote = votes_of(
        "trl",
        {
            "prompt": TURNS,
            "chosen": [{"role": "assistant", "content": GOOD}],
            "rejected": [{"role": "assistant", "content": BAD}],
        },
    )
    return {
        "sft chat messages": (sft_chat["prompt"], sft_chat["context"]),
        "sft HH prompt": (sft_hh["prompt"], sft_hh["context"]),
        "policy prompt, HH text": (prompt_record({"prompt": HH})["prompt"], "[]"),
        "policy prompt, messages": (prompt_record({"messages": TURNS})["prompt"], "[]"),
        "feedback hh": (hh_vote[0].prompt, "[]"),
        "feedback trl": (trl_vote[0].prompt, "[]"),
    }


def decoded(tok, ids) -> str:
    return tok.decode([i for i in ids if i != tok.pad_token_id])


def test_every_form_is_the_same_turns():
    for where, (prompt, context) in the_forms().items():
        turns = [*json.loads(context), *conversation(prompt)]
        assert turns == TURNS, where
    assert dialogue_text(TURNS) == HH


def test_every_stage_renders_the_same_prompt_with_each_marker_once(tok):
    rendered = set()
    for prompt, context in the_forms().values():
        table = pd.DataFrame({"prompt": [prompt], "response": [GOOD], "context": [context]})
        ids, labels = examples_rows(tok, table, 256).rows[0]
        sft = decoded(tok, [i for i, lab in zip(ids, labels) if lab == IGNORE])
        if context != "[]":  # SFT examples keep earlier turns apart; prompts keep them inside
            rendered.add(sft)
            continue
        (pair,) = reward_pairs(tok, [prompt], [GOOD], [BAD], [0.0], 256)
        ((chosen_row, _),), _ = preference_rows(tok, [prompt], [GOOD], [BAD], 256)
        dpo = decoded(tok, [i for i, lab in zip(*chosen_row) if lab == IGNORE])
        torch.manual_seed(0)
        lm = build_causal_lm(tok, MICRO)
        policy = decoded(tok, sample(lm, tok, [prompt], 2, 1.0, torch.device("cpu")).query_ids[0])
        rendered |= {sft, decoded(tok, pair[0]), dpo, policy}
    (text,) = rendered  # byte-identical everywhere
    assert text.count("Human:") == 2 and text.count("Assistant:") == 2
    assert text.endswith("And the cable?\nAssistant:")
