"""The StageContext a stage's `run(ctx)` receives: settings, inputs, its output folder, tracking."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd

from rlhf.core.io import digest_path, read_json
from rlhf.core.settings import Settings
from rlhf.core.stage import Stage
from rlhf.core.tracking import log_dataset, register_model

RECORD = "stage.json"  # what a finished stage leaves beside its outs
METRICS = "metrics.json"


@dataclass
class StageContext:
    """What a stage function gets: settings, its inputs, its (temporary) output folder."""

    stage: Stage
    settings: Settings
    out: Path
    run_id: str | None = None
    cache_key: str = ""
    model: dict | None = None  # set by register(): the registered version
    tags: dict[str, str] = field(default_factory=dict)  # lineage shared by run and models
    tracking: bool = True  # False in the helper processes of a multi-process stage

    @property
    def checkpoints(self) -> Path:
        """Resumable training state of this stage's run: named by the cache key, so only a
        run of the same inputs, params and code picks it up."""
        return self.settings.path(
            self.settings.paths.artifacts, ".work", self.stage.name, self.cache_key[:16]
        )

    def input(self, stage: str, name: str) -> Path:
        return self.settings.stage_dir(stage) / name

    def upstream_record(self, stage: str) -> dict:
        return read_json(self.settings.stage_dir(stage) / RECORD)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.tracking:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_table(self, rows: pd.DataFrame, artifact_file: str) -> None:
        """Rows appended to a table artifact the MLflow UI shows."""
        if self.tracking:
            mlflow.log_table(rows, artifact_file)

    def log_dataset(self, stage: str, name: str, context: str = "training") -> None:
        if self.tracking:
            path = self.input(stage, name)
            log_dataset(path, name.removesuffix(".parquet"), digest_path(path), context)

    def register(
        self,
        model_dir: Path,
        kind: str,
        task: str = "text-generation",
        parent: str | None = None,
        **related: str,
    ) -> dict:
        """Register the model in the registry with its lineage; parent: the models:/ URI it
        was trained from; related: other models it depends on (e.g. reward_model=...)."""
        if not self.tracking:  # a helper process: rank 0 registers
            return {}
        lineage = {
            **self.tags,
            "mlflow_run_id": self.run_id or "",
            "parent_model": parent or "",
            **related,
        }
        self.model = register_model(model_dir, kind, task, self.settings, lineage)
        return self.model
