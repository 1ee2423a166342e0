"""Files -> records, streamed, every input row accounted for, within bounds.

A record is one input row: a JSONL line, a JSON array element, a CSV row, a Parquet row. A
row that cannot be read (bad JSON, bytes that are not UTF-8, not an object, larger or deeper
than the bounds) is still yielded, with the reason and a truncated copy of its text, so it is
quarantined rather than lost. A file that cannot be read at all (missing, not gzip, no rows,
more bytes than the bounds once decompressed, a damaged or truncated compressed stream) is
a one-line UserError.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from rlhf.core.io import is_utf8, regular_file, shown
from rlhf.core.settings import Bounds, UserError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")  # each optionally compressed (not parquet)
COMPRESSED: dict[str, Callable[..., Any]] = {  # suffix -> opener
    ".gz": gzip.open,
    ".bz2": bz2.open,
    ".xz": lzma.open,
}
# what a damaged or truncated compressed stream raises (gzip's and bz2's are OSErrors)
DECOMPRESSION = (zlib.error, lzma.LZMAError, EOFError)
PARQUET_BATCH = 2048
KEEP = 4096  # characters of an oversized or unreadable record kept in the quarantine
DEFAULTS = Bounds()


@dataclass(frozen=True)
class Record:
    ref: str  # "<file>:<line or row>"
    row: dict | None  # the parsed object; None when unreadable
    raw: str | None = None  # the text of an unreadable row (at most KEEP characters)
    error: str | None = None  # why it could not be read


def unreadable(ref: str, raw: str | None, error: str) -> Record:
    return Record(ref, None, None if raw is None else raw[:KEEP], error)


def kind_of(path: Path) -> str:
    """jsonl | json | csv | parquet, from the name (a trailing .gz, .bz2 or .xz is allowed)."""
    name = path.name.lower()
    name = name.removesuffix(compression(path))
    for suffix in SUFFIXES:
        if name.endswith(suffix) and not (suffix == ".parquet" and compression(path)):
            return suffix[1:]
    raise UserError(
        f"{path}: unknown file type (expected {', '.join(SUFFIXES)}, the first three "
        f"optionally {', '.join(COMPRESSED)})"
    )


def compression(path: Path) -> str:
    """The compression suffix of a name ("" for none)."""
    return next((s for s in COMPRESSED if path.name.lower().endswith(s)), "")


class _Capped(io.RawIOBase):
    """A byte stream that raises UserError once more than `limit` bytes were read from it."""

    def __init__(self, inner, path: Path, limit: int):
        self.inner, self.path, self.limit, self.count = inner, path, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.inner.readinto(buffer)
        self.count += n
        if self.count > self.limit:
            raise UserError(
                f"{self.path}: more than {self.limit} bytes once decompressed "
                "(feedback.max_file_bytes)"
            )
        return n

    def close(self) -> None:
        self.inner.close()
        super().close()


def _open_binary(path: Path, bounds: Bounds):
    regular_file(path)  # a FIFO or a device would block or never end
    suffix = compression(path)
    inner = COMPRESSED[suffix](path, "rb") if suffix else path.open("rb")  # noqa: SIM115 (closed by the reader)
    return io.BufferedReader(_Capped(inner, path, bounds.max_file_bytes))


def _lines(stream, limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes, oversized): a line longer than limit yields its first bytes only,
    the rest is read past without being kept."""
    n = 0
    while line := stream.readline(limit + 1):
        n += 1
        if len(line) > limit and not line.endswith(b"\n"):
            while (more := stream.readline(1 << 20)) and not more.endswith(b"\n"):
                pass
            yield n, line[: KEEP * 4], True
        else:
            yield n, line, False


def _json_failure(e: Exception) -> str:
    """Why json.loads failed, without the text it failed on."""
    if isinstance(e, json.JSONDecodeError):
        return f"not valid JSON ({e.msg})"
    if isinstance(e, RecursionError):
        return "not valid JSON (nested too deep to parse)"
    return f"not valid JSON ({str(e).split(':')[0]})"  # e.g. an integer too long to convert


def _json_lines(path: Path, stream, bounds: Bounds) -> Iterator[Record]:
    for n, raw, oversized in _lines(stream, bounds.max_record_bytes):
        ref = f"{shown(path.name)}:{n}"
        if oversized:
            yield unreadable(
                ref,
                raw.decode("utf-8", "replace"),
                _too_large(bounds),
            )
            continue
        if n == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM
        if not raw or raw.isspace():
            continue
        obj = _fast_object(raw)
        if obj is not None:
            yield Record(ref, obj)
            continue
        raw = raw.rstrip(b"\r\n")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield unreadable(ref, raw.decode("utf-8", "replace"), "not valid UTF-8")
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as e:
            yield unreadable(ref, text, _json_failure(e))
            continue
        yield (
            Record(ref, obj)
            if isinstance(obj, dict)
            else unreadable(ref, text, "not a JSON object")
        )


def _fast_object(raw: bytes) -> dict | None:
    """The line parsed by orjson when that is exactly what json.loads gives: an object of
    strings (orjson reads integers past 64 bits as floats, so rows with numbers, and every
    line orjson refuses, take the stdlib's path and its error messages)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict) and all(type(v) is str for v in obj.values()):
        return obj
    return None


def _json_document(path: Path, stream, bounds: Bounds) -> Iterator[Record]:
    """A JSON array of objects (read whole: JSON arrays cannot be streamed with the stdlib;
    use JSONL for large files). A file of one object per line is read as JSONL."""
    data = stream.read(bounds.max_document_bytes + 1)
    if len(data) > bounds.max_document_bytes:
        raise UserError(
            f"{path}: a JSON document larger than {bounds.max_document_bytes} bytes "
            "(feedback.max_document_bytes); export large files as JSONL"
        )
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON lines in a .json file
            yield from _json_lines(path, io.BytesIO(data), bounds)
            return
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except (ValueError, RecursionError) as e:
        raise UserError(f"{path}: {_json_failure(e)}") from None
    rows = doc if isinstance(doc, list) else [doc]
    for i, row in enumerate(rows, start=1):
        ref = f"{shown(path.name)}:{i}"
        yield (
            Record(ref, row)
            if isinstance(row, dict)
            else unreadable(ref, preview(row), "not a JSON object")
        )


def _csv_rows(path: Path, stream, bounds: Bounds) -> Iterator[Record]:
    # surrogateescape keeps bad bytes as lone surrogates, so one bad row is quarantined
    # instead of failing the file.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    csv.field_size_limit(bounds.max_record_bytes)
    reader = csv.DictReader(text)
    start = 2
    while True:
        ref = f"{shown(path.name)}:{start}"
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # the reader goes on at the next line
            start = reader.line_num + 1
            yield unreadable(ref, None, f"not valid CSV ({e})")
            continue
        start = reader.line_num + 1
        values = [v for v in row.values() if isinstance(v, str)]
        if not all(is_utf8(v) for v in values):
            raw = ",".join(values).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            yield unreadable(ref, raw, "not valid UTF-8")
        elif None in row:
            yield unreadable(ref, preview(row), "more fields than the header")
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


def _batch_rows(batch) -> list[dict | str]:
    """A batch's rows as dicts; a row with a value Python cannot hold (a timestamp past year
    9999, say) becomes the reason instead."""
    try:
        return batch.to_pylist()
    except (ValueError, OverflowError, pa.ArrowException):
        pass
    rows: list[dict | str] = []
    for i in range(batch.num_rows):
        try:
            rows.append(batch.slice(i, 1).to_pylist()[0])
        except (ValueError, OverflowError, pa.ArrowException) as e:
            rows.append(f"unreadable value ({str(e).splitlines()[0][:200]})")
    return rows


def _parquet_rows(path: Path) -> Iterator[Record]:
    n = 0
    for batch in stream_parquet(path):
        for row in _batch_rows(batch):
            n += 1
            ref = f"{shown(path.name)}:{n}"
            yield unreadable(ref, None, row) if isinstance(row, str) else Record(ref, row)


def preview(obj: object) -> str:
    """The start of a record as text, whatever it holds."""
    try:
        return json.dumps(obj, ensure_ascii=False, default=str)[:KEEP]
    except (RecursionError, ValueError):
        return "(not shown: nested too deep)"


def oversize(row: dict, bounds: Bounds) -> tuple[int, str | None]:
    """A parsed record's size in characters, and why it is out of bounds (None: it is not).
    Walked without recursion, so no depth can overflow the stack."""
    if bounds.max_depth >= 2 and all(type(v) is str for v in row.values()):
        size = sum(map(len, row)) + sum(map(len, row.values()))  # the usual flat record
        return size, None if size <= bounds.max_record_bytes else _too_large(bounds)
    stack: list[tuple[object, int]] = [(row, 1)]
    size = 0
    while stack:
        value, depth = stack.pop()
        if depth > bounds.max_depth:
            return size, f"nested deeper than {bounds.max_depth} levels (feedback.max_depth)"
        if isinstance(value, dict):
            size += sum(len(str(k)) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((v, depth + 1) for v in value)
        else:
            size += len(value) if isinstance(value, str | bytes) else 8
        if size > bounds.max_record_bytes:
            return size, _too_large(bounds)
    return size, None


def _too_large(bounds: Bounds) -> str:
    return f"record larger than {bounds.max_record_bytes} bytes (feedback.max_record_bytes)"


def _rows(path: Path, kind: str, bounds: Bounds) -> Iterator[Record]:
    if kind == "parquet":
        yield from _parquet_rows(regular_file(path))
        return
    with _open_binary(path, bounds) as stream:
        reader = {"jsonl": _json_lines, "json": _json_document, "csv": _csv_rows}[kind]
        yield from reader(path, stream, bounds)


def read_records(path: str | Path, bounds: Bounds = DEFAULTS) -> Iterator[Record]:
    """Every row of one file, in order, each within bounds or unreadable with the reason;
    raises UserError if the file has none, or more than bounds.max_file_bytes of records."""
    path = Path(path)
    kind, compressed = kind_of(path), bool(compression(path))
    count = total = 0
    try:
        for record in _rows(path, kind, bounds):
            count += 1
            if record.row is not None:
                size, problem = oversize(record.row, bounds)
                total += size
                if problem:
                    record = unreadable(record.ref, preview(record.row), problem)
            if total > bounds.max_file_bytes:  # Parquet expands pages as it is read
                raise UserError(
                    f"{path}: more than {bounds.max_file_bytes} bytes of records "
                    "(feedback.max_file_bytes)"
                )
            yield record
    except (OSError, *DECOMPRESSION, pa.ArrowException, ValueError) as e:
        cause = (str(e).splitlines() or [""])[0][:200] or type(e).__name__
        if isinstance(e, DECOMPRESSION) or (compressed and isinstance(e, OSError) and not e.errno):
            cause = f"damaged or truncated compressed data: {cause}"  # e.g. gzip's CRC, bz2's
        after = f" after record {count}" if count else ""
        raise UserError(f"{path}: unreadable{after} ({cause})") from None
    if count == 0:
        raise UserError(f"{path}: no records")
