"""The loop's inbox never wedges: every way a file can fail sets that file aside (or reports it
when even that fails), counted, and the files beside it are imported in the same iteration."""

import gzip
import json
import os
from pathlib import Path

import pytest

from rlhf.core.feedback.inbox import import_inbox, stored_name
from rlhf.core.settings import load_settings
from tests.support.project import write_params

pytestmark = pytest.mark.integration  # imports into a dataset and records imports in MLflow


def export(n: int, start: int = 0) -> bytes:
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"A good answer {i}.", "rejected": f"Bad {i}"}
        for i in range(start, start + n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def damaged_gzip() -> bytes:
    b = bytearray(gzip.compress(export(300)))
    for i in range(len(b) // 2, len(b) // 2 + 16):
        b[i] ^= 0xFF
    return bytes(b)


LONG = "x" * 249 + ".jsonl"  # 255 bytes: the longest name the file system takes
UNDECODABLE = os.fsdecode(b"caf\xe9-export.jsonl")  # a name whose bytes are not UTF-8
ESCAPE = "red\x1b[31m\nsecond line.jsonl"  # a terminal escape and a newline

BAD = {  # a file that fails -> the file's content
    "damaged.jsonl.gz": damaged_gzip(),
    "unknown.csv": b"question,answer\nq,a\n",
    "empty.jsonl": b"",
    "gate.jsonl": b'{"prompt": "p", "chosen": "same", "rejected": "same"}\n' * 10,
    ESCAPE: b"not json\n",
    "y" * 249 + ".jsonl": b"not json\n",  # a long name that also fails
}
GOOD = {LONG: export(20), UNDECODABLE: export(20, start=100), "plain.jsonl": export(20, 200)}


@pytest.fixture
def inbox(tmp_path) -> Path:
    write_params(tmp_path / "params.yaml", {"feedback": {"test_fraction": 0.3}})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name, data in {**BAD, **GOOD}.items():
        (inbox / name).write_bytes(data)
    os.symlink(tmp_path / "params.yaml", inbox / "a-link.jsonl")
    os.mkfifo(inbox / "a-fifo.jsonl")
    return inbox


def test_every_bad_file_is_set_aside_and_the_good_ones_imported_in_one_iteration(inbox):
    settings = load_settings(inbox.parent / "params.yaml")

    result = import_inbox(settings)

    assert len(result["imported"]) == len(GOOD)
    assert result["added"] == 60
    assert len(result["rejected"]) == len(BAD) + 2  # and the link and the FIFO
    assert sorted(p.name for p in inbox.iterdir()) == ["imported", "rejected"]
    for entry in result["imported"] + result["rejected"]:
        assert entry["file"].isprintable() and "\n" not in entry.get("error", "")
        assert Path(entry["moved_to"]).exists()
    reports = list((inbox / "rejected").glob("*.report.json"))
    assert len(reports) == len(BAD) + 2
    for path in (inbox / "rejected").iterdir():  # names a terminal and a file system take
        assert path.name.isprintable() and len(os.fsencode(path.name)) <= 255
    errors = {r["file"]: r["error"] for r in result["rejected"]}
    assert "damaged or truncated compressed data" in errors["damaged.jsonl.gz"]
    assert "\\x1b[31m\\nsecond line.jsonl" in errors["red\\x1b[31m\\nsecond line.jsonl"]


def test_an_inbox_whose_rejection_folder_is_blocked_still_imports_the_rest(inbox):
    (inbox / "rejected").write_text("a file where the folder goes")
    settings = load_settings(inbox.parent / "params.yaml")

    result = import_inbox(settings)

    assert len(result["imported"]) == len(GOOD)
    assert {r["moved_to"] for r in result["rejected"]} == {None}
    assert all("not set aside" in r["error"] for r in result["rejected"])
    assert "damaged.jsonl.gz" in os.listdir(inbox)  # left where it was, for the next iteration


@pytest.mark.parametrize(
    "name",
    ["plain.jsonl", LONG, UNDECODABLE, ESCAPE, "ü" * 120 + ".json.gz", "a.b.c.d.csv"],
)
def test_a_stored_name_is_short_printable_and_keeps_the_suffix(name):
    stored = stored_name(name)
    assert stored.isprintable() and len(os.fsencode(stored)) <= 100
    assert stored == name or stored.endswith("".join(Path(name).suffixes[-2:])[-16:])
    assert stored_name(name + "x") != stored  # two names stay apart
