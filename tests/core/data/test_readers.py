"""Files as people export them: every row comes back, readable or with the reason it is not."""

import gzip
import json

import pandas as pd
import pytest

from rlhf.core.data.readers import read_records
from rlhf.core.settings import UserError


def rows(path):
    return [(r.ref, r.row, r.error) for r in read_records(path)]


def test_jsonl_with_bom_crlf_blank_lines_and_a_truncated_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"a": "caf\xc3\xa9 \xf0\x9f\x98\x80"}\r\n\r\n{"a": 2}\r\n{"a": "cut'
    )
    assert rows(path) == [
        ("x.jsonl:1", {"a": "café 😀"}, None),
        ("x.jsonl:3", {"a": 2}, None),
        ("x.jsonl:4", None, "not valid JSON (Unterminated string starting at)"),
    ]


def test_jsonl_bad_bytes_and_non_objects_are_kept_with_reasons(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": "caf\xe9"}\n[1, 2]\n{"a": "' + b"y" * 200_000 + b'"}\n')
    got = list(read_records(path))
    assert [r.error for r in got] == ["not valid UTF-8", "not a JSON object", None]
    assert got[0].raw == '{"a": "caf\ufffd"}' and len(got[2].row["a"]) == 200_000


def test_jsonl_rows_are_what_the_stdlib_parses(tmp_path):
    """Text rows take a faster parser; rows it would read differently (integers past 64 bits,
    NaN, escaped lone surrogates) must still come back exactly as json.loads gives them."""
    lines = [
        '{"chosen": "a \\u00e9\\t\\"q\\"", "rejected": "b", "k": "\\ud83d\\ude00"}',
        '{"id": 123456789012345678901234567890, "x": "y"}',
        '{"m": NaN, "n": -0.0, "o": 1e400}',
        '{"a": "\\ud800"}',
        '{"a": "x", "a": "y"}',
    ]
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = [r.row for r in read_records(path)]
    assert got == [json.loads(line) for line in lines[:2]] + [got[2]] + [
        json.loads(line) for line in lines[3:]
    ]
    assert type(got[1]["id"]) is int and got[2]["m"] != got[2]["m"] and got[2]["o"] == 1e400


def test_gzip_and_json_array_and_json_lines_named_json(tmp_path):
    with gzip.open(tmp_path / "x.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write('{"a": 1}\n{"a": 2}\n')
    assert [r.row for r in read_records(tmp_path / "x.jsonl.gz")] == [{"a": 1}, {"a": 2}]
    (tmp_path / "arr.json").write_text(json.dumps([{"a": 1}, "oops"]))
    assert rows(tmp_path / "arr.json") == [
        ("arr.json:1", {"a": 1}, None),
        ("arr.json:2", None, "not a JSON object"),
    ]
    (tmp_path / "lines.json").write_text('{"a": 1}\n{"a": 2}\n')
    assert [r.ref for r in read_records(tmp_path / "lines.json")] == [
        "lines.json:1",
        "lines.json:2",
    ]


def test_csv_with_bom_crlf_quoted_newlines_and_bad_bytes(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(
        b'\xef\xbb\xbfprompt,rating\r\n"two\r\nlines",5\r\nbad \xff,3\r\nok,1,extra\r\nlast,2\r\n'
    )
    assert rows(path) == [
        ("x.csv:2", {"prompt": "two\r\nlines", "rating": "5"}, None),
        ("x.csv:4", None, "not valid UTF-8"),
        ("x.csv:5", None, "more fields than the header"),
        ("x.csv:6", {"prompt": "last", "rating": "2"}, None),
    ]


def test_parquet_rows_stream_in_batches(tmp_path):
    pd.DataFrame({"a": range(5000)}).to_parquet(tmp_path / "x.parquet")
    got = list(read_records(tmp_path / "x.parquet"))
    assert len(got) == 5000 and got[-1].ref == "x.parquet:5000" and got[-1].row == {"a": 4999}


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jsonl", b"\n\n", "empty.jsonl: no records"),
        (
            "fake.jsonl.gz",
            b"not gzip",
            "fake.jsonl.gz: unreadable (damaged or truncated compressed data: Not a gzipped file",
        ),
        ("x.txt", b"hello", "x.txt: unknown file type"),
        (
            "broken.json",
            b'[{"a": 1}',
            "broken.json: not valid JSON (Expecting ',' delimiter at line 1)",
        ),
        ("broken.parquet", b"PAR1nonsense", "broken.parquet: not a readable Parquet file"),
    ],
)
def test_whole_file_faults_are_one_line_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError) as e:
        list(read_records(tmp_path / name))
    assert str(e.value).startswith(f"{tmp_path}/{message}")
    assert "\n" not in str(e.value)
