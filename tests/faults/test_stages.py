"""A stage under faults of the machine: outputs blocked by a file, a read-only or full
artifacts folder. One line, and artifacts/ byte-identical: the stage writes beside its outputs
and replaces them only when it finished."""

import sys
from pathlib import Path

import pytest

from rlhf.flows.cli import main
from tests.support.faults import (
    assert_one_line_error,
    namespaces,
    read_only,
    run_in_namespace,
    small_fs,
    tree,
)

pytestmark = pytest.mark.integration  # runs a stage, with its MLflow run

needs_namespaces = pytest.mark.skipif(
    namespaces() is not None, reason=f"a tmpfs needs a mount namespace ({namespaces()})"
)


def stage(project: Path, name: str) -> list[str]:
    params = str(project / "params.yaml")
    return [sys.executable, "-m", "rlhf.flows.cli", "--params", params, "stage", name]


@pytest.mark.parametrize("blocked", ["artifacts", "artifacts/ingest"])
def test_outputs_blocked_by_a_file_are_one_line_and_change_nothing(tiny_project, capsys, blocked):
    (tiny_project / blocked).parent.mkdir(parents=True, exist_ok=True)
    (tiny_project / blocked).write_text("a file where the outputs go")
    before = tree(tiny_project / "artifacts")

    rc = main(["--params", str(tiny_project / "params.yaml"), "stage", "ingest"])

    assert_one_line_error(rc, capsys.readouterr().err, str(tiny_project / blocked))
    assert tree(tiny_project / "artifacts") == before


@needs_namespaces
@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_a_read_only_or_full_artifacts_folder_is_one_line_and_changes_nothing(tiny_project, fault):
    artifacts = tiny_project / "artifacts"
    artifacts.mkdir()
    (artifacts / "kept.txt").write_text("an earlier output")
    setup = read_only(artifacts) if fault == "read-only" else small_fs(artifacts, "1m", 8192)

    result = run_in_namespace(setup, stage(tiny_project, "ingest"), artifacts)

    line = assert_one_line_error(result["rc"], result["stderr"], str(artifacts))
    assert ("read-only" if fault == "read-only" else "no space left") in line
    assert result["after"] == result["before"]


@needs_namespaces
def test_a_disk_that_fills_while_a_model_is_saved_is_one_line_and_changes_nothing(tiny_project):
    """torch, safetensors and tokenizers report a full disk in their own exception types."""
    assert main(["--params", str(tiny_project / "params.yaml"), "stage", "ingest"]) == 0
    artifacts = tiny_project / "artifacts"

    result = run_in_namespace(
        small_fs(artifacts, "20m", 8192), stage(tiny_project, "pretrain"), artifacts
    )

    line = assert_one_line_error(result["rc"], result["stderr"].splitlines()[-1] + "\n")
    assert str(artifacts / "pretrain") in line and "no space left" in line
    assert result["after"] == result["before"]
