"""Importing human feedback as a batch of the feedback dataset, and recording the import.

Used by `rlhf feedback import`, the feedback loop's inbox and the demo's data; the feedback
stage (rlhf.tasks.feedback) merges the batches for a run.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd

from rlhf.core.feedback.dataset import ANNOTATORS, Splits, add_batch
from rlhf.core.settings import Settings, UserError
from rlhf.core.tracking.dvc_source import run_dvc
from rlhf.core.tracking.store import open_store, tracking_errors


def splits(settings: Settings) -> Splits:
    return Splits(settings.feedback.test_fraction, settings.feedback.judge_fraction)


def import_batch(sources, fmt: str, dataset, settings: Settings) -> dict:
    """`rlhf feedback import`: sources as a new batch of the dataset; the summary."""
    return add_batch(
        list(sources),
        fmt,
        dataset,
        settings.feedback,
        splits(settings),
        settings.lock_timeout_seconds,
    )


def log_import(summary: dict, sources, dataset: Path, settings: Settings) -> str:
    """An MLflow run for the import: what came in, what was set aside, who judged. Raises
    TrackingUnavailable when the store cannot be reached (the batch is kept either way)."""
    with tracking_errors(settings, f"the import of batch {summary['batch']}"):
        return _log_import(summary, sources, dataset, settings)


def _log_import(summary: dict, sources, dataset: Path, settings: Settings) -> str:
    tags = {
        "batch": summary["batch"],
        "pairs_digest": summary["pairs_digest"],
        "dataset": str(dataset),
    }
    with open_store(settings).run("feedback-import", tags=tags) as run:
        mlflow.log_params(
            {
                "sources": ", ".join(str(p) for p in sources),
                "formats": json.dumps(summary["formats"]),
            }
        )
        mlflow.log_metrics(
            {
                k: summary[k]
                for k in (
                    "total",
                    "imported",
                    "quarantined",
                    "pairs",
                    "merged",
                    "added",
                    "dataset_pairs",
                    "dataset_ties",
                )
            }
        )
        mlflow.log_dict(summary, "feedback/summary.json")
        log_annotators(json.loads((dataset / ANNOTATORS).read_text()))
    return run.info.run_id


def track_with_dvc(dataset: Path, settings: Settings) -> Path | None:
    """Record the dataset's new version with `dvc add` when a .dvc file tracks it (or a
    folder holding it); returns that .dvc file."""
    root = settings.path().resolve()
    if not (root / ".dvc").is_dir():
        return None
    for folder in [dataset.resolve(), *dataset.resolve().parents]:
        if folder == root or root not in folder.parents:
            return None
        tracker = folder.with_name(f"{folder.name}.dvc")
        if tracker.is_file():
            failed = run_dvc(root, "add", "-q", str(folder))
            if failed:
                raise UserError(f"{tracker}: dvc add failed: {failed}")
            return tracker
    return None


def log_annotators(annotators: dict) -> None:
    """Per-annotator counts and pairwise agreement as MLflow tables (shown in the run's UI)."""
    mlflow.log_table(
        pd.DataFrame(annotators["annotators"], columns=["annotator", "votes", "comparisons"]),
        artifact_file="feedback/annotators.json",
    )
    mlflow.log_table(
        pd.DataFrame(
            annotators["agreement"], columns=["annotator_a", "annotator_b", "overlap", "agreement"]
        ),
        artifact_file="feedback/agreement.json",
    )
