"""Shared fixtures: a quiet, hub-free environment and a tiny project to run stages in
(tests/support/project.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from rlhf.flows.env import apply_defaults
from tests.support.project import make_project


def _quiet_env() -> None:
    """Set before test modules import prefect or mlflow, which read settings at import."""
    home = Path(tempfile.mkdtemp(prefix="rlhf-tests-"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    apply_defaults(home)


_quiet_env()


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


# the stages a policy method starts from
UPSTREAM = ("ingest", "pretrain", "sft", "feedback", "reward", "judge")


@pytest.fixture(scope="session")
def trained_upstream(tmp_path_factory) -> Path:
    """The tiny project with every stage before the policy run once for the whole session;
    tests take their own copy (tests.support.project.clone_project) instead of training one."""
    from rlhf.core.settings import load_settings  # noqa: PLC0415  (after _quiet_env)
    from rlhf.flows.runner import run_stage  # noqa: PLC0415
    from rlhf.tasks import BY_NAME  # noqa: PLC0415

    root = make_project(tmp_path_factory.mktemp("upstream") / "project")
    settings = load_settings(root / "params.yaml")
    for stage in UPSTREAM:
        run_stage(BY_NAME[stage], settings)
    return root


# What makes a test an integration test: the folders that run stages and flows, and the
# fixtures that build a tiny project, an install or a fresh interpreter per stage.
INTEGRATION_FOLDERS = ("flows", "tasks")
INTEGRATION_FIXTURES = {"tiny_project", "trained_upstream", "installed", "loaded", "two_runs"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.parent.name
        fixtures = set(getattr(item, "fixturenames", ()))
        if folder in INTEGRATION_FOLDERS or fixtures & INTEGRATION_FIXTURES:
            item.add_marker(pytest.mark.integration)
