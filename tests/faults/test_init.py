"""`rlhf init` under faults: a damaged feedback file, a full disk. One line, and the folder as
it was: what init added is removed, what was there before is kept."""

import gzip
import json
import sys
from pathlib import Path

import pytest

from rlhf.flows.cli import main
from tests.support.faults import (
    assert_one_line_error,
    namespaces,
    run_in_namespace,
    small_fs,
    tree,
)


def judgements(path: Path, n: int = 240) -> Path:
    rows = [
        {
            "instruction": f"Write one line about item {i}.",
            "output_1": f"Item {i} is sturdy and works well.",
            "output_2": f"item {i} bad.",
            "preference": "1" if i % 3 else "2",
        }
        for i in range(n)
    ]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


def test_a_failed_init_into_an_existing_folder_leaves_it_as_it_was(tmp_path, capsys):
    folder = tmp_path / "project"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "plan.md").write_text("the team's own file")
    data = bytearray(judgements(tmp_path / "j.jsonl.gz").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)  # a damaged block
    (tmp_path / "j.jsonl.gz").write_bytes(bytes(data))
    before = tree(folder)

    rc = main(["init", str(folder), "--feedback", str(tmp_path / "j.jsonl.gz")])

    assert_one_line_error(rc, capsys.readouterr().err, "j.jsonl.gz", "compressed data")
    assert tree(folder) == before


@pytest.mark.skipif(namespaces() is not None, reason=f"needs a tmpfs ({namespaces()})")
def test_a_full_disk_during_init_is_one_line_and_leaves_the_folder_as_it_was(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "kept.txt").write_text("there before")
    source = judgements(tmp_path / "j.jsonl.gz")

    result = run_in_namespace(
        small_fs(folder, "1m", 16384),
        [sys.executable, "-m", "rlhf.flows.cli", "init", str(folder), "--feedback", str(source)],
        folder,
    )

    line = assert_one_line_error(result["rc"], result["stderr"], str(folder))
    assert "no space left" in line
    assert result["after"] == result["before"]
