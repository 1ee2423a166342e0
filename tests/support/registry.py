"""A DVC-tracked git project with two pipeline runs (different PPO settings), and the CLI
run in-process against it: what the registry, lineage and MLflow UI tests read."""

import contextlib
import io
import subprocess
from pathlib import Path

import yaml

from rlhf.flows.cli import main
from rlhf.flows.pipeline import rlhf_pipeline
from tests.flows.test_dvc import dvc
from tests.support.project import make_project

GIT = ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci"]


def commit(project: Path, message: str) -> str:
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=project, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, check=True, capture_output=True, text=True
    ).stdout.strip()


def rlhf(project: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--params", str(project / "params.yaml"), *argv])
    return code, out.getvalue()


def two_runs(root: Path) -> dict:
    project = make_project(root / "project")
    dvc("init", "-q", cwd=project)
    dvc("remote", "add", "-q", "-d", "local", str(root / "dvc-remote"), cwd=project)
    dvc("add", "-q", "data", cwd=project)
    dvc("push", "-q", cwd=project)
    first_commit = commit(project, "track data with DVC")
    first = rlhf_pipeline(params_path=str(project / "params.yaml"))

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ppo"] |= {"iterations": 4, "lr": 0.001, "snapshot_every": 2}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    commit(project, "PPO: more iterations, higher learning rate")
    second = rlhf_pipeline(params_path=str(project / "params.yaml"))
    return {
        "root": root,
        "project": project,
        "first": first,
        "second": second,
        "first_commit": first_commit,
    }
