"""The loop's inbox: each complete file is imported as a batch or set aside with a report."""

import json
import os

import pytest

from rlhf.core.feedback import inbox as inbox_module
from rlhf.core.feedback.collect import read_state
from rlhf.core.feedback.inbox import import_inbox, pending
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


@pytest.mark.integration  # imports into a dataset and records the import in MLflow
def test_links_fifos_and_crashing_files_are_set_aside_unread_and_the_rest_imported(
    tmp_path, monkeypatch
):
    write_params(tmp_path / "params.yaml", {"feedback": {"test_fraction": 0.3}})
    settings = load_settings(tmp_path / "params.yaml")
    secret = tmp_path / "credentials.json"
    secret.write_text('{"password": "hunter2-secret"}\n')
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a-link.json").symlink_to(secret)
    os.mkfifo(inbox / "b-pipe.jsonl")
    (inbox / "c-crash.jsonl").write_text('{"prompt": "hunter2-secret"}\n')
    (inbox / "d-good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    for i, name in enumerate(["a-link.json", "b-pipe.jsonl", "c-crash.jsonl", "d-good.jsonl"]):
        os.utime(inbox / name, (1000 + i, 1000 + i), follow_symlinks=False)
    real_import = inbox_module.import_batch

    def crash_on_c(sources, *args):
        if sources[0].name == "c-crash.jsonl":
            raise RuntimeError(sources[0].read_text())  # a failure that quotes the file
        return real_import(sources, *args)

    monkeypatch.setattr(inbox_module, "import_batch", crash_on_c)

    result = import_inbox(settings)

    assert [s["file"] for s in result["imported"]] == ["d-good.jsonl"]
    assert result["added"] == len(ROWS)
    errors = {r["file"]: r["error"] for r in result["rejected"]}
    assert errors == {
        "a-link.json": "a-link.json: a symbolic link (the inbox takes regular files only)",
        "b-pipe.jsonl": "b-pipe.jsonl: not a regular file (the inbox takes regular files only)",
        "c-crash.jsonl": "import failed (RuntimeError)",
    }
    reports = "".join(p.read_text() for p in (inbox / "rejected").glob("*.report.json"))
    assert "hunter2" not in reports and "hunter2" not in json.dumps(result)
    assert secret.read_text() == '{"password": "hunter2-secret"}\n'  # the link moved, not it
    assert sorted(p.name for p in inbox.iterdir()) == ["imported", "rejected"]
