"""Stage 1, ingest: read data/, validate every dataset with its GX suite, write clean Parquet.

(Human feedback has its own import with its many formats: core/feedback/.)

Each input record ends in exactly one place: the clean table of its dataset, or
quarantine.jsonl with the reason (unreadable, missing field, too long, duplicate, ...).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rlhf.core.data.examples import Unusable, examples, prompt_record
from rlhf.core.data.readers import read_records
from rlhf.core.data.validation import GateError, Suite, new_context, validate
from rlhf.core.io import regular_file, write_jsonl
from rlhf.core.pipeline.context import StageContext
from rlhf.core.settings import Ingest, Settings
from rlhf.core.tracking.dvc_source import cache_dir

TABLE_FORMATS = (".jsonl", ".json", ".csv", ".parquet")
Convert = Callable[[dict], list[dict]]  # a record -> the dataset's rows (or raises Unusable)


def one_prompt(row: dict) -> list[dict]:
    return [prompt_record(row)]


@dataclass(frozen=True)
class Dataset:
    """One dataset ingest writes: read from a data folder the stage declares, validated."""

    folder: str  # under paths.data, one of the stage's needs ("data/<folder>")
    name: str | None  # its files inside it: <name>/* and <name>.<suffix> (None: every file)
    suffixes: tuple[str, ...]
    suite: Suite
    convert: Convert | None = None  # a record in its one form (None: as it is)


def datasets(cfg: Ingest) -> dict[str, Dataset]:
    """dataset -> where it is read from and its suite."""
    max_chars, max_doc_chars, fields = cfg.max_chars, cfg.max_doc_chars, tuple(cfg.prompt_fields)

    def prompts(name: str) -> Suite:
        return Suite(
            name,
            ("prompt", *fields),
            text=("prompt",),
            present=fields,
            unique=("prompt",),
            max_chars=max_chars,
        )

    return {
        "corpus": Dataset(
            "corpus",
            None,
            (".txt", *TABLE_FORMATS),
            Suite("corpus", ("text",), text=("text",), max_chars=max_doc_chars),
        ),
        # prompt/response, Alpaca or chat records, as examples (rlhf.core.data.examples)
        "sft": Dataset(
            "sft",
            None,
            TABLE_FORMATS,
            Suite(
                "sft",
                ("prompt", "response", "context"),
                text=("prompt", "response"),
                unique=("context", "prompt", "response"),
                max_chars=max_chars,
            ),
            examples,
        ),
        "prompts_train": Dataset(
            "prompts", "train", TABLE_FORMATS, prompts("prompts_train"), one_prompt
        ),
        "prompts_eval": Dataset(
            "prompts", "eval", TABLE_FORMATS, prompts("prompts_eval"), one_prompt
        ),
    }


def find_files(dataset: Dataset, folder: Path, within: tuple[Path, ...] = ()) -> list[Path]:
    """A dataset's files: every file of folder (the data folder it declares), or of
    folder/<name>/ and folder/<name>.<suffix> when it has a name there. Each must be a regular
    file inside within once its links are followed (FileFault otherwise)."""
    base = folder / dataset.name if dataset.name else folder
    found = (
        sorted(p for p in base.glob("*") if p.suffix in dataset.suffixes) if base.is_dir() else []
    )
    if dataset.name:
        found += [base.with_suffix(s) for s in dataset.suffixes if base.with_suffix(s).exists()]
    if not found:
        raise GateError(f"{base}: no input files ({', '.join(dataset.suffixes)})")
    return [regular_file(path, *within) for path in found]


def readable_places(settings: Settings) -> tuple[Path, ...]:
    """Where a data file may lie once its links are followed: the project, the data folder
    (an absolute paths.data may be elsewhere) and the DVC cache that checkouts link into."""
    return settings.path(), settings.data_dir, cache_dir(Path(settings.root))


def read_text_documents(path: Path) -> tuple[list[dict], list[dict]]:
    """Blank-line separated documents; a document with bytes that are not UTF-8 is set aside."""
    good, bad = [], []
    doc, start = [], 1
    lines = path.read_bytes().split(b"\n")
    for n, raw in enumerate(lines + [b""], start=1):
        if raw.strip():
            doc.append(raw)
            continue
        if doc:
            record = f"{path.name}:{start}"
            try:
                good.append({"text": b"\n".join(doc).decode("utf-8"), "_record": record})
            except UnicodeDecodeError:
                bad.append(
                    {
                        "_record": record,
                        "reason": "not valid UTF-8",
                        "text": b"\n".join(doc).decode("utf-8", "replace"),
                    }
                )
        doc, start = [], n + 1
    return good, bad


def read_table(path: Path) -> tuple[list[dict], list[dict]]:
    """Rows of one file, and the unreadable ones with their reasons."""
    if path.suffix == ".txt":
        return read_text_documents(path)
    good, bad = [], []
    for r in read_records(path):
        if r.row is None:
            bad.append({"_record": r.ref, "reason": r.error, "raw": r.raw})
        else:
            good.append({**r.row, "_record": r.ref})
    return good, bad


def converted(rows: list[dict], convert: Convert) -> tuple[list[dict], list[dict]]:
    """Records of any format a dataset takes in its one form; a record giving several (a
    conversation with several replies) names each as "<record> turn <n>"."""
    good, bad = [], []
    for row in rows:
        try:
            found = convert(row)
        except Unusable as e:
            raw = json.dumps(
                {k: v for k, v in row.items() if k != "_record"}, default=str, ensure_ascii=False
            )
            bad.append({"_record": row["_record"], "reason": str(e), "raw": raw})
            continue
        for n, example in enumerate(found, start=1):
            ref = row["_record"] if len(found) == 1 else f"{row['_record']} turn {n}"
            good.append({**example, "_record": ref})
    return good, bad


def ingest_dataset(
    dataset: Dataset, folder: Path, max_fraction: float, gx_context, within: tuple[Path, ...] = ()
):
    good, bad = [], []
    for path in find_files(dataset, folder, within):
        g, b = read_table(path)
        if not g and not b:
            raise GateError(f"{path}: no records")
        good += g
        bad += b
    suite = dataset.suite
    if dataset.convert is not None:
        good, unusable = converted(good, dataset.convert)
        bad += unusable
    columns = list(dict.fromkeys(k for row in good for k in row))
    df = pd.DataFrame(good, columns=columns or [*suite.columns, "_record"])
    where = str(folder / dataset.name if dataset.name else folder)
    return validate(df, suite, where, max_fraction, prior=pd.DataFrame(bad), ctx=gx_context)


def run(ctx: StageContext) -> dict:
    cfg = ctx.settings.ingest
    ctx.settings.require_data()
    gx_context = new_context()
    quarantine, metrics, kept = [], {}, []
    for name, dataset in datasets(cfg).items():
        folder = ctx.data(dataset.folder)
        outcome = ingest_dataset(
            dataset, folder, cfg.max_quarantine_fraction, gx_context, readable_places(ctx.settings)
        )
        kept.append(f"{name} {len(outcome.clean)}")
        outcome.clean.rename(columns={"_record": "record"}).to_parquet(
            ctx.out / f"{name}.parquet", index=False
        )
        for row in outcome.quarantined.to_dict("records"):
            record, reason = row.pop("_record"), row.pop("reason")
            quarantine.append(
                {
                    "dataset": name,
                    "record": record,
                    "reason": reason,
                    "row": {k: v for k, v in row.items() if not _is_missing(v)},
                }
            )
        for k, v in outcome.statistics.items():
            metrics[f"{name}_{k}"] = v
    write_jsonl(ctx.out / "quarantine.jsonl", quarantine)
    metrics["quarantined_total"] = len(quarantine)
    if ctx.tracking:
        print(
            f"ingest: {', '.join(kept)} records kept, {len(quarantine)} quarantined "
            f"({ctx.settings.stage_dir('ingest') / 'quarantine.jsonl'})",
            file=sys.stderr,
        )
    return metrics


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)
