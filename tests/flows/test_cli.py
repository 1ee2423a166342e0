"""The `rlhf` command as a user runs it: fast help, one-line errors, dvc.yaml in sync."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def rlhf(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_help_imports_no_heavy_library():
    code = ("import sys; from flows.cli import build_parser; build_parser().format_help(); "
            "print([m for m in ('torch', 'mlflow', 'prefect', 'transformers', "
            "'great_expectations') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True, capture_output=True)
    assert out.stdout.strip() == "[]"
    assert "run" in rlhf("--help").stdout


def test_bad_params_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("ppo:\n  cliprange: high\n")
    out = rlhf("--params", str(bad), "stage", "ppo")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"rlhf: error: {bad}: ppo.cliprange: Input should be a valid number (got 'high')"]


def test_failed_gate_stops_with_a_one_line_report(tiny_project):
    feedback = tiny_project / "data/feedback/comparisons.jsonl"
    rows = [json.loads(line) for line in feedback.read_text().splitlines()]
    for row in rows[::3]:
        row["rejected"] = row["chosen"]
    feedback.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = rlhf("stage", "ingest", cwd=tiny_project)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("rlhf:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert f"{tiny_project}/data/feedback: {len(rows[::3])} of {len(rows)} records rejected" in lines[0]
    assert "chosen == rejected" in lines[0] and "comparisons.jsonl:1," in lines[0]
    assert not (tiny_project / "artifacts/ingest").exists()  # nothing half-written


def test_committed_dvc_yaml_matches_the_stage_table():
    assert rlhf("dvc-yaml").stdout == (ROOT / "dvc.yaml").read_text()


def test_run_without_data_is_one_line_naming_the_folder(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    out = rlhf("--params", str(tmp_path / "params.yaml"), "run", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"rlhf: error: {tmp_path}/data: no such folder (generate the demo data with "
        "`rlhf data`, or point paths.data at your own)"]
