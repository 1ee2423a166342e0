"""A run's provenance, as tags on its MLflow run and registered versions: the git commit and
whether the code had uncommitted changes, and the digests of params.yaml and data.dvc."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from rlhf.core.io import digest_path
from rlhf.core.pipeline.codedeps import top_packages
from rlhf.core.settings import Settings, read_yaml
from rlhf.core.tracking.store import PARAMS_TAG

# What defines a model: uncommitted changes here make a run "dirty" (a README edit does not).
DEFINING = (
    *top_packages(),
    "params.yaml",
    "dvc.yaml",
    "data.dvc",
    "pyproject.toml",
    "requirements.lock",
)


def git_commit(root: str | Path) -> tuple[str, bool]:
    """(commit, dirty) of the repository holding root; ("unknown", True) outside git."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *DEFINING],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return rev, bool(dirty.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True


def lineage_tags(settings: Settings) -> dict[str, str]:
    """A run's provenance: the commit (in MLflow's own tag, which the UI shows), whether the
    code had uncommitted changes, and the digests of params.yaml and data.dvc."""
    commit, dirty = git_commit(settings.root)
    params = settings.path("params.yaml")
    data_dvc = settings.path("data.dvc")
    data_md5 = "untracked"
    if data_dvc.exists():
        data_md5 = read_yaml(data_dvc, ".dvc file")["outs"][0]["md5"]
    return {
        MLFLOW_GIT_COMMIT: commit,
        "git_dirty": str(dirty).lower(),
        PARAMS_TAG: digest_path(params) if params.exists() else "none",
        "data_dvc_md5": data_md5,
    }
