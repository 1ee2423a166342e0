"""The feedback loop's inbox: annotation exports dropped in a folder, imported one batch per file.

    <inbox>/<export>                   waiting (any format `rlhf feedback import` reads)
    <inbox>/imported/<stamp>-<export>  imported into the feedback dataset
    <inbox>/rejected/<stamp>-<export>  failed validation, never deleted, with
    <inbox>/rejected/<stamp>-<export>.report.json  the reason and the import's counts

A file is picked up only once it is complete: writers should write under a name starting
with "." (or ending in .tmp/.part) and rename, as tasks/demo.py's simulated annotators do.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from rlhf.core.collect import labels_arrived
from rlhf.core.feedback import import_batch, log_import, track_with_dvc
from rlhf.core.io import write_json
from rlhf.core.settings import Settings, UserError

IMPORTED = "imported"
REJECTED = "rejected"
PARTIAL = (".tmp", ".part")


def inbox_dir(settings: Settings) -> Path:
    return settings.path(settings.loop.inbox)


def pending(inbox: Path) -> list[Path]:
    """Complete export files waiting in the inbox, oldest first."""
    if not inbox.is_dir():
        return []
    files = [
        p
        for p in inbox.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(PARTIAL)
    ]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def file_aside(path: Path, folder: Path) -> Path:
    """Move an inbox file into folder under a time-stamped name (names may repeat)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{stamp}-{path.name}"
    shutil.move(path, target)
    return target


def import_inbox(settings: Settings) -> dict:
    """Import every waiting export as a batch of the feedback dataset.

    Returns {"imported": [summary...], "rejected": [{"file", "error"}...], "added": pairs}.
    """
    inbox = inbox_dir(settings)
    imported, rejected = [], []
    for path in pending(inbox):
        try:
            summary = import_batch([path], "auto", settings.feedback_dir, settings)
        except UserError as e:
            moved = file_aside(path, inbox / REJECTED)
            report = {"file": path.name, "moved_to": str(moved), "error": str(e)}
            write_json(moved.with_name(moved.name + ".report.json"), report)
            rejected.append(report)
            continue
        moved = file_aside(path, inbox / IMPORTED)
        summary["run_id"] = log_import(summary, [moved], settings.feedback_dir, settings)
        imported.append({**summary, "file": path.name, "moved_to": str(moved)})
    if imported:
        labels_arrived(settings)
    if any(s["added"] for s in imported):
        track_with_dvc(settings.feedback_dir, settings)
    return {"imported": imported, "rejected": rejected, "added": sum(s["added"] for s in imported)}
