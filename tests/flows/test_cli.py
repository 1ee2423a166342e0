"""The `rlhf` command as a user runs it: fast help, one-line errors, dvc.yaml in sync."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from rlhf.core.io import digest_path
from rlhf.flows.cli import verdict_line

ROOT = Path(__file__).resolve().parents[2]


def rlhf(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "rlhf.flows.cli", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from rlhf.flows.cli import build_parser; build_parser().format_help(); "
        "print([m for m in ('torch', 'mlflow', 'prefect', 'transformers', "
        "'great_expectations') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True, capture_output=True)
    assert out.stdout.strip() == "[]"
    assert "run" in rlhf("--help").stdout


def test_bad_params_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("ppo:\n  cliprange: high\n")
    out = rlhf("--params", str(bad), "stage", "policy")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"rlhf: error: {bad}: ppo.cliprange: Input should be a valid number (got 'high')"
    ]


def project(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    return tmp_path / "params.yaml"


def comparisons(path: Path, n: int, same_every: int = 0) -> Path:
    rows = [
        {
            "prompt": f"Question {i}?",
            "chosen": f"Good {i}",
            "rejected": f"Bad {i}",
            "annotator": f"ann-{i % 3}",
        }
        for i in range(n)
    ]
    for row in rows[::same_every] if same_every else []:
        row["rejected"] = row["chosen"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_feedback_import_prints_the_summary_as_its_last_line(tmp_path):
    params = project(tmp_path)
    out = rlhf(
        "--params",
        str(params),
        "feedback",
        "import",
        str(comparisons(tmp_path / "a.jsonl", 20)),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("total", "imported", "quarantined", "reasons")} == {
        "total": 20,
        "imported": 20,
        "quarantined": 0,
        "reasons": {},
    }
    assert summary["pairs_digest"] == digest_path(tmp_path / "data/feedback/pairs.parquet")

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("rlhf").experiment_id])
    assert run.data.tags["batch"] == summary["batch"] and run.data.metrics["imported"] == 20
    assert "feedback/annotators.json" in {
        a.path for a in client.list_artifacts(run.info.run_id, "feedback")
    }


def test_failed_feedback_gate_is_one_line_and_adds_no_batch(tmp_path):
    params = project(tmp_path)
    bad = comparisons(tmp_path / "bad.jsonl", 12, same_every=3)
    out = rlhf("--params", str(params), "feedback", "import", str(bad), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"rlhf: error: {bad}: 4 of 12 records rejected (33%, limit 20%): chosen == rejected: 4 "
        "(records bad.jsonl:1, bad.jsonl:4, bad.jsonl:7, bad.jsonl:10)"
    ]
    assert not list((tmp_path / "data/feedback").glob("batches/*"))


@pytest.mark.faults
def test_feedback_import_with_the_tracking_server_down_keeps_the_batch_and_says_so(tmp_path):
    params = project(tmp_path)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = f"http://rlhf:secret-password@127.0.0.1:{port}"
    out = subprocess.run(
        [sys.executable, "-m", "rlhf.flows.cli", "--params", str(params), "feedback", "import"]
        + [str(comparisons(tmp_path / "a.jsonl", 20))],
        cwd=tmp_path,
        text=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": down},
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        summary["added"] == 20 and (tmp_path / "data/feedback/batches" / summary["batch"]).is_dir()
    )
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith(f"rlhf: error: MLflow at http://rlhf:***@127.0.0.1:{port}: no answer")
    assert "Connection refused" in error and "the batch is imported and kept" in error
    assert "secret-password" not in out.stderr + out.stdout


def test_params_that_is_a_folder_or_binary_is_one_line(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    for path, message in [
        (tmp_path, "a folder, not a params file"),
        (tmp_path / "binary.yaml", "not a text file (byte 0 is not UTF-8)"),
    ]:
        out = rlhf("--params", str(path), "stage", "policy")
        assert out.returncode == 2
        assert out.stderr.strip().splitlines() == [f"rlhf: error: {path}: {message}"]


def test_feedback_import_of_an_unknown_format_names_the_fields(tmp_path):
    params = project(tmp_path)
    (tmp_path / "x.csv").write_text("text,label\nhello,1\n")
    out = rlhf("--params", str(params), "feedback", "import", "x.csv", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "rlhf: error: x.csv: unknown feedback format (fields: label, text); name one with "
        "--format (hh|trl|summarize|shp|alpacafarm|ratings|labelstudio)"
    ]


def test_run_without_data_is_one_line_naming_the_folder(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    out = rlhf("--params", str(tmp_path / "params.yaml"), "run", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"rlhf: error: {tmp_path}/data: no such folder (generate the demo data with "
        "`rlhf data`, or point paths.data at your own)"
    ]


def test_serve_without_a_prefect_server_says_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    out = rlhf("--params", str(project(tmp_path)), "serve")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "rlhf: error: PREFECT_API_URL is not set: schedules need a running Prefect server "
        "(`rlhf servers start` prints the line to export)"
    ]


def test_the_final_summary_says_plainly_whether_the_policy_was_promoted_and_why():
    kl = "KL to the reference 4.12 > the budget 4"
    held = {"policy": {"version": "3"}, "champion_after": "2", "promoted": False}
    line = verdict_line({**held, "verdict": "rejected", "judge": "judge", "reasons": [kl]})
    assert line == (
        f"not promoted (rejected): policy v3; v2 stays the champion. Decided by judge: {kl}."
    )
    first = {**held, "champion_after": "3", "promoted": True, "verdict": "promoted"}
    assert verdict_line({**first, "judge": "judge", "reasons": ["a"]}).startswith(
        "promoted: policy v3 is the champion. Decided by judge: a"
    )
