"""The loop's inbox: each complete file is imported as a batch or set aside with a report."""

import json
import os

import pytest

from rlhf.core.collect import read_state
from rlhf.core.inbox import import_inbox, pending
from rlhf.core.io import write_json
from rlhf.core.settings import load_settings
from tests.support.project import write_params

ROWS = [
    {
        "prompt": f"Question {i}?",
        "chosen": f"Good answer {i}.",
        "rejected": f"Bad {i}",
        "annotator": "ann-a",
    }
    for i in range(30)
]


def test_pending_skips_partial_files_and_folders(tmp_path):
    for i, name in enumerate(["b.jsonl", "a.csv", ".writing.json", "c.json.tmp", "d.part"]):
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    (tmp_path / "rejected").mkdir()
    assert [p.name for p in pending(tmp_path)] == ["b.jsonl", "a.csv"]  # oldest first
    assert pending(tmp_path / "missing") == []


@pytest.mark.integration  # imports into a dataset and records each import in MLflow
def test_import_inbox_imports_good_files_and_sets_bad_ones_aside(tmp_path):
    write_params(tmp_path / "params.yaml", {"feedback": {"test_fraction": 0.3}})
    settings = load_settings(tmp_path / "params.yaml")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = "".join(json.dumps(r) + "\n" for r in ROWS)
    (inbox / "round-1.jsonl").write_text(good)
    (inbox / "round-1-again.jsonl").write_text(good)  # the same export twice adds nothing
    (inbox / "bad.csv").write_text("prompt,answer\nq,a\n")
    (tmp_path / "labeling").mkdir()
    write_json(tmp_path / "labeling" / "state.json", {"batches": 1, "waiting_for": "batch-0001"})

    result = import_inbox(settings)

    assert sorted(s["file"] for s in result["imported"]) == ["round-1-again.jsonl", "round-1.jsonl"]
    assert result["added"] == len(ROWS)
    (report,) = result["rejected"]
    assert report["file"] == "bad.csv" and "bad.csv" in report["error"]
    assert list(inbox.glob("*.*")) == []  # nothing left waiting
    aside = inbox / "rejected" / report["moved_to"].rsplit("/", 1)[1]
    assert aside.read_text() == "prompt,answer\nq,a\n"
    assert (
        json.loads(aside.with_name(aside.name + ".report.json").read_text())["error"]
        == report["error"]
    )
    assert len(list((tmp_path / "data/feedback/batches").iterdir())) == 1
    assert read_state(tmp_path / "labeling")["waiting_for"] is None  # labels came back
