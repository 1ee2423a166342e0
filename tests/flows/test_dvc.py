"""DVC declares the same stages: `dvc repro` runs them once, then finds nothing to do; and
the Prefect flow reuses what DVC built."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhf.flows.pipeline import rlhf_pipeline
from rlhf.tasks import STAGES
from tests.flows.test_cli import ROOT, comparisons, project, rlhf

BIN = Path(sys.executable).parent


def dvc(*args, cwd):
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(cwd / ".dvc-site"),
    }
    out = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=cwd, env=env, text=True, capture_output=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.e2e  # dvc repro of every stage in a git repository
def test_dvc_repro_runs_each_stage_once_and_prefect_reuses_it(tiny_project):
    dvc("init", "-q", cwd=tiny_project)
    dvc("add", "-q", "data", cwd=tiny_project)
    first = dvc("repro", cwd=tiny_project)
    assert first.count("Running stage") == len(STAGES), first
    second = dvc("repro", cwd=tiny_project)
    assert "Running stage" not in second
    assert "up to date" in second
    flow = rlhf_pipeline(params_path=str(tiny_project / "params.yaml"))
    assert flow["ran"] == []


def test_feedback_import_appends_a_new_version_of_the_dvc_tracked_dataset(tmp_path):
    params = project(tmp_path)
    (tmp_path / "data").mkdir()
    dvc("init", "-q", "--no-scm", cwd=tmp_path)
    first = rlhf(
        "--params",
        str(params),
        "feedback",
        "import",
        str(comparisons(tmp_path / "a.jsonl", 10)),
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    assert not (tmp_path / "data.dvc").exists()  # nothing tracks data/ yet
    dvc("add", "-q", "data", cwd=tmp_path)
    v1 = (tmp_path / "data.dvc").read_text()
    batch_one = json.loads(first.stdout.splitlines()[-1])["batch"]
    (tmp_path / "more").mkdir()
    second = rlhf(
        "--params",
        str(params),
        "feedback",
        "import",
        str(comparisons(tmp_path / "more/b.jsonl", 14)),
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr
    assert "data.dvc updated" in second.stderr
    assert (tmp_path / "data.dvc").read_text() != v1
    assert "up to date" in dvc("status", cwd=tmp_path)
    summary = json.loads(second.stdout.splitlines()[-1])
    assert (summary["added"], summary["merged"], summary["dataset_pairs"]) == (4, 10, 14)
    assert (tmp_path / "data/feedback/batches" / batch_one / "votes.parquet").is_file()


def test_the_demo_data_is_what_data_dvc_records(tmp_path):
    """A fresh clone writes data/ with `rlhf data`: DVC must find what data.dvc records, or
    the clone's `dvc status` reports the demo's inputs changed and `dvc repro` reruns all."""
    params = project(tmp_path)
    made = rlhf("--params", str(params), "data", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    dvc("init", "-q", "--no-scm", cwd=tmp_path)
    (tmp_path / ".dvcignore").write_text((ROOT / ".dvcignore").read_text())
    dvc("add", "-q", "data", cwd=tmp_path)
    assert md5_of(tmp_path / "data.dvc") == md5_of(ROOT / "data.dvc")


def md5_of(dvc_file: Path) -> str:
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
