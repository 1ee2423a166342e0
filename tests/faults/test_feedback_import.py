"""`rlhf feedback import` under faults of the machine: damaged compressed files, paths of the
wrong kind, a read-only or full file system. Each gives one line and leaves the dataset
byte-identical."""

import bz2
import errno
import gzip
import json
import lzma
import shutil
import sys
from pathlib import Path

import pytest

from rlhf.core.feedback import dataset as dataset_module
from rlhf.core.feedback.dataset import QUARANTINE, Splits, add_batch
from rlhf.core.settings import Limits
from rlhf.flows.cli import main
from tests.support.faults import (
    assert_one_line_error,
    namespaces,
    read_only,
    run_in_namespace,
    small_fs,
    tree,
)
from tests.support.project import write_params


def rows(start: int, n: int) -> list[dict]:
    return [
        {"prompt": f"Question {i}?", "chosen": f"A good answer {i}.", "rejected": f"Bad {i}"}
        for i in range(start, start + n)
    ]


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def project(tmp_path) -> Path:
    """A params file and a dataset of one batch, the state every fault must leave intact."""
    write_params(tmp_path / "params.yaml", {"feedback": {"test_fraction": 0.3}})
    add_batch(
        [jsonl(tmp_path / "first.jsonl", rows(0, 50))],
        "auto",
        tmp_path / "ds",
        Limits(),
        Splits(0.3),
    )
    jsonl(tmp_path / "next.jsonl", rows(50, 400))
    return tmp_path


def import_cli(project: Path, source: Path, capsys, out: Path | None = None) -> tuple[int, str]:
    out = out or project / "ds"
    args = ["--params", str(project / "params.yaml"), "feedback", "import", str(source)]
    rc = main([*args, "--out", str(out)])
    return rc, capsys.readouterr().err


def damaged(data: bytes, where: float) -> bytes:
    """The compressed bytes with a block of them flipped at a fraction of the stream."""
    b = bytearray(data)
    at = max(20, int(len(b) * where))
    for i in range(at, min(at + 16, len(b) - 8)):
        b[i] ^= 0xFF
    return bytes(b)


def as_csv(records: list[dict]) -> bytes:
    head = ",".join(records[0])
    return ("\n".join([head, *(",".join(r.values()) for r in records)]) + "\n").encode()


ENCODINGS = {
    "jsonl": lambda r: "".join(json.dumps(x) + "\n" for x in r).encode(),
    "json": lambda r: json.dumps(r).encode(),
    "csv": as_csv,
}
COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


@pytest.mark.parametrize("kind", sorted(ENCODINGS))
@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, "truncated"])
def test_a_damaged_compressed_file_is_one_line_and_changes_nothing(
    project, capsys, kind, suffix, where
):
    data = COMPRESSORS[suffix](ENCODINGS[kind](rows(50, 400)))
    data = data[: len(data) // 2] if where == "truncated" else damaged(data, where)
    source = project / f"export.{kind}{suffix}"
    source.write_bytes(data)
    before = tree(project / "ds")

    rc, err = import_cli(project, source, capsys)

    assert_one_line_error(rc, err, str(source))
    assert tree(project / "ds") == before


def make_dir(path: Path) -> None:
    path.unlink() if path.is_file() else None
    path.mkdir(parents=True)


def make_file(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    path.write_text("in the way")


WRONG_KINDS = {  # what is put in the dataset's way -> the path the error names
    "the lock is a folder": (lambda ds: make_dir(ds / ".lock"), ".lock"),
    "the table is a folder": (lambda ds: make_dir(ds / "pairs.parquet"), "pairs.parquet"),
    "the quarantine is a folder": (
        lambda ds: make_dir(ds / "quarantine.jsonl"),
        "quarantine.jsonl",
    ),
    "batches is a file": (lambda ds: make_file(ds / "batches"), "batches"),
    "a batch's votes are a folder": (
        lambda ds: make_dir(next((ds / "batches").iterdir()) / "votes.parquet"),
        "votes.parquet",
    ),
}


@pytest.mark.parametrize("case", sorted(WRONG_KINDS))
def test_a_path_of_the_wrong_kind_in_the_dataset_is_one_line_and_changes_nothing(
    project, capsys, case
):
    put, named = WRONG_KINDS[case]
    put(project / "ds")
    before = tree(project / "ds")

    rc, err = import_cli(project, project / "next.jsonl", capsys)

    assert_one_line_error(rc, err, named)
    assert tree(project / "ds") == before


@pytest.mark.parametrize("blocked", ["the output", "the output's parent"])
def test_an_output_folder_that_is_a_file_is_one_line_and_creates_nothing(project, capsys, blocked):
    (project / "taken").write_text("a file")
    out = project / "taken" if blocked == "the output" else project / "taken" / "ds"
    before = tree(project)

    rc, err = import_cli(project, project / "next.jsonl", capsys, out=out)

    assert_one_line_error(rc, err, str(project / "taken"))
    assert tree(project) == before


def test_an_import_into_a_new_folder_that_fails_leaves_no_folder(project, capsys):
    bad = project / "bad.jsonl.gz"
    bad.write_bytes(damaged(gzip.compress(ENCODINGS["jsonl"](rows(0, 400))), 0.5))

    rc, err = import_cli(project, bad, capsys, out=project / "new" / "ds")

    assert_one_line_error(rc, err, str(bad))
    assert not (project / "new" / "ds").exists()


def fail_after_writing(real):
    """A merge that writes part of its output, then finds the disk full."""

    def merge(batches, out, splits):
        (out / "pairs.parquet").write_bytes(b"PAR1 half-written")
        raise OSError(errno.ENOSPC, "No space left on device")

    return merge


def test_a_disk_full_during_the_merge_changes_nothing(project, capsys, monkeypatch):
    monkeypatch.setattr(dataset_module, "merge", fail_after_writing(dataset_module.merge))
    before = tree(project / "ds")

    rc, err = import_cli(project, project / "next.jsonl", capsys)

    line = assert_one_line_error(rc, err, str(project / "ds"))
    assert "no space left" in line
    assert tree(project / "ds") == before


def test_a_rename_that_fails_while_publishing_is_undone(project, capsys, monkeypatch):
    real, failed = Path.rename, []

    def rename(self, target):  # the last file's move in fails, once
        if Path(target).name == "annotators.json" and not failed:
            failed.append(target)
            raise OSError(errno.EIO, "Input/output error", str(target))
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    before = tree(project / "ds")

    rc, err = import_cli(project, project / "next.jsonl", capsys)

    assert_one_line_error(rc, err, "annotators.json", "input/output error")
    assert tree(project / "ds") == before


def test_too_little_space_for_the_merge_is_refused_before_it_starts(project, capsys, monkeypatch):
    monkeypatch.setattr(dataset_module, "MERGE_ROOM", 1e12)
    before = tree(project / "ds")

    rc, err = import_cli(project, project / "next.jsonl", capsys)

    assert "no space left on the device for the merge" in assert_one_line_error(rc, err)
    assert tree(project / "ds") == before


# ------------------------------------------------- a real small or read-only file system
needs_namespaces = pytest.mark.skipif(
    namespaces() is not None, reason=f"a tmpfs needs a mount namespace ({namespaces()})"
)


def cli_import(project: Path, source: Path) -> list[str]:
    args = ["--params", str(project / "params.yaml"), "feedback", "import", str(source)]
    return [sys.executable, "-m", "rlhf.flows.cli", *args, "--out", str(project / "ds")]


@needs_namespaces
@pytest.mark.parametrize("leave_free", [4096, 40_000])  # the batch does not fit; the merge does not
def test_a_full_disk_is_one_line_and_changes_nothing(project, leave_free):
    result = run_in_namespace(
        small_fs(project / "ds", "2m", leave_free),
        cli_import(project, project / "next.jsonl"),
        project / "ds",
    )

    line = assert_one_line_error(result["rc"], result["stderr"], str(project / "ds"))
    assert "no space left" in line
    assert result["after"] == result["before"]


@needs_namespaces
def test_an_import_with_just_enough_space_updates_the_dataset_fully(project):
    result = run_in_namespace(
        small_fs(project / "ds", "2m", 400_000),
        cli_import(project, project / "next.jsonl"),
        project / "ds",
    )

    assert result["rc"] == 0, result["stderr"]
    added = set(result["after"]) - set(result["before"])  # a new batch, nothing hidden
    batch = next(p for p in added if p.count("/") == 1)
    assert batch.startswith("batches/0002-")
    assert added == {batch, *(f"{batch}/{n}" for n in ("batch.json", "votes.parquet", QUARANTINE))}
    changed = {k for k in result["before"] if result["before"][k] != result["after"].get(k)}
    assert (
        {"pairs.parquet", "annotators.json"}
        <= changed
        <= {"pairs.parquet", "annotators.json", QUARANTINE}
    )


@needs_namespaces
def test_a_read_only_dataset_is_one_line_and_changes_nothing(project):
    result = run_in_namespace(
        read_only(project / "ds"), cli_import(project, project / "next.jsonl"), project / "ds"
    )

    line = assert_one_line_error(result["rc"], result["stderr"], str(project / "ds"))
    assert "read-only file system" in line
    assert result["after"] == result["before"]


def test_a_name_with_control_characters_is_printed_escaped_on_one_line(project, capsys):
    source = project / "evil\x1b[2J\nname.jsonl.gz"
    source.write_bytes(b"not gzip")
    before = tree(project / "ds")

    rc, err = import_cli(project, source, capsys)

    assert_one_line_error(rc, err, "evil\\x1b[2J\\nname.jsonl.gz")
    assert "\x1b" not in err
    assert tree(project / "ds") == before
