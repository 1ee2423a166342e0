"""Each export format, as its users write it, turned into votes; malformed rows get a reason."""

import pytest

from rlhf.core.feedback.formats import (
    MEAN_RATING,
    Rating,
    Reject,
    Vote,
    detect,
    rating,
    rating_pairs,
    votes_of,
)

HH = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello! 😀",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.",
}
USER = {"role": "user", "content": "Sky colour?"}


def one(fmt, row) -> Vote:
    (vote,) = votes_of(fmt, row)
    return vote


def reason(fmt, row) -> str:
    with pytest.raises(Reject) as e:
        votes_of(fmt, row)
    return str(e.value)


def test_hh_prompt_is_the_shared_prefix_through_the_last_assistant_marker():
    multi = {
        "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: good",
        "rejected": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: bad",
    }
    # kept as its turns, without the cue the response follows (rlhf.models.chat)
    assert one("hh", multi) == Vote("\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "good", "bad")
    assert one("hh", HH).prompt == "Hi"  # one turn: its text
    assert one("hh", HH).chosen == "Hello! 😀"


@pytest.mark.parametrize(
    "row, why",
    [
        (
            {
                "chosen": "\n\nHuman: a\n\nAssistant: x\n\nHuman: c\n\nAssistant: d",
                "rejected": "\n\nHuman: a\n\nAssistant: y\n\nHuman: c\n\nAssistant: e",
            },
            "hh: chosen and rejected prompts differ",
        ),
        (
            {"chosen": "\n\nHuman: q\n\nAssistant:  ", "rejected": "\n\nHuman: q\n\nAssistant: ok"},
            "hh: empty final response (chosen)",
        ),
        (
            {"chosen": "\n\nHuman: q\n\nAssistant: ok", "rejected": "\n\nHuman: q\n\nAssistant:"},
            "hh: empty final response (rejected)",
        ),
        (
            {"chosen": "no turns at all", "rejected": "\n\nHuman: q\n\nAssistant: ok"},
            "hh: dialogue without an Assistant turn",
        ),
        ({"chosen": "\n\nHuman: q\n\nAssistant: ok"}, "rejected: missing"),
        ({"chosen": 5, "rejected": "x"}, "chosen: not a string"),
    ],
)
def test_hh_rows_that_cannot_be_split_are_rejected_with_distinct_reasons(row, why):
    assert reason("hh", row) == why


def test_trl_plain_conversational_and_implicit_prompt():
    assert one(
        "trl", {"prompt": "p", "chosen": "a", "rejected": "b", "annotator": "ann", "margin": "2"}
    ) == Vote("p", "a", "b", "ann", 2.0)
    conv = {
        "prompt": [USER],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Green."}],
    }
    assert one("trl", conv) == Vote("Sky colour?", "Blue.", "Green.")
    implicit = {
        "chosen": [USER, {"role": "assistant", "content": "Blue."}],
        "rejected": [USER, {"role": "assistant", "content": "Green."}],
    }
    assert one("trl", implicit) == Vote("Sky colour?", "Blue.", "Green.")
    system = {
        "prompt": [{"role": "system", "content": "Be brief."}, USER],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Green."}],
    }
    assert one("trl", system).prompt == "\n\nSystem: Be brief.\n\nHuman: Sky colour?"
    assert one("trl", {"chosen": "The sky is blue.", "rejected": "The sky is green."}) == Vote(
        "The sky is", "blue.", "green."
    )


@pytest.mark.parametrize(
    "row, why",
    [
        ({"chosen": "blue", "rejected": "green"}, "trl: chosen and rejected share no prompt"),
        (
            {
                "prompt": [USER],
                "chosen": [{"role": "robot", "content": "x"}],
                "rejected": [{"role": "assistant", "content": "y"}],
            },
            "chosen: not a list of role/content messages",
        ),
        (
            {
                "prompt": [USER],
                "chosen": [USER],
                "rejected": [{"role": "assistant", "content": "y"}],
            },
            "chosen: completion has a non-assistant message",
        ),
        ({"prompt": "p", "chosen": "a\ud800", "rejected": "b"}, "chosen: not valid UTF-8"),
        (
            {"prompt": "p", "chosen": ["a"], "rejected": "b"},
            "prompt: not a list of role/content messages",
        ),
        ({"prompt": "p", "rejected": "b"}, "chosen: missing"),
    ],
)
def test_trl_malformed_rows(row, why):
    assert reason("trl", row) == why


def test_summarize_from_feedback_comparison():
    row = {
        "info": {"id": "t3_x", "post": "My cat sneezes.", "title": "Cat", "subreddit": "cats"},
        "summaries": [
            {"text": " Cat sneezes.", "policy": "sup"},
            {"text": " Dog.", "policy": "ppo"},
        ],
        "choice": 0,
        "worker": "w7",
        "extra": {"confidence": 8},
        "split": "train",
    }
    assert one("summarize", row) == Vote(
        "SUBREDDIT: r/cats\nTITLE: Cat\nPOST: My cat sneezes.\nTL;DR:",
        "Cat sneezes.",
        "Dog.",
        "w7",
        8.0,
    )
    assert one("summarize", {**row, "choice": 1}).chosen == "Dog."
    assert reason("summarize", {**row, "choice": 2}) == "choice: must be 0 or 1"
    assert (
        reason("summarize", {**row, "summaries": row["summaries"][:1]})
        == "summaries: need exactly two with text"
    )
    article = {**row, "info": {"article": "Rates rose.", "id": "cnn"}}
    assert one("summarize", article).prompt == "ARTICLE: Rates rose.\nTL;DR:"


def test_shp_labels_pick_the_side_and_scores_give_the_margin():
    row = {
        "post_id": "p",
        "history": "Why?",
        "human_ref_A": "Because A",
        "human_ref_B": "B",
        "labels": 1,
        "score_A": 40,
        "score_B": 4,
    }
    assert one("shp", row) == Vote("Why?", "Because A", "B", margin=36.0)
    assert one("shp", {**row, "labels": "0"}).chosen == "B"  # CSV cells are strings
    assert reason("shp", {**row, "labels": 3}) == "labels: must be 0 or 1"
    assert reason("shp", {**row, "labels": "yes"}) == "labels: not a number"


@pytest.mark.parametrize("tie", [0, "0", 0.0, 1.5, "1.5", "tie", " Tie "])
def test_an_alpacafarm_tie_is_a_tie_vote_in_the_order_given(tie):
    row = {"instruction": "Add.", "output_1": "4", "output_2": "four", "preference": tie}
    assert one("alpacafarm", row) == Vote("Add.", "4", "four", tie=True)


def test_alpacafarm_with_and_without_input():
    row = {"instruction": "Add.", "input": "2+2", "output_1": "4", "output_2": "5", "preference": 1}
    assert one("alpacafarm", row) == Vote("Add.\n\n2+2", "4", "5")
    assert one("alpacafarm", {**row, "input": "", "preference": 2.0}) == Vote("Add.", "5", "4")
    assert reason("alpacafarm", {**row, "preference": 1.25}) == (
        "preference: must be 1 or 2 (or 0, 1.5 or tie for a tie)"
    )
    assert reason("alpacafarm", {**row, "preference": None}) == "preference: missing"


def test_labelstudio_one_vote_per_completed_annotation():
    task = {
        "id": 1,
        "data": {"prompt": "Say hi", "answer1": "hi", "answer2": "bye"},
        "annotations": [
            {
                "completed_by": {"id": 3, "email": "ann@example.com"},
                "result": [{"type": "pairwise", "value": {"selected": "left"}}],
            },
            {"completed_by": 4, "result": [{"type": "pairwise", "value": {"selected": "right"}}]},
            {"completed_by": 5, "was_cancelled": True, "result": []},
        ],
    }
    assert votes_of("labelstudio", task) == [
        Vote("Say hi", "hi", "bye", "ann@example.com"),
        Vote("Say hi", "bye", "hi", "4"),
    ]
    assert (
        reason("labelstudio", {**task, "annotations": task["annotations"][2:]})
        == "labelstudio: no completed pairwise annotation"
    )
    assert (
        reason("labelstudio", {**task, "data": {"prompt": "x"}})
        == "labelstudio: data lacks a prompt and two answers"
    )


def test_ratings_aggregate_per_response_and_count_what_gives_no_pair():
    r = [
        Rating("p", "good", "a", 5),
        Rating("p", "good", "b", 4),
        Rating("p", "bad", "a", 1),
        Rating("p", "meh", "a", 1),
        Rating("q", "alone", "a", 3),
    ]
    votes, unpaired = rating_pairs(r)
    assert votes == [
        Vote("p", "good", "bad", MEAN_RATING, 3.5),
        Vote("p", "good", "meh", MEAN_RATING, 3.5),
    ]
    assert unpaired == {"tied_pairs": 1, "single_responses": 1}
    assert rating({"prompt": "p", "response": "r", "rating": "4.5"}).value == 4.5
    for bad, why in [
        ("x", "rating: not a number"),
        ("nan", "rating: not a number"),
        (True, "rating: not a number"),
        ("", "rating: missing"),
    ]:
        with pytest.raises(Reject, match=why):
            rating({"prompt": "p", "response": "r", "rating": bad})


@pytest.mark.parametrize(
    "row, fmt",
    [
        (HH, "hh"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "trl"),
        ({"chosen": "x y", "rejected": "x z"}, "trl"),
        ({"info": {}, "summaries": [], "choice": 0}, "summarize"),
        ({"history": "h", "human_ref_A": "a", "human_ref_B": "b", "labels": 1}, "shp"),
        ({"instruction": "i", "output_1": "a", "output_2": "b", "preference": 1}, "alpacafarm"),
        ({"prompt": "p", "response": "r", "rating": 3}, "ratings"),
        ({"data": {}, "annotations": []}, "labelstudio"),
        ({"text": "a corpus line"}, None),
    ],
)
def test_detect(row, fmt):
    assert detect(row) == fmt
