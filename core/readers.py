"""Files -> records, streamed, every input row accounted for.

A record is one input row: a JSONL line, a JSON array element, a CSV row, a Parquet row. A
row that cannot be read (bad JSON, bytes that are not UTF-8, not an object) is still yielded,
with its raw text and the reason, so it is quarantined rather than lost. A file that cannot be
read at all (missing, not gzip, no rows) is a one-line UserError.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from rlhf.core.io import is_utf8
from rlhf.core.settings import UserError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")  # each optionally .gz (not parquet)
PARQUET_BATCH = 2048


@dataclass(frozen=True)
class Record:
    ref: str  # "<file>:<line or row>"
    row: dict | None  # the parsed object; None when unreadable
    raw: str | None = None  # the text of an unreadable row
    error: str | None = None  # why it could not be read


def kind_of(path: Path) -> str:
    """jsonl | json | csv | parquet, from the name (a trailing .gz is allowed)."""
    name = path.name.lower().removesuffix(".gz")
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix[1:]
    raise UserError(f"{path}: unknown file type (expected {', '.join(SUFFIXES)}, optionally .gz)")


def _open_binary(path: Path):
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return path.open("rb")


def _json_lines(path: Path, stream) -> Iterator[Record]:
    for n, raw in enumerate(stream, start=1):
        if n == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM
        raw = raw.rstrip(b"\r\n")
        if not raw.strip():
            continue
        ref = f"{path.name}:{n}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield Record(ref, None, raw.decode("utf-8", "replace"), "not valid UTF-8")
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield Record(ref, None, text, f"not valid JSON ({e.msg})")
            continue
        yield (
            Record(ref, obj)
            if isinstance(obj, dict)
            else Record(ref, None, text, "not a JSON object")
        )


def _json_document(path: Path, stream) -> Iterator[Record]:
    """A JSON array of objects (read whole: JSON arrays cannot be streamed with the stdlib;
    use JSONL for large files). A file of one object per line is read as JSONL."""
    data = stream.read()
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON lines in a .json file
            yield from _json_lines(path, io.BytesIO(data))
            return
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    rows = doc if isinstance(doc, list) else [doc]
    for i, row in enumerate(rows, start=1):
        ref = f"{path.name}:{i}"
        yield (
            Record(ref, row)
            if isinstance(row, dict)
            else Record(ref, None, json.dumps(row, ensure_ascii=False), "not a JSON object")
        )


def _csv_rows(path: Path, stream) -> Iterator[Record]:
    # surrogateescape keeps bad bytes as lone surrogates, so one bad row is quarantined
    # instead of failing the file.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.DictReader(text)
    start = 2
    for row in reader:
        ref = f"{path.name}:{start}"
        start = reader.line_num + 1
        values = [v for v in row.values() if isinstance(v, str)]
        if not all(is_utf8(v) for v in values):
            raw = ",".join(values).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            yield Record(ref, None, raw, "not valid UTF-8")
        elif None in row:
            yield Record(ref, None, json.dumps(row, default=str), "more fields than the header")
        else:
            yield Record(ref, {k: v for k, v in row.items() if v is not None})


def stream_parquet(path: Path, batch_size: int = PARQUET_BATCH):
    """Record batches of a Parquet file, read one at a time (pyarrow's pre-buffering and
    read-ahead threads would otherwise hold a growing share of the file in memory)."""
    try:
        f = pq.ParquetFile(path, pre_buffer=False)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise UserError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    yield from f.iter_batches(batch_size=batch_size, use_threads=False)


def _parquet_rows(path: Path) -> Iterator[Record]:
    n = 0
    for batch in stream_parquet(path):
        for row in batch.to_pylist():
            n += 1
            yield Record(f"{path.name}:{n}", row)


def read_records(path: str | Path) -> Iterator[Record]:
    """Every row of one file, in order; raises UserError if the file has none."""
    path = Path(path)
    kind = kind_of(path)
    count = 0
    try:
        if kind == "parquet":
            rows = _parquet_rows(path)
            for record in rows:
                count += 1
                yield record
        else:
            with _open_binary(path) as stream:
                reader = {"jsonl": _json_lines, "json": _json_document, "csv": _csv_rows}[kind]
                for record in reader(path, stream):
                    count += 1
                    yield record
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(
            f"{path}: unreadable ({str(e).splitlines()[0] or type(e).__name__})"
        ) from None
    if count == 0:
        raise UserError(f"{path}: no records")
