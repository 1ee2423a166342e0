"""Each GX gate fed broken data: the rows land in quarantine with the right reason, or the
gate fails with a one-line report naming the file, the reason and the records."""

import pandas as pd
import pytest

from rlhf.core.data.validation import GateError, Suite, new_context, validate

PAIRS = Suite(
    "pairs",
    ("prompt", "chosen", "rejected"),
    text=("prompt", "chosen", "rejected"),
    distinct=("chosen", "rejected"),
    unique=("prompt", "chosen", "rejected"),
    max_chars=20,
)


def frame(rows):
    return pd.DataFrame([{**r, "_record": f"f.jsonl:{i}"} for i, r in enumerate(rows, 1)])


def good(i):
    return {"prompt": f"p{i}", "chosen": "yes", "rejected": "no"}


@pytest.fixture(scope="module")
def gx():
    return new_context()


@pytest.mark.parametrize(
    "broken, reason",
    [
        ({"prompt": None, "chosen": "a", "rejected": "b"}, "prompt: missing"),
        (
            {"prompt": "p", "chosen": "", "rejected": "b"},
            "chosen: length outside [1, 20]; chosen: blank",
        ),
        ({"prompt": "p", "chosen": " \t\r\n", "rejected": "b"}, "chosen: blank"),
        ({"prompt": "p", "chosen": "a", "rejected": "x" * 21}, "rejected: length outside [1, 20]"),
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "chosen == rejected"),
    ],
)
def test_row_rules_quarantine_with_reason(gx, broken, reason):
    df = frame([good(i) for i in range(9)] + [broken])
    out = validate(df, PAIRS, "data/feedback", max_fraction=0.2, ctx=gx)
    assert len(out.clean) == 9 and len(out.quarantined) == 1
    assert out.quarantined.iloc[0]["reason"] == reason
    assert out.quarantined.iloc[0]["_record"] == "f.jsonl:10"
    assert out.statistics == {"records": 10, "clean": 9, "quarantined": 1}


def test_duplicates_keep_the_first_and_quarantine_the_rest(gx):
    df = frame([good(1), good(2), good(1), good(1)])
    out = validate(df, PAIRS, "data/feedback", max_fraction=0.6, ctx=gx)
    assert out.clean["_record"].tolist() == ["f.jsonl:1", "f.jsonl:2"]
    assert set(out.quarantined["reason"]) == {"duplicate of an earlier record"}


def test_gate_fails_over_threshold_with_a_one_line_report(gx):
    df = frame(
        [
            good(1),
            good(2),
            {"prompt": "p", "chosen": "s", "rejected": "s"},
            {"prompt": None, "chosen": "a", "rejected": "b"},
        ]
    )
    with pytest.raises(GateError) as e:
        validate(df, PAIRS, "data/feedback", max_fraction=0.2, ctx=gx)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("data/feedback: 2 of 4 records rejected (50%, limit 20%)")
    assert "chosen == rejected: 1 (records f.jsonl:3)" in msg
    assert "prompt: missing: 1 (records f.jsonl:4)" in msg


def test_unreadable_records_count_towards_the_gate(gx):
    prior = pd.DataFrame([{"_record": "f.jsonl:9", "reason": "not valid JSON"}] * 3)
    with pytest.raises(GateError, match="not valid JSON: 3"):
        validate(frame([good(1), good(2)]), PAIRS, "data/feedback", 0.5, prior=prior, ctx=gx)


def test_missing_column_and_empty_table_stop_the_gate(gx):
    df = frame([good(1)]).drop(columns=["rejected"])
    with pytest.raises(
        GateError, match=r"data/feedback: missing column\(s\) rejected \(found: prompt, chosen\)"
    ):
        validate(df, PAIRS, "data/feedback", 0.2, ctx=gx)
    with pytest.raises(GateError, match="data/feedback: no records"):
        validate(
            frame([]).reindex(columns=["prompt", "chosen", "rejected", "_record"]),
            PAIRS,
            "data/feedback",
            0.2,
            ctx=gx,
        )
