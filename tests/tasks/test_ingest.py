"""Reading raw files: every input record is either clean or quarantined with its reason."""

import json

import pandas as pd
import pytest

from rlhf.core.data.validation import GateError, new_context
from rlhf.core.settings import Ingest
from rlhf.tasks.ingest import datasets, ingest_dataset

DATASETS = datasets(Ingest(max_chars=200, max_doc_chars=1000))


@pytest.fixture(scope="module")
def gx():
    return new_context()


def test_jsonl_with_broken_lines_accounts_for_every_record(tmp_path, gx):
    d = tmp_path / "sft"
    d.mkdir()
    lines = [json.dumps({"prompt": f"p{i}", "response": f"r{i}"}).encode() for i in range(20)]
    lines[3] = b'{"prompt": "p3", "response": '  # truncated JSON
    lines[7] = b'{"prompt": "caf\xe9", "response": "x"}'  # Latin-1, not UTF-8
    lines[11] = b'["a", "list"]'
    (d / "demos.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    dataset = DATASETS["sft"]
    out = ingest_dataset(dataset, tmp_path / dataset.folder, 0.2, gx)
    assert len(out.clean) + len(out.quarantined) == 20
    reasons = dict(zip(out.quarantined["_record"], out.quarantined["reason"]))
    assert reasons["demos.jsonl:4"].startswith("not valid JSON")
    assert reasons["demos.jsonl:8"] == "not valid UTF-8"
    assert reasons["demos.jsonl:12"] == "not a JSON object"


def test_text_corpus_documents_and_bad_bytes(tmp_path, gx):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.txt").write_bytes(b"first doc\nstill first\n\nsecond \xff doc\n\n\nthird\n")
    dataset = DATASETS["corpus"]
    out = ingest_dataset(dataset, tmp_path / dataset.folder, 0.5, gx)
    assert out.clean["text"].tolist() == ["first doc\nstill first", "third"]
    assert out.quarantined[["_record", "reason"]].values.tolist() == [
        ["a.txt:4", "not valid UTF-8"]
    ]


def test_csv_and_parquet_are_read_with_record_numbers(tmp_path, gx):
    d = tmp_path / "sft"
    d.mkdir()
    pd.DataFrame({"prompt": ["p1", "p1"], "response": ["a", "a"]}).to_csv(d / "x.csv", index=False)
    pd.DataFrame({"prompt": ["p3"], "response": ["c"]}).to_parquet(d / "y.parquet")
    dataset = DATASETS["sft"]
    out = ingest_dataset(dataset, tmp_path / dataset.folder, 0.5, gx)
    assert out.clean["_record"].tolist() == ["x.csv:2", "y.parquet:1"]
    assert out.quarantined["_record"].tolist() == ["x.csv:3"]


def test_missing_dataset_is_a_clear_error(tmp_path, gx):
    dataset = DATASETS["sft"]
    with pytest.raises(GateError, match=r"sft: no input files \(.jsonl, .json, .csv, .parquet\)"):
        ingest_dataset(dataset, tmp_path / dataset.folder, 0.2, gx)


def test_sft_records_in_every_format_become_examples(tmp_path, gx):
    """prompt/response JSONL, an Alpaca JSON array (with and without input), chat JSONL
    (one example per reply): one table; records that fit no format are set aside by field."""
    d = tmp_path / "sft"
    d.mkdir()
    (d / "a.jsonl").write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    (d / "b.json").write_text(
        json.dumps(
            [
                {"instruction": "Name a colour.", "input": "", "output": "Blue.", "generator": "x"},
                {"instruction": "Translate.", "input": "chat", "output": "cat"},
                {"instruction": "No output here."},
            ]
        )
    )
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    (d / "c.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"messages": chat},
                {"messages": [{"role": "user", "content": "unanswered"}]},
                {"messages": [{"role": "bot", "content": "?"}]},
            ]
        )
        + "\n"
    )
    dataset = DATASETS["sft"]
    out = ingest_dataset(dataset, tmp_path / dataset.folder, 0.5, gx)
    rows = {r["_record"]: r for r in out.clean.to_dict("records")}
    assert (rows["a.jsonl:1"]["prompt"], rows["a.jsonl:1"]["context"]) == ("p", "[]")
    assert (rows["b.json:1"]["prompt"], rows["b.json:1"]["response"]) == ("Name a colour.", "Blue.")
    assert rows["b.json:2"]["prompt"] == "Translate.\n\nchat"
    assert json.loads(rows["c.jsonl:1 turn 1"]["context"]) == chat[:1]
    assert (rows["c.jsonl:1 turn 2"]["prompt"], rows["c.jsonl:1 turn 2"]["response"]) == (
        "Bye",
        "Goodbye.",
    )
    assert json.loads(rows["c.jsonl:1 turn 2"]["context"]) == chat[:3]
    reasons = dict(zip(out.quarantined["_record"], out.quarantined["reason"]))
    assert reasons == {
        "b.json:3": "output: missing",
        "c.jsonl:2": "messages: no assistant turn answering a user turn",
        "c.jsonl:3": "messages[1].role: expected one of system, user, assistant",
    }
    assert len(out.clean) + len(out.quarantined) == 1 + 2 + 2 + 3  # every example and record


def test_a_corpus_record_missing_its_field_is_named(tmp_path, gx):
    d = tmp_path / "corpus"
    d.mkdir()
    rows = [{"text": f"document {i}"} for i in range(9)] + [{"body": "no text field"}]
    (d / "docs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dataset = DATASETS["corpus"]
    out = ingest_dataset(dataset, tmp_path / dataset.folder, 0.2, gx)
    assert out.quarantined[["_record", "reason"]].values.tolist() == [
        ["docs.jsonl:10", "text: missing"]
    ]


def test_an_empty_corpus_or_one_that_is_not_utf8_stops_with_the_file_named(tmp_path, gx):
    d = tmp_path / "corpus"
    d.mkdir()
    dataset = DATASETS["corpus"]
    (d / "empty.txt").write_text("\n\n")
    with pytest.raises(GateError, match=r"corpus/empty.txt: no records"):
        ingest_dataset(dataset, tmp_path / dataset.folder, 0.2, gx)
    (d / "empty.txt").unlink()
    (d / "latin1.txt").write_bytes("café au lait\n\nthé\n".encode("latin-1"))
    with pytest.raises(
        GateError,
        match=r"corpus: 2 of 2 records rejected .*not valid UTF-8: 2 "
        r"\(records latin1.txt:1, latin1.txt:3\)",
    ):
        ingest_dataset(dataset, tmp_path / dataset.folder, 0.2, gx)


def test_prompt_fields_a_reward_function_reads_are_kept_and_required(tmp_path, gx):
    d = tmp_path / "prompts"
    d.mkdir()
    rows = [{"prompt": "2+2?", "answer": 4}, {"prompt": "3+3?"}, {"prompt": "1+1?", "answer": None}]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = datasets(Ingest(prompt_fields=["answer"]))["prompts_train"]
    out = ingest_dataset(dataset, tmp_path / dataset.folder, 0.9, gx)
    assert out.clean[["prompt", "answer"]].to_dict("records") == [{"prompt": "2+2?", "answer": 4}]
    reasons = dict(zip(out.quarantined["_record"], out.quarantined["reason"]))
    assert reasons == {"train.jsonl:2": "answer: missing", "train.jsonl:3": "answer: missing"}

    (d / "train.jsonl").write_text(json.dumps({"prompt": "2+2?"}) + "\n")
    with pytest.raises(GateError, match="answer"):
        ingest_dataset(dataset, tmp_path / dataset.folder, 0.9, gx)
