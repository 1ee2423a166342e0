"""Outputs changed behind the pipeline's back: an edited evaluation, a changed or half-built
stage output, an unreadable stage record, registered weights damaged in the store. Each is
noticed before anything is decided on it: one line naming what changed and what to run, or
the stage that owns it runs again, saying so."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from rlhf.core.settings import UserError, load_settings
from rlhf.core.tracking.registry import load_registered_lm
from rlhf.core.tracking.store import open_store
from rlhf.flows.cli import main
from rlhf.flows.runner import cache_key, finished_record, run_stage
from rlhf.models.tokenizer import load_tokenizer
from rlhf.tasks import BY_NAME
from tests.support.faults import assert_one_line_error
from tests.support.project import clone_project


@pytest.fixture(scope="module")
def built(tmp_path_factory, trained_upstream) -> Path:
    """A tiny project with every stage run: a registered policy, evaluated."""
    root = clone_project(trained_upstream, tmp_path_factory.mktemp("tampered") / "project")
    settings = load_settings(root / "params.yaml")
    for stage in ("policy", "evaluate"):
        run_stage(BY_NAME[stage], settings)
    return root


@pytest.fixture
def project(built, tmp_path) -> Path:
    copy = tmp_path / "project"
    clone_project(built, copy)
    return copy


def aliases(project: Path) -> list[tuple]:
    with sqlite3.connect(project / "mlflow.db") as db:
        return sorted(db.execute("SELECT name, alias, version FROM registered_model_aliases"))


def cli(project: Path, capsys, *argv: str) -> tuple[int, str]:
    rc = main(["--params", str(project / "params.yaml"), *argv])
    return rc, capsys.readouterr().err


def test_an_edited_evaluation_is_refused_by_promotion(project, capsys):
    metrics = project / "artifacts/evaluate/metrics.json"
    figures = json.loads(metrics.read_text())
    figures[next(k for k, v in figures.items() if isinstance(v, float))] += 0.25
    metrics.write_text(json.dumps(figures))
    before = aliases(project)

    rc, err = cli(project, capsys, "promote", "--auto")

    line = assert_one_line_error(rc, err, "artifacts/evaluate", "metrics.json")
    assert "changed since stage evaluate wrote them" in line
    assert aliases(project) == before


def test_a_deleted_evaluation_output_is_refused_by_promotion(project, capsys):
    (project / "artifacts/evaluate/samples.csv").unlink()

    rc, err = cli(project, capsys, "promote", "--auto")

    assert "samples.csv changed since stage evaluate wrote them" in assert_one_line_error(rc, err)


def test_a_changed_output_is_said_and_its_stage_runs_again(project, capsys):
    settings = load_settings(project / "params.yaml")
    stage = BY_NAME["sft"]
    key = cache_key(stage, settings)
    assert finished_record(stage, settings, key) is not None
    heldout = project / "artifacts/sft/heldout.parquet"
    heldout.write_bytes(heldout.read_bytes() + b"\0")

    assert finished_record(stage, settings, key) is None
    assert "sft: heldout.parquet changed since the stage wrote them: running it again" in (
        capsys.readouterr().err
    )


def test_a_stage_does_not_start_from_a_changed_input(project, capsys):
    heldout = project / "artifacts/sft/heldout.parquet"
    heldout.write_bytes(heldout.read_bytes() + b"\0")

    rc, err = cli(project, capsys, "stage", "evaluate")

    line = assert_one_line_error(rc, err, "artifacts/sft", "heldout.parquet")
    assert "run `rlhf stage sft` again" in line


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_an_unusable_stage_record_means_not_built(project, capsys, damage):
    record = project / "artifacts/sft/stage.json"
    text = record.read_text()
    record.write_text(text[: len(text) // 2] if damage == "truncated" else '{"stage": "x"}')
    settings = load_settings(project / "params.yaml")
    stage = BY_NAME["sft"]

    assert finished_record(stage, settings, cache_key(stage, settings)) is None
    assert "sft: " in capsys.readouterr().err

    rc, err = cli(project, capsys, "stage", "evaluate")  # it reads sft's outputs

    line = assert_one_line_error(rc, err, "artifacts/sft")
    assert "stage sft is not built" in line


def test_registered_weights_damaged_in_the_store_are_never_loaded(project, tmp_path):
    settings = load_settings(project / "params.yaml")
    open_store(settings)
    name = f"{settings.mlflow.registry_prefix}-policy"
    tok = load_tokenizer(str(project / "artifacts/policy/model"))
    assert load_registered_lm(name, "1", tok, tmp_path / "intact") is not None

    client = MlflowClient()
    model_id = client.get_model_version(name, "1").source.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    stored = Path(location.removeprefix("file://")) / "model/model.safetensors"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight
    stored.write_bytes(bytes(data))

    with pytest.raises(UserError, match=rf"models:/{name}/1: its weights are not those registered"):
        load_registered_lm(name, "1", tok, tmp_path / "damaged")
    shutil.rmtree(tmp_path / "intact")
