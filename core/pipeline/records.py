"""A finished stage's record (stage.json) and the check of its outputs against it: what a
later step reads is what the stage wrote, or the step stops, or the stage runs again.

stage.json holds the digest of every declared out and the stage's metrics (metrics.json holds
the same figures). An out that is missing or changed, a metrics.json that differs, or a record
that is unreadable or not a stage's means the stage is not built as recorded.
"""

from __future__ import annotations

from rlhf.core.io import digest_path, read_json, shown
from rlhf.core.pipeline.context import METRICS, RECORD
from rlhf.core.settings import Settings, UserError


def stage_record(settings: Settings, name: str) -> tuple[dict | None, str]:
    """Stage name's record, or None with why not (none, unreadable, not this stage's record):
    the stage is then taken as not built."""
    path = settings.stage_dir(name) / RECORD
    if not path.exists():
        return None, f"no {RECORD}"
    try:
        record = read_json(path)
    except (OSError, ValueError) as e:
        return None, f"{RECORD} unreadable ({type(e).__name__})"
    usable = (
        isinstance(record, dict)
        and record.get("stage") == name
        and isinstance(record.get("outs"), dict)
        and isinstance(record.get("metrics"), dict)
    )
    return (record, "") if usable else (None, f"{RECORD} is not a record of stage {name}")


def changed_outputs(settings: Settings, record: dict) -> list[str]:
    """The files of a record's stage that are not as it wrote them: outs whose digest differs
    (or that are gone), and metrics.json when it no longer holds the recorded metrics."""
    folder = settings.stage_dir(record["stage"])
    changed = []
    for out, digest in record["outs"].items():
        try:
            same = digest_path(folder / out) == digest
        except OSError:
            same = False
        if not same:
            changed.append(out)
    try:
        same_metrics = read_json(folder / METRICS) == record["metrics"]
    except (OSError, ValueError):
        same_metrics = False
    return changed if same_metrics else [*changed, METRICS]


def built_record(settings: Settings, name: str) -> dict:
    """Stage name's record; UserError (one line, saying what to run) when it has none usable."""
    record, why = stage_record(settings, name)
    if record is None:
        raise UserError(
            f"{shown(settings.stage_dir(name))}: stage {name} is not built ({why}): run "
            f"`rlhf stage {name}` or `rlhf run`"
        )
    return record


def verified_record(settings: Settings, name: str) -> dict:
    """Stage name's record, once every output it lists is as the stage wrote it: what a later
    step may trust. UserError (one line, saying what to run) otherwise."""
    folder = settings.stage_dir(name)
    record = built_record(settings, name)
    changed = changed_outputs(settings, record)
    if changed:
        raise UserError(
            f"{shown(folder)}: {', '.join(changed)} changed since stage {name} wrote them: "
            f"run `rlhf stage {name}` again (or `rlhf run`)"
        )
    return record
