"""The StageContext a stage's `run(ctx)` receives: settings, inputs, its output folder, tracking."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd

from rlhf.core.io import read_json
from rlhf.core.pipeline.stage import Stage
from rlhf.core.settings import Settings, UserError
from rlhf.core.tracking.store import attach_metrics, register_model

RECORD = "stage.json"  # what a finished stage leaves beside its outs
METRICS = "metrics.json"
SUMMARY = "summary.json"  # its headline metrics under its name: DVC's metrics file
LOSS_CURVE = "loss.csv"  # the training loss by step, written for a stage that declares it


class ContractError(UserError):
    """A stage read or wrote what the stage table does not declare of it."""


def need_path(need: str, settings: Settings) -> Path:
    """Where an input lives: "data/<folder>" under paths.data, "<stage>/<out>" in artifacts."""
    kind, _, rest = need.partition("/")
    return settings.data_dir / rest if kind == "data" else settings.stage_dir(kind) / rest


def checkpoint_dir(settings: Settings, stage: str, cache_key: str) -> Path:
    """Where a stage's run of this cache key keeps the training state it can resume from."""
    return settings.path(settings.paths.artifacts, ".work", stage, cache_key[:16])


@dataclass
class StageContext:
    """What a stage function gets: settings, its inputs, its (temporary) output folder."""

    stage: Stage
    settings: Settings
    out: Path
    run_id: str | None = None
    cache_key: str = ""
    model: dict | None = None  # set by register(): the (last) registered version
    logged_models: list[str] = field(default_factory=list)  # set by register(): model ids
    datasets: dict = field(default_factory=dict)  # need -> the MLflow dataset of that input
    tags: dict[str, str] = field(default_factory=dict)  # the run's provenance (git, params)
    tracking: bool = True  # False in the helper processes of a multi-process stage
    losses: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> *train_loss

    @property
    def checkpoints(self) -> Path:
        """Resumable training state of this stage's run: named by the cache key, so only a
        run of the same inputs, params and code picks it up."""
        return checkpoint_dir(self.settings, self.stage.name, self.cache_key)

    def input(self, stage: str, name: str) -> Path:
        """The out `name` of an upstream stage, which this stage declares it reads."""
        return need_path(self.declared(f"{stage}/{name}"), self.settings)

    def data(self, folder: str) -> Path:
        """The raw data folder paths.data/<folder>, which this stage declares it reads."""
        return need_path(self.declared(f"data/{folder}"), self.settings)

    def named_input(self, field: str) -> Path | None:
        """The file or folder a settings field names (None: it names none), which this stage
        declares it reads."""
        if field not in self.stage.named:
            self.declared(field)
        value = self.settings.value_of(field)
        return self.settings.path(value) if value else None

    def upstream_record(self, stage: str) -> dict:
        """The record of an upstream stage this stage reads an out of."""
        if not any(need.startswith(f"{stage}/") for need in self.stage.inputs(self.settings)):
            self.declared(f"{stage}/{RECORD}")
        return read_json(self.settings.stage_dir(stage) / RECORD)

    def declared(self, need: str) -> str:
        if need not in self.stage.inputs(self.settings):
            raise ContractError(
                f"stage {self.stage.name} reads {need}, which the stage table (rlhf.tasks.STAGES) "
                f"does not declare among its inputs ({', '.join(self.stage.inputs(self.settings))})"
            )
        return need

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step is not None:
            losses = {k: float(v) for k, v in metrics.items() if k.endswith("train_loss")}
            self.losses.setdefault(step, {}).update(losses)
        if self.tracking:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def write_losses(self, path: Path) -> None:
        """The training losses logged, one row per step that logged them all (a pair-trained
        judge logs one loss per member)."""
        rows = pd.DataFrame.from_dict(self.losses, orient="index").dropna()
        if rows.empty:
            rows = pd.DataFrame(columns=["train_loss"])
        rows.rename_axis("step").sort_index().to_csv(path)

    def log_table(self, rows: pd.DataFrame, artifact_file: str) -> None:
        """Rows appended to a table artifact the MLflow UI shows."""
        if self.tracking:
            mlflow.log_table(rows, artifact_file)

    def attach_metrics(self, metrics: dict, model_id: str, need: str) -> None:
        """Log metrics on a logged model as measured on the input `need` (a dataset)."""
        if self.tracking and self.run_id:
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            attach_metrics(self.run_id, numbers, model_id, self.datasets.get(need))

    def register(self, model_dir: Path, **tags: str) -> dict:
        """Log the model and register a version of <prefix>-<kind>, the kind the stage table
        declares the stage registers; tags: what the version records that MLflow has no field
        for (e.g. method=ppo). The models and datasets it came from are the run's inputs,
        which the runner logged."""
        kind = self.stage.registers
        if kind is None:
            raise ContractError(
                f"stage {self.stage.name} registers a model, which the stage table "
                "(rlhf.tasks.STAGES) does not declare (registers=...)"
            )
        if not self.tracking:  # a helper process: rank 0 registers
            return {}
        task, tags = self.stage.model_task, {**self.tags, **tags}
        self.model = register_model(model_dir, kind, task, self.settings, tags)
        self.logged_models.append(self.model["model_id"])
        return self.model
