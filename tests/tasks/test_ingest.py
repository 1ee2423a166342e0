"""Reading raw files: every input record is either clean or quarantined with its reason."""

import json

import pytest

from tasks.ingest import ingest_dataset, suites
from tasks.validation import GateError

SUITES = suites(max_chars=200, max_doc_chars=1000)


@pytest.fixture(scope="module")
def gx():
    from tasks.validation import new_context

    return new_context()


def test_jsonl_with_broken_lines_accounts_for_every_record(tmp_path, gx):
    d = tmp_path / "sft"
    d.mkdir()
    lines = [json.dumps({"prompt": f"p{i}", "response": f"r{i}"}).encode() for i in range(20)]
    lines[3] = b'{"prompt": "p3", "response": '  # truncated JSON
    lines[7] = b'{"prompt": "caf\xe9", "response": "x"}'  # Latin-1, not UTF-8
    lines[11] = b'["a", "list"]'
    (d / "demos.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    folder, suffixes, suite = SUITES["sft"]
    out = ingest_dataset(tmp_path, folder, suffixes, suite, 0.2, gx)
    assert len(out.clean) + len(out.quarantined) == 20
    reasons = dict(zip(out.quarantined["_record"], out.quarantined["reason"]))
    assert reasons["demos.jsonl:4"].startswith("not valid JSON")
    assert reasons["demos.jsonl:8"] == "not valid UTF-8"
    assert reasons["demos.jsonl:12"] == "not a JSON object"


def test_text_corpus_documents_and_bad_bytes(tmp_path, gx):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.txt").write_bytes(b"first doc\nstill first\n\nsecond \xff doc\n\n\nthird\n")
    folder, suffixes, suite = SUITES["corpus"]
    out = ingest_dataset(tmp_path, folder, suffixes, suite, 0.5, gx)
    assert out.clean["text"].tolist() == ["first doc\nstill first", "third"]
    assert out.quarantined[["_record", "reason"]].values.tolist() == [["a.txt:4", "not valid UTF-8"]]


def test_csv_and_parquet_are_read_with_record_numbers(tmp_path, gx):
    import pandas as pd

    d = tmp_path / "sft"
    d.mkdir()
    pd.DataFrame({"prompt": ["p1", "p1"], "response": ["a", "a"]}).to_csv(d / "x.csv", index=False)
    pd.DataFrame({"prompt": ["p3"], "response": ["c"]}).to_parquet(d / "y.parquet")
    folder, suffixes, suite = SUITES["sft"]
    out = ingest_dataset(tmp_path, folder, suffixes, suite, 0.5, gx)
    assert out.clean["_record"].tolist() == ["x.csv:2", "y.parquet:1"]
    assert out.quarantined["_record"].tolist() == ["x.csv:3"]


def test_missing_dataset_is_a_clear_error(tmp_path, gx):
    folder, suffixes, suite = SUITES["sft"]
    with pytest.raises(GateError, match=r"sft: no input files \(.jsonl, .json, .csv, .parquet\)"):
        ingest_dataset(tmp_path, folder, suffixes, suite, 0.2, gx)
