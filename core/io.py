"""File helpers shared by the stages: content digests, atomic writes, JSON lines."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def digest_path(path: str | Path) -> str:
    """MD5 over a file's bytes, or over a folder's sorted relative paths and file bytes.

    The same kind of digest DVC records, so a stage's cache key changes exactly when the
    content it reads changes, whatever the timestamps say. Inside a folder, hidden entries
    (a lock, a temp folder a killed writer left) are not content and are skipped, as the
    project's .dvcignore has DVC skip them.
    """
    path = Path(path)
    h = hashlib.md5()
    files = [path] if path.is_file() else sorted(content_files(path))
    if not files:
        raise FileNotFoundError(f"{path}: nothing to digest")
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if f != path else b"")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def content_files(folder: Path) -> Iterator[Path]:
    """The files in a folder, hidden ones and those in hidden folders left out."""
    for p in folder.rglob("*"):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            yield p


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `target`; on success it replaces `target` whole.

    On failure the temp folder is removed and any previous `target` is left untouched, so a
    crashed stage never leaves half-written outputs that a later stage could read.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | Path, obj: object) -> None:
    """Write JSON atomically (temp file, then rename)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def is_utf8(text: str) -> bool:
    """Whether UTF-8 (and so Arrow, Parquet, a JSON file) can hold text: not when it has lone
    surrogates, which JSON escapes like "\\ud800" and undecodable CSV bytes produce."""
    if text.isascii():  # a flag CPython keeps on every string: no scan
        return True
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def json_line(obj: object) -> str:
    """One JSON line, unicode kept readable; text UTF-8 cannot hold stays escaped, so the
    line can always be written."""
    line = json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str)
    if not is_utf8(line):
        line = json.dumps(obj, sort_keys=True, default=str)
    return line + "\n"


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json_line(row))
    tmp.replace(path)
