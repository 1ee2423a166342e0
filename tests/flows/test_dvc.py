"""DVC declares the same stages: `dvc repro` runs them once, then finds nothing to do; and
the Prefect flow reuses what DVC built."""

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def dvc(*args, cwd):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "DVC_SITE_CACHE_DIR": str(cwd / ".dvc-site")}
    out = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, text=True,
                         capture_output=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_dvc_repro_runs_each_stage_once_and_prefect_reuses_it(tiny_project):
    from flows.pipeline import rlhf_pipeline

    dvc("init", "-q", cwd=tiny_project)
    dvc("add", "-q", "data", cwd=tiny_project)
    first = dvc("repro", cwd=tiny_project)
    assert first.count("Running stage") == 7, first
    second = dvc("repro", cwd=tiny_project)
    assert "Running stage" not in second
    assert "up to date" in second
    flow = rlhf_pipeline(params_path=str(tiny_project / "params.yaml"))
    assert flow["ran"] == []
