"""The feedback loop's inbox: annotation exports dropped in a folder, imported one batch per file.

    <inbox>/<export>                   waiting (any format `rlhf feedback import` reads)
    <inbox>/imported/<stamp>-<export>  imported into the feedback dataset
    <inbox>/rejected/<stamp>-<export>  failed validation, never deleted, with
    <inbox>/rejected/<stamp>-<export>.report.json  the reason and the import's counts

A file is picked up only once it is complete: writers should write under a name starting
with "." (or ending in .tmp/.part) and rename, as the demo's simulated annotators do. Only
regular files are read: a link, FIFO or device is moved to rejected/ unopened, and a report
gives the reason, never the file's content. Whatever fails (the file, its name, the disk), the
entry is set aside or reported and the entries after it are imported: one file never wedges
the inbox. A name that is long or not printable is stored shortened (the report keeps it,
escaped) and printed escaped.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path

from rlhf.core.feedback.batches import import_batch, log_import, track_with_dvc
from rlhf.core.feedback.collect import labels_arrived
from rlhf.core.io import fault_line, shown, write_json
from rlhf.core.settings import Settings
from rlhf.core.tracking.store import TrackingUnavailable
from rlhf.models.errors import InputError

IMPORTED = "imported"
REJECTED = "rejected"
PARTIAL = (".tmp", ".part")
UNSAFE = re.compile(r"[^\w.+-]", re.ASCII)  # replaced in a shortened name
KEPT_NAME = 100  # characters of an entry's name kept when it is set aside (NAME_MAX: 255 bytes)


def inbox_dir(settings: Settings) -> Path:
    return settings.path(settings.loop.inbox)


def pending(inbox: Path) -> list[Path]:
    """Complete entries waiting in the inbox, oldest first (folders are its own: skipped)."""
    if not inbox.is_dir():
        return []
    entries = []
    for p in inbox.iterdir():
        if p.name.startswith(".") or p.name.endswith(PARTIAL):
            continue
        try:
            info = p.lstat()
        except OSError:  # gone since it was listed
            continue
        if not stat.S_ISDIR(info.st_mode):
            entries.append((info.st_mtime, p.name, p))
    return [p for *_, p in sorted(entries)]


def stored_name(name: str) -> str:
    """A name any file system takes and any terminal prints: the name itself when it is short
    and printable, else its start (other characters than A-Z, a-z, 0-9, "_.+-" as "_"), a
    digest of the whole name (two long names stay apart) and its suffixes (so a fixed file
    can be put back and is read as before)."""
    raw = os.fsencode(name)
    if shown(name) == name and len(raw) <= KEPT_NAME:
        return name
    suffix = "".join(Path(name).suffixes[-2:])
    if shown(suffix) != suffix or len(suffix) > 16:
        suffix = ""
    start = UNSAFE.sub("_", name)[: KEPT_NAME - 40]
    return f"{start}~{hashlib.sha256(raw).hexdigest()[:12]}{suffix}"


def file_aside(path: Path, folder: Path) -> Path:
    """Move an inbox entry (the entry itself, never what a link points at) into folder under a
    time-stamped name (names may repeat)."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{stamp}-{stored_name(path.name)}"
    os.rename(path, target)
    return target


def not_regular(path: Path) -> str | None:
    """Why an inbox entry is not imported without being read: links, FIFOs, devices."""
    mode = path.lstat().st_mode
    if stat.S_ISREG(mode):
        return None
    kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
    return f"{shown(path.name)}: {kind} (the inbox takes regular files only)"


def reason_of(error: Exception) -> str:
    """The report's reason, on one line. Importer errors name the file, record and field but
    never quote its text; a fault of the machine names the path and the cause; any other
    failure is reported by its type alone, so nothing of the file (or of what a link pointed
    at) is copied into a report, a Prefect artifact or MLflow."""
    if isinstance(error, InputError):
        return shown(error)
    if isinstance(error, OSError):
        return fault_line(error)
    return f"import failed ({type(error).__name__})"


def reject(path: Path, inbox: Path, error: str) -> dict:
    """Set a failed entry aside with its report; when even that fails (the rejection folder
    unwritable, say), the entry stays where it is and the report says why, and the loop
    goes on with the next."""
    report = {"file": shown(path.name), "error": error}
    try:
        moved = file_aside(path, inbox / REJECTED)
    except OSError as e:
        return {**report, "moved_to": None, "error": f"{error}; not set aside: {fault_line(e)}"}
    report["moved_to"] = str(moved)
    try:
        write_json(moved.with_name(moved.name + ".report.json"), report)
    except OSError as e:
        report["error"] = f"{error}; no report written: {fault_line(e)}"
    return report


def import_inbox(settings: Settings) -> dict:
    """Import every waiting export as a batch of the feedback dataset; an entry that fails, for
    whatever reason, is set aside and the next one is imported.

    Returns {"imported": [summary...], "rejected": [{"file", "error"}...], "added": pairs}.
    """
    inbox = inbox_dir(settings)
    imported, rejected = [], []
    for path in pending(inbox):
        try:
            problem = not_regular(path)
            if problem is None:
                summary = import_batch([path], "auto", settings.feedback_dir, settings)
        except Exception as e:  # noqa: BLE001 (one bad file never stops the files behind it)
            problem = reason_of(e)
        if problem is not None:
            rejected.append(reject(path, inbox, problem))
            continue
        imported.append(settle_import(path, inbox, summary, settings))
    if imported:
        labels_arrived(settings)
    if any(s["added"] for s in imported):
        track_with_dvc(settings.feedback_dir, settings)
    return {"imported": imported, "rejected": rejected, "added": sum(s["added"] for s in imported)}


def settle_import(path: Path, inbox: Path, summary: dict, settings: Settings) -> dict:
    """An imported entry moved to imported/ and its import recorded in MLflow. The batch is in
    the dataset either way: an entry that cannot be moved is imported again, adding nothing,
    next time; a store that cannot be reached leaves a warning."""
    entry = {**summary, "file": shown(path.name)}
    try:
        moved = file_aside(path, inbox / IMPORTED)
    except OSError as e:
        moved, entry["warning"] = path, f"not moved to {IMPORTED}/: {fault_line(e)}"
    entry["moved_to"] = str(moved)
    try:
        entry["run_id"] = log_import(summary, [moved], settings.feedback_dir, settings)
    except TrackingUnavailable as e:
        entry["run_id"] = None
        entry["warning"] = "; ".join(filter(None, [entry.get("warning"), str(e)]))
    return entry
