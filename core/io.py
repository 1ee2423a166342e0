"""File helpers shared by the stages: content digests, atomic writes, JSON lines, and the
one-line form of a fault of the machine (an OSError) or of a name."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rlhf.models.errors import InputError

FULL_BELOW = 1 << 20  # free bytes under which a failed write is put down to a full disk
NAME_KEPT = 80  # characters of a file's name kept in a temp file's name (NAME_MAX is 255 bytes)


class FileFault(InputError):
    """A fault of the machine or the file system (no space, read-only, a path of the wrong
    kind, a name too long): one line naming the path and the cause."""


def shown(text: object) -> str:
    """Text safe to print on one line: control characters, lone surrogates (bytes of a name
    that are not UTF-8) and other unprintable characters escaped as Python writes them."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def fault_line(e: OSError, where: str | Path | None = None) -> str:
    """'<path>: <cause>' for an OSError; where names the path when the error does not (a
    write that found the disk full names no file)."""
    path = e.filename if e.filename is not None else where
    cause = e.strerror or first_line(e)
    if e.errno == errno.ENOSPC or "No space left" in cause:
        cause = "no space left on the device"
    head = f"{shown(path)}: " if path is not None else ""
    tail = f" (and {shown(e.filename2)})" if e.filename2 is not None else ""
    return f"{head}{cause[0].lower()}{cause[1:]}{tail}"


@contextlib.contextmanager
def os_faults(where: str | Path) -> Iterator[None]:
    """Turn a fault of the machine raised inside into a FileFault naming where (when the error
    names no path): an OSError, or any error raised while where's disk is full (torch and
    pyarrow and tokenizers report a failed write in their own exception types)."""
    try:
        yield
    except OSError as e:
        raise FileFault(fault_line(e, where)) from None
    except Exception as e:
        if not disk_full(where):
            raise
        raise FileFault(f"{shown(where)}: no space left on the device ({first_line(e)})") from e


KINDS = {  # what a path that is not a regular file is, for the line refusing it
    stat.S_ISDIR: "a folder",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def regular_file(path: str | Path, *within: Path) -> Path:
    """path, once it is known to be a regular file (through any links) and, given within,
    to lie inside one of those folders once its links are followed: a FIFO, a device or a
    socket would block or never end, and a link out of the project would read what no one
    tracks. FileFault otherwise."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise FileFault(fault_line(e, path)) from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in KINDS.items() if test(mode)), "not a file")
        raise FileFault(f"{shown(path)}: {kind}, not a regular file: only files are read")
    real = path.resolve()
    if within and not any(real.is_relative_to(folder.resolve()) for folder in within):
        raise FileFault(
            f"{shown(path)}: a link to {shown(real)}, outside "
            f"{' and '.join(shown(f) for f in within)}: copy the file in"
        )
    return path


def disk_full(where: str | Path) -> bool:
    """Whether the file system holding where (or its nearest existing folder) has (next to) no
    space left."""
    where = Path(where)
    existing = next((p for p in [where, *where.parents] if p.exists()), where)
    try:
        return shutil.disk_usage(existing).free < FULL_BELOW
    except OSError:
        return False


def remove_empty(folder: Path, up_to: Path) -> None:
    """Remove folder and then each parent below up_to, as long as they are empty."""
    for p in [folder, *folder.parents]:
        if p == up_to or up_to not in p.parents:
            return
        try:
            p.rmdir()
        except OSError:  # not empty (or gone): what is left is kept
            return


def first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0][:200] or type(e).__name__


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
    make_folder(target.parent)
    if target.exists() and not target.is_dir():
        raise FileFault(f"{shown(target)}: not a folder (a file is in the way)")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:NAME_KEPT]}.tmp-", dir=target.parent))
    except OSError as e:  # its name is a random one: the folder it was to be made in is named
        e.filename = None
        raise FileFault(fault_line(e, target.parent)) from None
    old = target.with_name(f".{target.name[:NAME_KEPT]}.old-{os.getpid()}")
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
    except BaseException:
        if old.exists() and not target.exists():
            old.rename(target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def clear_leftovers(target: str | Path) -> list[Path]:
    """Undo what a killed atomic_dir(target) left (SIGKILL, power loss): its temp folders are
    removed and, when it died between its two renames, the previous target is put back. Only
    for the holder of the lock that serialises writers of target. Returns what was removed."""
    target = Path(target)
    prefix = f".{target.name[:NAME_KEPT]}"
    temps = sorted(target.parent.glob(f"{glob.escape(prefix)}.tmp-*"))
    olds = sorted(target.parent.glob(f"{glob.escape(prefix)}.old-*"), key=os.path.getmtime)
    if olds and not target.exists():
        olds.pop().rename(target)
    for leftover in temps + olds:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return temps + olds


def make_folder(folder: str | Path) -> Path:
    """mkdir -p, where a file in the way is named as such rather than "file exists"."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = [p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()]
        where = blocking[0] if blocking else folder
        raise FileFault(f"{shown(where)}: not a folder (a file is in the way)") from None
    return folder


def write_json(path: str | Path, obj: object) -> None:
    """Write JSON atomically (temp file, then rename)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on failure (the disk
    full, say) it is removed and `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name[:NAME_KEPT]}.tmp-{os.getpid()}")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically (temp file, then rename)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


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
    make_folder(path.parent)
    with atomic_file(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json_line(row))
