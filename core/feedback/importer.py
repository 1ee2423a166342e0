"""Records -> validated, de-duplicated votes, streamed to Parquet in chunks.

Each input row ends in exactly one place: imported (its votes are in the table, or were
already there) or quarantined with its reason. Rows are converted by their format, then the
votes of a chunk go through the Great Expectations suite (no empty or blank text, chosen !=
rejected, lengths within bounds, valid UTF-8); a row with a flagged vote is quarantined whole.
A vote repeated within one file is a duplicate (quarantined); a vote already imported from
another file or an earlier batch is merged (kept once). Memory stays flat in the file size:
only vote ids are kept between chunks (ratings are the exception: they are aggregated per
prompt, so a ratings file is held in memory).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlhf.core.data.readers import Record, read_records
from rlhf.core.data.validation import DUPLICATE, GateError, Suite, flag_rows, new_context, report
from rlhf.core.feedback.formats import (
    NAMES,
    Rating,
    Reject,
    Vote,
    detect,
    rating,
    rating_pairs,
    votes_of,
)
from rlhf.core.io import json_line, shown
from rlhf.core.settings import Limits, UserError

T = TypeVar("T")

CHUNK = 20000  # rows per GX validation and Parquet row group
PEEK = 50  # rows looked at to detect a file's format
FIELD = re.compile(r"[A-Za-z_][\w.-]{0,39}")
TEXT_COLUMNS = ["prompt", "chosen", "rejected"]
VOTE_COLUMNS = ["pair_id", "comparison_id", *Vote._fields, "source", "record"]


def vote_schema():
    kinds = {"margin": pa.float64(), "tie": pa.bool_()}
    return pa.schema([(c, kinds.get(c, pa.string())) for c in VOTE_COLUMNS])


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def pair_id(v: Vote) -> str:
    """One vote: this annotator preferred chosen to rejected for this prompt (or, a tie,
    judged them equal)."""
    return _hash(v.prompt, v.chosen, v.rejected, v.annotator, *(["tie"] if v.tie else []))


def comparison_id(v: Vote) -> str:
    """The item judged, whichever side won: prompt and the unordered pair of responses."""
    return _hash(v.prompt, *sorted((v.chosen, v.rejected)))


MIN_CHARS = 1  # an empty prompt or response is no feedback


def suite(limits: Limits, name: str, *text: str, distinct: tuple[str, str] | None = None) -> Suite:
    """The Great Expectations suite of an import's table of text columns."""
    return Suite(
        name,
        text,
        text=text,
        distinct=distinct,
        min_chars=MIN_CHARS,
        max_chars=limits.max_chars,
    )


def vote_suite(limits: Limits) -> Suite:
    base = suite(limits, "votes", "prompt", "chosen", "rejected", distinct=("chosen", "rejected"))
    folded = "Unicode NFC, whitespace" + (", case" if limits.ignore_case else "")
    reason = f"chosen == rejected as read ({folded})"
    return dataclasses.replace(base, read_distinct=("chosen_read", "rejected_read", reason))


def as_read(text: str, ignore_case: bool) -> str:
    """Text as a person reads it: Unicode NFC, whitespace runs as one space, trimmed, and (with
    ignore_case) case folded. Two answers equal so are no preference."""
    text = " ".join(unicodedata.normalize("NFC", text).split())
    return text.casefold() if ignore_case else text


@dataclass
class Tally:
    """Counts for one import; total == imported + quarantined, always."""

    total: int = 0
    imported: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # first records per reason
    pairs: int = 0  # votes written
    ties: int = 0  # of which ties (counted, kept; the stages that train leave them out)
    merged: int = 0  # votes already imported from another file or batch
    unpaired: Counter = field(default_factory=Counter)  # ratings that gave no pair
    formats: dict[str, str] = field(default_factory=dict)  # source -> format

    def reject(self, ref: str, reason: str) -> None:
        self.quarantined += 1
        self.reasons[reason] += 1
        refs = self.examples.setdefault(reason, [])
        if len(refs) < 5:
            refs.append(ref)

    def summary(self) -> dict:
        return {
            "total": self.total,
            "imported": self.imported,
            "quarantined": self.quarantined,
            "reasons": dict(sorted(self.reasons.items())),
            "pairs": self.pairs,
            "ties": self.ties,
            "merged": self.merged,
            "unpaired": dict(sorted(self.unpaired.items())),
            "formats": self.formats,
        }


class BatchWriter:
    """Writes one batch: votes.parquet (row groups of CHUNK) and quarantine.jsonl."""

    def __init__(self, out: Path, limits: Limits, known: Iterable[str] = ()):
        self.limits, self.tally = limits, Tally()
        self.gx = new_context()
        self.votes = pq.ParquetWriter(out / "votes.parquet", vote_schema())
        self.quarantine = (out / "quarantine.jsonl").open("w", encoding="utf-8")
        self.pending: list[tuple] = []  # rows of the next row group, in VOTE_COLUMNS order
        # vote id -> index of the source that gave it (-1: an earlier batch); ints stay small
        self.seen: dict[int, int] = {int(p, 16): -1 for p in known}

    def close(self) -> None:
        self._flush()
        self.votes.close()
        self.quarantine.close()

    def reject(self, source: str, record: Record, reason: str) -> None:
        self.tally.reject(record.ref, reason)
        line: dict[str, object] = {"source": source, "record": record.ref, "reason": reason}
        line.update({"row": record.row} if record.row is not None else {"raw": record.raw})
        self.quarantine.write(json_line(line))

    def rows(
        self, source: str, chunk: list[Record], convert: Callable[[dict], T]
    ) -> list[tuple[Record, T]]:
        """Convert a chunk's rows; unreadable and unconvertible ones are quarantined."""
        out: list[tuple[Record, T]] = []
        for record in chunk:
            self.tally.total += 1
            if record.row is None:
                self.reject(source, record, record.error or "unreadable")
                continue
            try:
                out.append((record, convert(record.row)))
            except Reject as e:
                self.reject(source, record, str(e))
            except Exception as e:  # noqa: BLE001 (a shape no converter foresaw: the row, not the import, fails)
                self.reject(source, record, f"unconvertible record ({type(e).__name__})")
        return out

    def vote_in_bounds(self, fmt: str, row: dict) -> list[Vote]:
        votes = votes_of(fmt, row)
        for v in votes:
            if v.margin is not None and abs(v.margin) > self.limits.max_margin:
                raise Reject(f"margin: beyond +-{self.limits.max_margin:g} (feedback.max_margin)")
        return votes

    def rating_in_bounds(self, row: dict) -> Rating:
        r = rating(row)
        low, high = self.limits.rating_range
        if not low <= r.value <= high:
            raise Reject(f"rating: outside [{low:g}, {high:g}] (feedback.rating_range)")
        return r

    def flag(self, df: pd.DataFrame, suite: Suite) -> dict[int, list[str]]:
        return flag_rows(self.gx, df, suite) if len(df) else {}

    # --------------------------------------------------------------------- pairwise rows
    def pairwise_chunk(self, source: str, index: int, fmt: str, chunk: list[Record]) -> None:
        rows = self.rows(source, chunk, functools.partial(self.vote_in_bounds, fmt))
        votes = [v for _, vs in rows for v in vs]
        flagged = self.flag(votes_frame(votes, self.limits), vote_suite(self.limits))
        at = 0
        for record, vs in rows:
            reasons = sorted({r for i in range(at, at + len(vs)) for r in flagged.get(i, [])})
            at += len(vs)
            if reasons:
                self.reject(source, record, "; ".join(reasons))
            else:
                self.keep(source, index, record, vs)

    def keep(self, source: str, index: int, record: Record, votes: list[Vote]) -> None:
        """Write the row's new votes; a row whose votes all repeat earlier ones of the same
        file is a duplicate, one whose votes came from elsewhere is merged."""
        fresh, same_file, elsewhere = [], 0, 0
        for v in votes:
            pid, origin = self.origin(v, index)
            if origin is None:
                fresh.append((pid, v))
            elif origin == index:
                same_file += 1
            else:
                elsewhere += 1
        if not fresh and same_file:
            self.reject(source, record, DUPLICATE)
            return
        self.tally.imported += 1
        self.tally.merged += elsewhere + same_file
        self.write(source, record.ref, fresh)

    def origin(self, v: Vote, index: int) -> tuple[str, int | None]:
        """The vote's id, and the source that gave it first (None: new, now recorded)."""
        pid = pair_id(v)
        key = int(pid, 16)
        if key in self.seen:
            return pid, self.seen[key]
        self.seen[key] = index
        return pid, None

    # ------------------------------------------------------------------------ ratings
    def ratings_chunk(self, source: str, chunk: list[Record], kept: list[Rating]) -> None:
        rows = self.rows(source, chunk, self.rating_in_bounds)
        df = pd.DataFrame([(r.prompt, r.response) for _, r in rows], columns=["prompt", "response"])
        flagged = self.flag(df, suite(self.limits, "ratings", "prompt", "response"))
        for i, (record, r) in enumerate(rows):
            if i in flagged:
                self.reject(source, record, "; ".join(flagged[i]))
            else:
                self.tally.imported += 1
                kept.append(r)

    def ratings_done(self, source: str, index: int, kept: list[Rating]) -> None:
        votes, unpaired = rating_pairs(kept)
        self.tally.unpaired.update(unpaired)
        flagged = self.flag(votes_frame(votes, self.limits), vote_suite(self.limits))
        self.tally.unpaired["invalid_pairs"] += len(flagged)
        fresh = []
        for i, v in enumerate(votes):
            if i in flagged:
                continue
            pid, origin = self.origin(v, index)
            if origin is None:
                fresh.append((pid, v))
            else:
                self.tally.merged += 1
        self.write(source, f"{source}:ratings", fresh)

    # ------------------------------------------------------------------------- output
    def write(self, source: str, ref: str, fresh: list[tuple[str, Vote]]) -> None:
        self.pending.extend((pid, comparison_id(v), *v, source, ref) for pid, v in fresh)
        self.tally.pairs += len(fresh)
        self.tally.ties += sum(v.tie for _, v in fresh)
        if len(self.pending) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            columns = {c: list(values) for c, values in zip(VOTE_COLUMNS, zip(*self.pending))}
            self.votes.write_table(pa.table(columns, vote_schema()))
            self.pending = []


def votes_frame(votes: list[Vote], limits: Limits) -> pd.DataFrame:
    """The votes' text, and chosen and rejected as read where they differ as written (where
    they do not, the exact check gives the reason)."""
    rows = []
    for v in votes:
        read: tuple[str | None, str | None] = (None, None)
        if v.chosen != v.rejected:
            read = (as_read(v.chosen, limits.ignore_case), as_read(v.rejected, limits.ignore_case))
        rows.append((v.prompt, v.chosen, v.rejected, *read))
    return pd.DataFrame(rows, columns=[*TEXT_COLUMNS, "chosen_read", "rejected_read"])


def chunks(records: Iterator[Record], size: int = CHUNK) -> Iterator[list[Record]]:
    while chunk := list(itertools.islice(records, size)):
        yield chunk


def detect_format(path: Path, records: Iterator[Record]) -> tuple[str, Iterator[Record]]:
    """The format of a file, from its first readable rows; the records, unconsumed."""
    head = list(itertools.islice(records, PEEK))
    found = Counter(f for r in head if r.row is not None and (f := detect(r.row)))
    if not found:
        # field names only, and only those that look like names: never a file's text
        keys = sorted({k for r in head if r.row is not None for k in r.row if FIELD.fullmatch(k)})[
            :12
        ]
        raise UserError(
            f"{path}: unknown feedback format (fields: {', '.join(keys) or 'none'}); "
            f"name one with --format ({'|'.join(NAMES)})"
        )
    return found.most_common(1)[0][0], itertools.chain(head, records)


def import_sources(
    sources: list[Path], fmt: str, out: Path, limits: Limits, known: Iterable[str] = ()
) -> Tally:
    """Import every source into out/votes.parquet and out/quarantine.jsonl.

    fmt: a format name, or "auto" to detect each file's own. known: vote ids already in the
    dataset (they are merged, not written again). Raises GateError, after reading
    everything, when more than the allowed fraction of rows was quarantined.
    """
    writer = BatchWriter(out, limits, known)
    try:
        for index, path in enumerate(sources):
            records = read_records(path, limits)
            name, records = detect_format(path, records) if fmt == "auto" else (fmt, records)
            source = shown(path.name)  # what the table and reports call it: valid UTF-8
            writer.tally.formats[source] = name
            if name == "ratings":
                kept: list[Rating] = []
                for chunk in chunks(records):
                    writer.ratings_chunk(source, chunk, kept)
                writer.ratings_done(source, index, kept)
            else:
                for chunk in chunks(records):
                    writer.pairwise_chunk(source, index, name, chunk)
    finally:
        writer.close()
    tally = writer.tally
    if tally.quarantined > limits.max_quarantine_fraction * tally.total:
        where = ", ".join(str(p) for p in sources)
        raise GateError(
            f"{where}: "
            + report(tally.examples, tally.total, limits.max_quarantine_fraction, tally.reasons)
        )
    return tally
