"""The feedback loop's inbox: annotation exports dropped in a folder, imported one batch per file.

    <inbox>/<export>                   waiting (any format `rlhf feedback import` reads)
    <inbox>/imported/<stamp>-<export>  imported into the feedback dataset
    <inbox>/rejected/<stamp>-<export>  failed validation, never deleted, with
    <inbox>/rejected/<stamp>-<export>.report.json  the reason and the import's counts

A file is picked up only once it is complete: writers should write under a name starting
with "." (or ending in .tmp/.part) and rename, as the demo's simulated annotators do. Only
regular files are read: a link, FIFO or device is moved to rejected/ unopened, and a report
gives the reason, never the file's content.
"""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from rlhf.core.feedback.batches import import_batch, log_import, track_with_dvc
from rlhf.core.feedback.collect import labels_arrived
from rlhf.core.io import write_json
from rlhf.core.settings import Settings, UserError
from rlhf.core.tracking.store import TrackingUnavailable

IMPORTED = "imported"
REJECTED = "rejected"
PARTIAL = (".tmp", ".part")


def inbox_dir(settings: Settings) -> Path:
    return settings.path(settings.loop.inbox)


def pending(inbox: Path) -> list[Path]:
    """Complete entries waiting in the inbox, oldest first (folders are its own: skipped)."""
    if not inbox.is_dir():
        return []
    entries = [
        p
        for p in inbox.iterdir()
        if not p.name.startswith(".")
        and not p.name.endswith(PARTIAL)
        and not stat.S_ISDIR(p.lstat().st_mode)
    ]
    return sorted(entries, key=lambda p: (p.lstat().st_mtime, p.name))


def file_aside(path: Path, folder: Path) -> Path:
    """Move an inbox entry (the entry itself, never what a link points at) into folder under a
    time-stamped name (names may repeat)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{stamp}-{path.name}"
    os.rename(path, target)
    return target


def not_regular(path: Path) -> str | None:
    """Why an inbox entry is not imported without being read: links, FIFOs, devices."""
    mode = path.lstat().st_mode
    if stat.S_ISREG(mode):
        return None
    kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
    return f"{path.name}: {kind} (the inbox takes regular files only)"


def reason_of(error: Exception) -> str:
    """The report's reason. Importer errors name the file, record and field but never quote
    its text; any other failure is reported by its type alone, so nothing of the file (or of
    what a link pointed at) is copied into a report, a Prefect artifact or MLflow."""
    return str(error) if isinstance(error, UserError) else f"import failed ({type(error).__name__})"


def reject(path: Path, inbox: Path, error: str) -> dict:
    moved = file_aside(path, inbox / REJECTED)
    report = {"file": path.name, "moved_to": str(moved), "error": error}
    write_json(moved.with_name(moved.name + ".report.json"), report)
    return report


def import_inbox(settings: Settings) -> dict:
    """Import every waiting export as a batch of the feedback dataset; an entry that fails, for
    whatever reason, is set aside and the next one is imported.

    Returns {"imported": [summary...], "rejected": [{"file", "error"}...], "added": pairs}.
    """
    inbox = inbox_dir(settings)
    imported, rejected = [], []
    for path in pending(inbox):
        if problem := not_regular(path):
            rejected.append(reject(path, inbox, problem))
            continue
        try:
            summary = import_batch([path], "auto", settings.feedback_dir, settings)
        except Exception as e:  # noqa: BLE001 (one bad file never stops the files behind it)
            rejected.append(reject(path, inbox, reason_of(e)))
            continue
        moved = file_aside(path, inbox / IMPORTED)
        try:
            summary["run_id"] = log_import(summary, [moved], settings.feedback_dir, settings)
        except TrackingUnavailable as e:
            summary["run_id"], summary["warning"] = None, str(e)
        imported.append({**summary, "file": path.name, "moved_to": str(moved)})
    if imported:
        labels_arrived(settings)
    if any(s["added"] for s in imported):
        track_with_dvc(settings.feedback_dir, settings)
    return {"imported": imported, "rejected": rejected, "added": sum(s["added"] for s in imported)}
