"""Run one stage: cache key, MLflow run, atomic outputs, and the record it returns.

Every entry point (Prefect task, `dvc repro`'s command, `rlhf stage`) comes through
run_stage, so a stage behaves the same however it is started.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tasks.io import atomic_dir, digest_path, read_json, write_json
from tasks.settings import Settings
from tasks.stages import BY_NAME, Stage

RECORD = "stage.json"  # what a finished stage leaves beside its outs
METRICS = "metrics.json"
CODE_ROOT = Path(__file__).resolve().parents[1]  # where tasks/ and models/ live


def need_path(need: str, settings: Settings) -> Path:
    """Where an input lives: "data/<folder>" under paths.data, "<stage>/<out>" in artifacts."""
    kind, _, rest = need.partition("/")
    return (settings.data_dir / rest if kind == "data"
            else settings.path(settings.paths.artifacts, need))


def input_digests(stage: Stage, settings: Settings) -> dict[str, str]:
    """Digest of every input: raw data folders and upstream outs."""
    paths = {need: need_path(need, settings) for need in stage.needs}
    # A missing input is the stage's own error to report, with its own message.
    return {k: digest_path(p) if p.exists() else "missing" for k, p in paths.items()}


def cache_key(stage: Stage, settings: Settings, inputs: dict[str, str] | None = None) -> str:
    """What a stage's output depends on: its inputs' content (input_digests, computed here
    unless given), its params and its code."""
    code = {f: digest_path(CODE_ROOT / f) for f in stage.code_files}
    inputs = input_digests(stage, settings) if inputs is None else inputs
    blob = json.dumps({"stage": stage.name, "inputs": inputs,
                       "params": settings.section_digest(*stage.params), "code": code},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def finished_record(stage: Stage, settings: Settings, key: str) -> dict | None:
    """The record of an earlier run with this key whose outs are still intact, if any."""
    path = settings.stage_dir(stage.name) / RECORD
    if not path.exists():
        return None
    record = read_json(path)
    if record.get("cache_key") != key:
        return None
    for out, digest in record["outs"].items():
        p = settings.stage_dir(stage.name) / out
        if not p.exists() or digest_path(p) != digest:
            return None
    return record


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
        return self.settings.path(self.settings.paths.artifacts, ".work", self.stage.name,
                                  self.cache_key[:16])

    def input(self, stage: str, name: str) -> Path:
        return self.settings.stage_dir(stage) / name

    def upstream_record(self, stage: str) -> dict:
        return read_json(self.settings.stage_dir(stage) / RECORD)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if not self.tracking:
            return
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_table(self, rows, artifact_file: str) -> None:
        """Rows (a DataFrame) appended to a table artifact the MLflow UI shows."""
        if not self.tracking:
            return
        import mlflow

        mlflow.log_table(rows, artifact_file)

    def log_dataset(self, stage: str, name: str, context: str = "training") -> None:
        if not self.tracking:
            return
        from tasks.tracking import log_dataset

        path = self.input(stage, name)
        log_dataset(path, name.removesuffix(".parquet"), digest_path(path), context)

    def register(self, model_dir: Path, kind: str, task: str = "text-generation",
                 parent: str | None = None, **related: str) -> dict:
        """Register the model in the registry with its lineage; parent: the models:/ URI it
        was trained from; related: other models it depends on (e.g. reward_model=...)."""
        if not self.tracking:  # a helper process: rank 0 registers
            return {}
        from tasks.tracking import register_model

        lineage = {**self.tags, "mlflow_run_id": self.run_id or "", "parent_model": parent or "",
                   **related}
        self.model = register_model(model_dir, kind, task, self.settings, lineage)
        return self.model


def lineage_tags(settings: Settings) -> dict[str, str]:
    from tasks.tracking import git_commit

    commit, dirty = git_commit(settings.root)
    params = settings.path("params.yaml")
    data_dvc = settings.path("data.dvc")
    data_md5 = "untracked"
    if data_dvc.exists():
        import yaml

        data_md5 = yaml.safe_load(data_dvc.read_text())["outs"][0]["md5"]
    return {"git_commit": commit, "git_dirty": str(dirty).lower(),
            "params_digest": digest_path(params) if params.exists() else "none",
            "data_dvc_md5": data_md5}


def _flat_params(settings: Settings, stage: Stage) -> dict[str, object]:
    flat = {}
    for section in stage.params:
        value = getattr(settings, section)
        items = value.model_dump().items() if hasattr(value, "model_dump") else [("", value)]
        for k, v in items:
            flat[f"{section}.{k}".rstrip(".")] = v
    return flat


def run_helper(stage: Stage, settings: Settings, key: str) -> dict:
    """A helper process of a multi-process stage (rank > 0): it trains alongside rank 0,
    which alone tracks, writes the outs and registers; what it writes is thrown away."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"rlhf-{stage.name}-") as tmp:
        ctx = StageContext(stage, settings, Path(tmp), cache_key=key, tracking=False)
        metrics = importlib.import_module(stage.module).run(ctx)
    return {"stage": stage.name, "cache_key": key, "run_id": None, "metrics": metrics,
            "model": None, "outs": {}}


def run_stage(name: str, settings: Settings, parent_run_id: str | None = None) -> dict:
    """Run a stage now (no cache check), write its outs atomically, return its record."""
    import mlflow

    from models.distributed import is_main_process
    from tasks.tracking import configure

    stage = BY_NAME[name]
    inputs = input_digests(stage, settings)
    key = cache_key(stage, settings, inputs)
    if not is_main_process():
        return run_helper(stage, settings, key)
    experiment_id = configure(settings)
    # the run and its models carry the digest of every input: `rlhf lineage` follows them
    tags = {**lineage_tags(settings), **{f"input.{k}": v for k, v in inputs.items()}}
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, parent_run_id=parent_run_id,
                          nested=parent_run_id is not None,
                          tags={**tags, "stage": name, "cache_key": key}) as run:
        mlflow.log_params(_flat_params(settings, stage))
        with atomic_dir(settings.stage_dir(name)) as tmp:
            ctx = StageContext(stage, settings, tmp, run.info.run_id, key, tags=tags)
            metrics = importlib.import_module(stage.module).run(ctx)
            record = {"stage": name, "cache_key": key, "run_id": run.info.run_id,
                      "metrics": metrics, "model": ctx.model,
                      "outs": {o: digest_path(tmp / o) for o in stage.outs}}
            write_json(tmp / METRICS, metrics)
            write_json(tmp / RECORD, record)
        # the outs are in place: no run needs this stage's checkpoints (nor another key's) now
        shutil.rmtree(ctx.checkpoints.parent, ignore_errors=True)
        mlflow.set_tags({f"output.{o}": d for o, d in record["outs"].items()})
        mlflow.log_dict(metrics, METRICS)  # what `rlhf reproduce` expects a rebuild to match
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                            if isinstance(v, (int, float)) and math.isfinite(v)})
    return record
