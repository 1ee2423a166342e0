"""The versioned feedback dataset: immutable batches and the pair table merged from them.

    <dataset>/batches/0001-<id>/votes.parquet     one import, never rewritten
                               /quarantine.jsonl  its rejected rows, whole, with reasons
                               /batch.json        its sources (with MD5), formats and counts
    <dataset>/pairs.parquet                       every batch's votes, with the split
    <dataset>/quarantine.jsonl                    every batch's rejected rows
    <dataset>/annotators.json                     per-annotator counts and agreement
    <dataset>/.lock                               held by the import writing now

A batch's id is the digest of its sources' bytes (and the format asked for), so importing
the same batch again adds nothing. The pair table is derived: rebuilt from the batches after
each import, by the same `merge` the pipeline's feedback stage runs, so it always holds every
batch and the same batches always give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rlhf.core.data.readers import stream_parquet
from rlhf.core.data.validation import DUPLICATE, GateError, Suite, flag_rows, new_context
from rlhf.core.feedback.importer import import_sources, vote_schema
from rlhf.core.feedback.stats import AnnotatorStats
from rlhf.core.io import (
    digest_path,
    json_line,
    make_folder,
    os_faults,
    regular_file,
    shown,
    write_json,
)
from rlhf.core.pipeline.locks import exclusive
from rlhf.core.settings import Limits, UserError
from rlhf.models.chat import canonical

BATCHES = "batches"
PAIRS = "pairs.parquet"
QUARANTINE = "quarantine.jsonl"
ANNOTATORS = "annotators.json"
LOCK = ".lock"  # held by an import; hidden, so never part of a digest
MERGE_ROOM = 1.5  # free space a merge needs, as a multiple of the batches' size


def normalise_prompt(prompt: str) -> str:
    """A prompt's turns (rlhf.models.chat.canonical) with case and spacing folded, so the same
    question lands in the same split whichever format it came in."""
    return " ".join(canonical(prompt).lower().split())


@dataclass(frozen=True)
class Splits:
    """Which split a prompt's pairs belong to, fixed by a hash of the prompt: as data grows a
    prompt never changes split, so the splits stay disjoint.

    test   the reward model's held-out pairs (its accuracy)
    judge  the evaluation reward models' training pairs: the reward model PPO optimises never
           sees them, so promotion can be decided by a judge it was not trained to please
    train  the rest: the reward model's training pairs
    """

    test: float
    judge: float = 0.0

    def of(self, prompt: str) -> str:
        digest = hashlib.sha256(normalise_prompt(prompt).encode("utf-8", "surrogatepass"))
        u = int(digest.hexdigest()[:8], 16) / 0xFFFFFFFF
        return "test" if u < self.test else "judge" if u < self.test + self.judge else "train"


def pair_schema():
    return (
        vote_schema().append(pa.field("split", pa.string())).append(pa.field("batch", pa.string()))
    )


def batch_dirs(dataset: Path) -> list[Path]:
    return sorted(p for p in (dataset / BATCHES).glob("*") if (p / "batch.json").is_file())


def batch_id(digests: list[str], fmt: str) -> str:
    """The id of a batch: its sources' content (MD5s, in order) and the format asked for."""
    blob = json.dumps({"format": fmt, "sources": digests})
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def known_pairs(dataset: Path) -> list[str]:
    """The vote ids already in the dataset's batches."""
    ids: list[str] = []
    for d in batch_dirs(dataset):
        ids += pq.read_table(d / "votes.parquet", columns=["pair_id"])["pair_id"].to_pylist()
    return ids


def merge(batches: list[Path], out: Path, splits: Splits) -> dict:
    """Write out/pairs.parquet, quarantine.jsonl and annotators.json from the batches, in
    batch order; returns the dataset's counts."""
    if not batches:
        raise UserError(
            f"{out}: no imported feedback batches (import some with `rlhf feedback import SOURCE`)"
        )
    stats, rows, ties = AnnotatorStats(), 0, 0
    counts = {"train": 0, "test": 0, "judge": 0}
    with pq.ParquetWriter(out / PAIRS, pair_schema()) as writer:
        for d in batches:
            for group in stream_parquet(d / "votes.parquet"):
                group = with_ties(group)
                split = [splits.of(p) for p in group.column("prompt").to_pylist()]
                for s in split:
                    counts[s] += 1
                ties += pc.sum(group.column("tie")).as_py() or 0
                sided = group.filter(pc.invert(group.column("tie")))  # a tie takes no side
                stats.add(
                    sided.column("comparison_id").to_pylist(),
                    sided.column("annotator").to_pylist(),
                    pc.less(sided.column("chosen"), sided.column("rejected")).to_pylist(),
                )
                columns = [group.column(c) for c in vote_schema().names]
                columns += [pa.array(split), pa.array([d.name] * len(split))]
                writer.write_table(pa.Table.from_arrays(columns, schema=pair_schema()))
                rows += len(split)
    check_unique_pairs(out / PAIRS)
    with (out / QUARANTINE).open("w", encoding="utf-8") as q:
        for d in batches:
            with (d / QUARANTINE).open("rb") as lines:  # bytes: split at "\n" only
                for line in lines:
                    q.write(json_line({"batch": d.name, **json.loads(line)}))
    annotators = stats.result()
    write_json(out / ANNOTATORS, annotators)
    return {
        "pairs": rows,
        "train_pairs": counts["train"],
        "test_pairs": counts["test"],
        "judge_pairs": counts["judge"],
        "ties": ties,
        "batches": len(batches),
        "annotators": len(annotators["annotators"]),
        "comparisons": annotators["comparisons"],
        "comparisons_with_conflicting_votes": annotators["comparisons_with_conflicting_votes"],
    }


def with_ties(group: pa.Table) -> pa.Table:
    """A batch's votes with their tie column (batches imported before ties were kept have
    none: every vote of theirs took a side)."""
    if "tie" in group.column_names:
        return group
    return group.append_column("tie", pa.array([False] * len(group), pa.bool_()))


def check_unique_pairs(path: Path) -> None:
    """The GX gate on the whole table: every vote once (import never writes a vote twice, so
    a failure means the batches were edited by hand)."""
    ids = pq.read_table(path, columns=["pair_id"]).to_pandas()
    flagged = flag_rows(new_context(), ids, Suite("pair_ids", ("pair_id",), unique=("pair_id",)))
    if flagged:
        first = ids["pair_id"][min(flagged)]
        raise GateError(
            f"{path}: {len(flagged)} rows share a pair_id ({DUPLICATE}), "
            f"e.g. {first}; were batches edited by hand?"
        )


def remove_orphans(dataset: Path) -> list[Path]:
    """Temp folders and files a killed import left behind (only called under the lock, when
    no other import can be writing them)."""
    found = [
        p
        for folder in (dataset, dataset / BATCHES)
        if folder.is_dir()
        for p in folder.iterdir()
        if p.name.startswith(".") and (".tmp" in p.name or ".old-" in p.name)
    ]
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def add_batch(
    sources: list[Path],
    fmt: str,
    dataset: Path,
    limits: Limits,
    splits: Splits,
    lock_timeout: float = 3600,
) -> dict:
    """Import sources as one new batch of the dataset; the summary of what happened.

    Everything is written beside the dataset first (the batch and the merged table), and
    moved in only when the whole import passed its gate and every file is complete, so a
    failed import (a bad file, the disk full, a path of the wrong kind) leaves the dataset
    byte-identical. Imports into one dataset take turns (its .lock), so concurrent ones land
    one after the other, as if run in sequence.
    """
    for path in sources:
        regular_file(path)
    created = not dataset.exists()
    try:
        with os_faults(dataset):
            check_layout(dataset)
            make_folder(dataset)
            with exclusive(dataset / LOCK, "the feedback dataset", lock_timeout):
                remove_orphans(dataset)
                return _commit(sources, fmt, dataset, limits, splits)
    except BaseException:
        if created and dataset.is_dir() and {p.name for p in dataset.iterdir()} <= {LOCK}:
            shutil.rmtree(dataset, ignore_errors=True)  # the folder this import created
        raise


def check_layout(dataset: Path) -> None:
    """Every path the import will replace is of the kind it writes, before anything changes."""
    if not dataset.exists():
        return
    if not dataset.is_dir():
        raise UserError(f"{shown(dataset)}: not a folder (the feedback dataset)")
    kinds = {BATCHES: Path.is_dir, PAIRS: Path.is_file, QUARANTINE: Path.is_file}
    kinds.update({ANNOTATORS: Path.is_file, LOCK: Path.is_file})
    for name, right_kind in kinds.items():
        path = dataset / name
        if path.exists() and not right_kind(path):
            want = "a folder" if right_kind is Path.is_dir else "a file"
            raise UserError(f"{shown(path)}: not {want} (the feedback dataset's {name})")
    for batch in batch_dirs(dataset):
        for name in ("votes.parquet", QUARANTINE):
            if not (batch / name).is_file():
                raise UserError(f"{shown(batch / name)}: missing or not a file (a damaged batch)")


def _commit(sources: list[Path], fmt: str, dataset: Path, limits: Limits, splits: Splits) -> dict:
    """add_batch's work, under the dataset's lock: numbering, known votes and the merge all
    see every batch committed before."""
    digests = [digest_path(p) for p in sources]
    bid = batch_id(digests, fmt)
    existing = batch_dirs(dataset)
    done = [d for d in existing if d.name.endswith(f"-{bid}")]
    with staging(dataset) as tmp:
        if done:
            batch = done[0]
            summary = json.loads((batch / "batch.json").read_text())["summary"]
        else:
            batch = tmp / f"{len(existing) + 1:04d}-{bid}"
            batch.mkdir()
            summary = import_sources(sources, fmt, batch, limits, known_pairs(dataset)).summary()
            write_json(
                batch / "batch.json",
                {
                    "batch": batch.name,
                    "format": fmt,
                    "summary": summary,
                    "sources": [
                        {"name": shown(p.name), "md5": md5} for p, md5 in zip(sources, digests)
                    ],
                },
            )
        merged = tmp / "merged"
        merged.mkdir()
        batches = existing if done else [*existing, batch]
        check_free_space(dataset, batches)
        counts = merge(batches, merged, splits)
        publish(dataset, None if done else batch, merged)
    return {
        **summary,
        "batch": batch.name,
        "already_imported": bool(done),
        "added": 0 if done else summary["pairs"],
        "dataset_pairs": counts["pairs"],
        "dataset_ties": counts["ties"],
        "conflicting_comparisons": counts["comparisons_with_conflicting_votes"],
        "pairs_digest": digest_path(dataset / PAIRS),
    }


@contextlib.contextmanager
def staging(dataset: Path) -> Iterator[Path]:
    """A temp folder inside the dataset (the same file system, so moving out of it is a
    rename), removed however the import ends."""
    tmp = Path(tempfile.mkdtemp(prefix=".import.tmp-", dir=dataset))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_free_space(dataset: Path, batches: list[Path]) -> None:
    """The merged table is about as large as the batches it is merged from: refuse to start a
    merge the disk cannot hold."""
    need = sum((b / n).stat().st_size for b in batches for n in ("votes.parquet", QUARANTINE))
    free = shutil.disk_usage(dataset).free
    if free < need * MERGE_ROOM:
        raise UserError(
            f"{shown(dataset)}: no space left on the device for the merge (about "
            f"{need * MERGE_ROOM / 1024:,.0f} KiB needed, {free / 1024:,.0f} KiB free)"
        )


def publish(dataset: Path, batch: Path | None, merged: Path) -> None:
    """Move the new batch and the merged files into the dataset. Only renames, which take no
    space; if one fails, the ones done are undone, so the dataset is as before."""
    undo: list[tuple[Path, Path]] = []  # (where it is now, where it goes back to)
    try:
        if batch is not None:
            (dataset / BATCHES).mkdir(exist_ok=True)
            target = dataset / BATCHES / batch.name
            batch.rename(target)
            undo.append((target, batch))
        for name in (PAIRS, QUARANTINE, ANNOTATORS):
            if (dataset / name).exists():
                (dataset / name).rename(merged / f"{name}.old")
                undo.append((merged / f"{name}.old", dataset / name))
            (merged / name).rename(dataset / name)
            undo.append((dataset / name, merged / name))
    except BaseException:
        for now, back in reversed(undo):
            now.rename(back)
        raise
