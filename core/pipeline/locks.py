"""One writer at a time: advisory file locks for a project's artifacts and a feedback dataset.

A lock is an flock on a file, so the kernel releases it when its holder dies (a SIGKILL
included) and no stale lock is ever left. The file names its current holder, for the
message a waiting process gives when its timeout runs out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from rlhf.core.settings import Settings, UserError

PROJECT_LOCK = ".rlhf.lock"
_HELD: dict[str, int] = {}  # lock files this process holds, with their nesting depth


def holder_of(path: Path) -> str:
    """Who holds the lock at path, as its holder wrote it."""
    try:
        h = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {h['pid']} on {h['host']} ({h['command']}, since {h['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _acquire(f, path: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise UserError(
                    f"{path}: {what} is locked by {holder_of(path)}; waited {timeout:.0f} s "
                    "(lock_timeout_seconds)"
                ) from None
            time.sleep(0.1)


@contextlib.contextmanager
def exclusive(path: str | Path, what: str, timeout: float) -> Iterator[None]:
    """Hold the lock at path, waiting at most timeout seconds for its holder to finish.
    Re-entrant within a process (the feedback loop runs the pipeline as a subflow)."""
    path = Path(path).resolve()
    key = str(path)
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+", encoding="utf-8") as f:
        _acquire(f, path, what, timeout)
        _HELD[key] = 1
        try:
            f.seek(0)
            f.truncate()
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "command": " ".join(os.path.basename(a) for a in sys.argv[:3]),
                "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            f.write(json.dumps(holder))
            f.flush()
            yield
        finally:
            _HELD[key] = 0
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def project_lock(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """The project's lock: runs that share artifacts/ (`rlhf run`, `rlhf stage`, `dvc repro`,
    the loop) wait for each other instead of overwriting each other's outputs."""
    return exclusive(settings.path(PROJECT_LOCK), "the project", settings.lock_timeout_seconds)
