"""Importing exports into the feedback dataset: every row accounted for, batches appended and
never rewritten, the split leak-free, the same input giving the same bytes."""

import csv
import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf.core.data.validation import GateError
from rlhf.core.feedback.dataset import Splits, add_batch, normalise_prompt
from rlhf.core.feedback.pairs import read_pairs
from rlhf.core.io import digest_path
from rlhf.core.settings import Limits, UserError

LIMITS = Limits(max_chars=300, max_quarantine_fraction=0.5)


def add(sources, dataset, fmt="auto", limits=LIMITS, test_fraction=0.3):
    return add_batch([Path(s) for s in sources], fmt, dataset, limits, Splits(test_fraction))


def jsonl(path: Path, rows, end="\n", gz=False) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + end for r in rows).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def quarantine(dataset: Path) -> dict[str, str]:
    lines = filter(None, (dataset / "quarantine.jsonl").read_text(encoding="utf-8").split("\n"))
    return {q["record"]: q["reason"] for q in map(json.loads, lines)}


def pairs(dataset: Path) -> pd.DataFrame:
    return pd.read_parquet(dataset / "pairs.parquet")


# --------------------------------------------------------------------- one fixture per format
def hh_file(d: Path) -> Path:
    rows = [
        {
            "chosen": f"\n\nHuman: Question {i} ✨?\n\nAssistant: Good answer {i} 😀",
            "rejected": f"\n\nHuman: Question {i} ✨?\n\nAssistant: Bad answer {i}",
        }
        for i in range(8)
    ]
    rows[2]["rejected"] = "\n\nHuman: Another question?\n\nAssistant: Bad"
    rows[3]["chosen"] = "\n\nHuman: Question 3 ✨?\n\nAssistant:"
    del rows[4]["rejected"]
    path = jsonl(d / "hh.jsonl.gz", rows, gz=True)
    return path


def test_hh_gzip_with_mismatched_prompts_and_empty_responses(tmp_path):
    s = add([hh_file(tmp_path)], tmp_path / "fb")
    assert (s["total"], s["imported"], s["quarantined"]) == (8, 5, 3)
    assert quarantine(tmp_path / "fb") == {
        "hh.jsonl.gz:3": "hh: chosen and rejected prompts differ",
        "hh.jsonl.gz:4": "hh: empty final response (chosen)",
        "hh.jsonl.gz:5": "rejected: missing",
    }
    p = pairs(tmp_path / "fb")
    assert p["prompt"][0] == "Question 0 ✨?" and p["chosen"][0] == "Good answer 0 😀"
    assert s["formats"] == {"hh.jsonl.gz": "hh"}


def test_trl_jsonl_with_bom_crlf_long_lines_wrong_types_and_a_truncated_tail(tmp_path):
    rows = [
        {"prompt": f"p{i}", "chosen": f"yes {i}", "rejected": f"no {i}", "annotator": "a"}
        for i in range(10)
    ]
    rows[1]["chosen"] = "y" * 301  # longer than max_chars
    rows[2]["rejected"] = 42
    rows[3]["rejected"] = rows[3]["chosen"]
    path = tmp_path / "trl.jsonl"
    jsonl(path, rows, end="\r\n")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes() + b'{"prompt": "p10", "chosen": "tr')
    s = add([path], tmp_path / "fb")
    assert (s["total"], s["imported"], s["quarantined"]) == (11, 7, 4)
    assert quarantine(tmp_path / "fb") == {
        "trl.jsonl:2": "chosen: length outside [1, 300]",
        "trl.jsonl:3": "rejected: not a string",
        "trl.jsonl:4": "chosen == rejected",
        "trl.jsonl:11": "not valid JSON (Unterminated string starting at)",
    }


def test_conversational_trl_from_parquet(tmp_path):
    turn = [{"role": "user", "content": "Hi 👋"}]
    df = pd.DataFrame(
        {
            "prompt": [turn, turn],
            "chosen": [[{"role": "assistant", "content": "Hello"}]] * 2,
            "rejected": [
                [{"role": "assistant", "content": "Go"}],
                [{"role": "user", "content": "?"}],
            ],
        }
    )
    df.to_parquet(tmp_path / "conv.parquet")
    s = add([tmp_path / "conv.parquet"], tmp_path / "fb")
    assert (s["imported"], s["quarantined"]) == (1, 1)
    assert pairs(tmp_path / "fb")[["prompt", "chosen", "rejected"]].values.tolist() == [
        ["Hi 👋", "Hello", "Go"]
    ]


def test_summarize_json_array(tmp_path):
    row = {
        "info": {"post": "Long post", "title": "T", "subreddit": "s"},
        "worker": "w1",
        "summaries": [{"text": " short"}, {"text": " shorter"}],
        "choice": 1,
    }
    (tmp_path / "cmp.json").write_text(json.dumps([row, {**row, "choice": "1"}]))
    s = add([tmp_path / "cmp.json"], tmp_path / "fb")
    assert (s["imported"], s["reasons"]) == (1, {"choice: must be 0 or 1": 1})


def test_shp_csv_with_crlf_and_quoted_newlines(tmp_path):
    with (tmp_path / "shp.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(
            ["post_id", "history", "human_ref_A", "human_ref_B", "labels", "score_A", "score_B"]
        )
        w.writerow(["a", "Why\nis it?", "Because", "No idea", "1", "10", "2"])
        w.writerow(["b", "How?", "Like so", "Dunno", "0", "1", "5"])
        w.writerow(["c", "What?", "This", "That", "maybe", "1", "5"])
    s = add([tmp_path / "shp.csv"], tmp_path / "fb")
    assert (s["total"], s["imported"], s["reasons"]) == (3, 2, {"labels: not a number": 1})
    assert pairs(tmp_path / "fb")[["chosen", "margin"]].values.tolist() == [
        ["Because", 8.0],
        ["Dunno", 4.0],
    ]
    assert quarantine(tmp_path / "fb") == {"shp.csv:5": "labels: not a number"}


def test_alpacafarm_named_explicitly(tmp_path):
    rows = [
        {"instruction": "Add", "input": "1+1", "output_1": "2", "output_2": "3", "preference": 1},
        {"instruction": "Name one", "input": "", "output_1": "x", "output_2": "y", "preference": 2},
        {"instruction": "Tie", "input": "", "output_1": "x", "output_2": "y", "preference": 1.5},
    ]
    rows.append({**rows[2], "preference": "two"})
    s = add([jsonl(tmp_path / "af.jsonl", rows)], tmp_path / "fb", fmt="alpacafarm")
    assert (s["imported"], s["quarantined"], s["ties"]) == (3, 1, 1)
    table = pairs(tmp_path / "fb")
    assert table["tie"].tolist() == [False, False, True]
    kept = read_pairs(tmp_path / "fb" / "pairs.parquet")
    assert kept["prompt"].tolist() == ["Add\n\n1+1", "Name one"]


def test_ratings_rows_are_imported_even_when_they_give_no_pair(tmp_path):
    with (tmp_path / "r.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response", "annotator", "rating"])
        w.writerows(
            [
                ["p", "good", "a", 5],
                ["p", "good", "b", 4],
                ["p", "bad", "a", 2],
                ["p", "also bad", "b", 2],
                ["q", "alone", "a", 3],
                ["p", "bad", "c", "n/a"],
            ]
        )
    s = add([tmp_path / "r.csv"], tmp_path / "fb")
    assert (s["total"], s["imported"], s["quarantined"]) == (6, 5, 1)
    assert (s["pairs"], s["unpaired"]) == (
        2,
        {"invalid_pairs": 0, "single_responses": 1, "tied_pairs": 1},
    )
    assert pairs(tmp_path / "fb")["margin"].tolist() == [2.5, 2.5]


@pytest.mark.parametrize(
    "written", ["3", "+1.5", "2e0", " 4 ", "٣", "1_000", "１２", "nan", "inf", "0x1F"]
)
def test_a_rating_is_read_as_a_number_only_in_ascii_decimal(tmp_path, written):
    with (tmp_path / "r.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response", "annotator", "rating"])
        w.writerows([["p", "good", "a", 5], ["p", "bad", "a", 1], ["p", "other", "b", written]])
    s = add([tmp_path / "r.csv"], tmp_path / "fb")
    ascii_decimal = written in ("3", "+1.5", "2e0", " 4 ")
    assert s["quarantined"] == (0 if ascii_decimal else 1)
    if not ascii_decimal:
        assert quarantine(tmp_path / "fb") == {"r.csv:4": "rating: not a number"}


SAME_AS_READ = "chosen == rejected as read (Unicode NFC, whitespace, case)"


@pytest.mark.parametrize(
    "chosen, rejected, reason",
    [
        ("Café au lait.", "Cafe\u0301 au lait.", SAME_AS_READ),  # composed vs decomposed
        ("An answer.", "An answer.  \n", SAME_AS_READ),
        ("An  answer.", " An answer.", SAME_AS_READ),
        ("An answer.", "AN ANSWER.", SAME_AS_READ),
        ("An answer.", "An answer.", "chosen == rejected"),
        ("An answer.", "An answer!", None),
    ],
)
def test_answers_that_read_the_same_are_no_preference(tmp_path, chosen, rejected, reason):
    rows = [{"prompt": f"q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)]
    rows.append({"prompt": "Which?", "chosen": chosen, "rejected": rejected})
    s = add([jsonl(tmp_path / "votes.jsonl", rows)], tmp_path / "fb")
    assert quarantine(tmp_path / "fb") == ({"votes.jsonl:5": reason} if reason else {})
    assert s["pairs"] == (4 if reason else 5)


def test_case_counts_as_a_preference_when_the_settings_say_so(tmp_path):
    rows = [{"prompt": "Which?", "chosen": "An answer.", "rejected": "AN ANSWER."}]
    limits = Limits(max_chars=300, max_quarantine_fraction=0.5, ignore_case=False)
    s = add([jsonl(tmp_path / "votes.jsonl", rows)], tmp_path / "fb", limits=limits)
    assert (s["pairs"], s["quarantined"]) == (1, 0)


def test_labelstudio_export(tmp_path):
    tasks = [
        {
            "id": 1,
            "data": {"prompt": "Greet", "answer1": "Hi!", "answer2": "Hey."},
            "annotations": [
                {
                    "completed_by": 1,
                    "result": [{"type": "pairwise", "value": {"selected": "left"}}],
                },
                {
                    "completed_by": 2,
                    "result": [{"type": "pairwise", "value": {"selected": "right"}}],
                },
            ],
        },
        {
            "id": 2,
            "data": {"prompt": "Greet", "answer1": "Yo", "answer2": "Hello"},
            "annotations": [{"completed_by": 1, "was_cancelled": True}],
        },
    ]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    s = add([tmp_path / "ls.json"], tmp_path / "fb", limits=Limits(max_quarantine_fraction=0.5))
    assert (s["total"], s["imported"], s["pairs"]) == (2, 1, 2)
    stats = json.loads((tmp_path / "fb/annotators.json").read_text())
    assert stats["comparisons_with_conflicting_votes"] == 1
    assert stats["agreement"] == [
        {"annotator_a": "1", "annotator_b": "2", "overlap": 1, "agreement": 0.0}
    ]


# ------------------------------------------------------------------------ whole-file faults
@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", b"", "empty.jsonl: no records"),
        ("corrupt.jsonl.gz", b"\x1f\x8b\x08\x00garbage", "corrupt.jsonl.gz: unreadable"),
        (
            "corpus.jsonl",
            b'{"text": "hello"}\n',
            "corpus.jsonl: unknown feedback format (fields: text)",
        ),
    ],
)
def test_unreadable_empty_or_unknown_sources_fail_and_leave_nothing(
    tmp_path, name, content, message
):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        add([tmp_path / name], tmp_path / "fb")
    assert not list((tmp_path / "fb").glob("batches/*"))


def test_gate_fails_the_whole_import_and_keeps_earlier_batches(tmp_path):
    good = [{"prompt": f"p{i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    first = add([jsonl(tmp_path / "good.jsonl", good)], tmp_path / "fb")
    bad = [{"prompt": f"q{i}", "chosen": "a", "rejected": "a" if i % 2 else "b"} for i in range(10)]
    with pytest.raises(GateError) as e:
        add(
            [jsonl(tmp_path / "bad.jsonl", bad)],
            tmp_path / "fb",
            limits=Limits(max_quarantine_fraction=0.2),
        )
    assert str(e.value) == (
        f"{tmp_path}/bad.jsonl: 5 of 10 records rejected (50%, limit 20%): "
        "chosen == rejected: 5 (records bad.jsonl:2, bad.jsonl:4, bad.jsonl:6, "
        "bad.jsonl:8, bad.jsonl:10)"
    )
    assert [d.name for d in (tmp_path / "fb/batches").iterdir()] == [first["batch"]]
    assert digest_path(tmp_path / "fb/pairs.parquet") == first["pairs_digest"]


# ---------------------------------------------------------------- versioning and merging
def test_batches_append_and_the_same_batch_twice_adds_nothing(tmp_path):
    a = jsonl(
        tmp_path / "a.jsonl",
        [{"prompt": f"p{i}", "chosen": "x", "rejected": "y"} for i in range(6)],
    )
    b = jsonl(
        tmp_path / "b.jsonl",
        [{"prompt": f"p{i}", "chosen": "x", "rejected": "y"} for i in range(4, 9)],
    )
    first = add([a], tmp_path / "fb")
    batch_one = tmp_path / "fb/batches" / first["batch"]
    before = digest_path(batch_one)
    second = add([b], tmp_path / "fb")
    assert (second["pairs"], second["merged"], second["dataset_pairs"]) == (3, 2, 9)
    assert digest_path(batch_one) == before  # never rewritten
    again = add([b], tmp_path / "fb")
    assert again["already_imported"] and again["added"] == 0
    assert again["pairs_digest"] == second["pairs_digest"]
    fresh = add([a], tmp_path / "fresh")
    fresh = add([b], tmp_path / "fresh")
    assert fresh["pairs_digest"] == second["pairs_digest"]  # same batches, same bytes
    assert pairs(tmp_path / "fb")["prompt"].tolist() == [f"p{i}" for i in range(9)]


def test_repeats_within_a_file_are_duplicates_across_files_merged_and_conflicts_kept(tmp_path):
    row = {"prompt": "p", "chosen": "x", "rejected": "y", "annotator": "ann-1"}
    one = jsonl(tmp_path / "one.jsonl", [row, row, {**row, "prompt": "q"}])
    other = jsonl(
        tmp_path / "other.jsonl",
        [row, {**row, "chosen": "y", "rejected": "x", "annotator": "ann-2"}],
    )
    s = add([one, other], tmp_path / "fb")
    assert quarantine(tmp_path / "fb") == {"one.jsonl:2": "duplicate of an earlier record"}
    assert (s["total"], s["imported"], s["quarantined"], s["pairs"], s["merged"]) == (5, 4, 1, 3, 1)
    stats = json.loads((tmp_path / "fb/annotators.json").read_text())
    assert stats["comparisons_with_conflicting_votes"] == 1
    assert stats["agreement"] == [
        {"annotator_a": "ann-1", "annotator_b": "ann-2", "overlap": 1, "agreement": 0.0}
    ]
    assert [a["votes"] for a in stats["annotators"]] == [2, 1]


# --------------------------------------------------------------------------------- split
def test_split_never_puts_one_prompt_on_both_sides(tmp_path):
    def variants(i):
        return [
            f"Question {i}?",
            f"  question {i}?  ",
            f"\n\nHuman: Question {i}?\n\nAssistant:",
        ]  # noqa: E731

    rows = [
        {"prompt": p, "chosen": f"a{j}", "rejected": f"b{j}"}
        for i in range(60)
        for j, p in enumerate(variants(i))
    ]
    add([jsonl(tmp_path / "x.jsonl", rows)], tmp_path / "fb", test_fraction=0.5)
    p = pairs(tmp_path / "fb").assign(key=lambda d: d["prompt"].map(normalise_prompt))
    assert p.groupby("key")["split"].nunique().max() == 1
    assert 10 < (p["split"] == "test").sum() / 3 < 50
    halves = Splits(0.5)
    assert halves.of("Question 1?") == halves.of("\n\nHuman: question   1?\n\nAssistant:")


def test_the_judge_split_is_disjoint_from_training_and_stays_put_as_data_grows():
    prompts = [f"Question {i}?" for i in range(4000)]
    splits = Splits(test=0.15, judge=0.2)
    assigned = [splits.of(p) for p in prompts]
    for name, share in (("test", 0.15), ("judge", 0.2), ("train", 0.65)):
        assert abs(assigned.count(name) / len(prompts) - share) < 0.03, name
    # a prompt's split is a function of the prompt alone, whatever else is in the data
    assert [splits.of(p) for p in reversed(prompts)] == assigned[::-1]
    # and turning the judge split on takes its prompts from train only: test is unchanged
    assert [Splits(0.15).of(p) == "test" for p in prompts] == [a == "test" for a in assigned]


# ------------------------------------------------------------------------ property test
TEXT = st.one_of(
    st.text(max_size=12),
    st.just(""),
    st.just("\ud800"),
    st.just("😀 ünïcode"),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
)
ROW = st.one_of(
    st.fixed_dictionaries(
        {"prompt": TEXT, "chosen": TEXT, "rejected": TEXT},
        optional={"annotator": st.sampled_from(["a", "b", ""])},
    ),
    st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "extra"]), TEXT, max_size=4),
    st.just("not json"),
    st.integers(),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(ROW, min_size=1, max_size=30))
def test_every_row_is_imported_or_quarantined(tmp_path_factory, rows):
    d = tmp_path_factory.mktemp("prop")
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (d / "x.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        s = add([d / "x.jsonl"], d / "fb", fmt="trl", limits=Limits(max_quarantine_fraction=1.0))
    except UserError as e:  # nothing readable as a row at all
        assert "no records" in str(e)
        return
    assert s["total"] == len(rows) == s["imported"] + s["quarantined"]
    assert sum(s["reasons"].values()) == s["quarantined"]
    assert len(quarantine(d / "fb")) == s["quarantined"]
    assert len(pairs(d / "fb")) == s["pairs"]
