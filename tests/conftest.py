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


# What makes a test an integration test: the folders that run stages and flows, and the
# fixtures that build a tiny project, an install or a fresh interpreter per stage.
INTEGRATION_FOLDERS = ("flows", "tasks")
INTEGRATION_FIXTURES = {"tiny_project", "installed", "loaded", "two_runs"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.parent.name
        fixtures = set(getattr(item, "fixturenames", ()))
        if folder in INTEGRATION_FOLDERS or fixtures & INTEGRATION_FIXTURES:
            item.add_marker(pytest.mark.integration)
