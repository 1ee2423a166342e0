"""Run one stage: cache key, MLflow run, atomic outputs, and the record it returns.

Every entry point (Prefect task, `dvc repro`'s command, `rlhf stage`) comes through
run_stage, so a stage behaves the same however it is started.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

from rlhf.core.io import (
    atomic_dir,
    clear_leftovers,
    digest_path,
    os_faults,
    read_json,
    remove_empty,
    shown,
    write_json,
)
from rlhf.core.pipeline.codedeps import code_deps, is_ours, own_modules, source_file, source_path
from rlhf.core.pipeline.context import (
    LOSS_CURVE,
    METRICS,
    RECORD,
    SUMMARY,
    ContractError,
    StageContext,
    checkpoint_dir,
    need_path,
)
from rlhf.core.pipeline.provenance import lineage_tags
from rlhf.core.pipeline.records import built_record, changed_outputs, stage_record
from rlhf.core.pipeline.stage import Stage
from rlhf.core.settings import METHODS, Settings, UserError
from rlhf.core.tracking.dvc_source import DvcSource, repository
from rlhf.core.tracking.store import (
    PARAMS_TAG,
    Store,
    input_dataset,
    is_interruption,
    log_inputs,
    open_store,
)
from rlhf.models.distributed import is_main_process, world_size
from rlhf.models.errors import note_stopped
from rlhf.models.train import last_complete_checkpoint

# The code every stage runs through besides its own: this runner (and what it imports).
RUNNER = __name__


def input_digests(stage: Stage, settings: Settings) -> dict[str, str]:
    """Digest of every input: raw data folders, upstream outs, files its settings name."""
    paths = {need: need_path(need, settings) for need in stage.inputs(settings)}
    paths |= {field: settings.path(v) for field in stage.named if (v := settings.value_of(field))}
    return {k: input_digest(p) for k, p in paths.items()}


def input_digest(path: Path) -> str:
    """The digest of an input; "missing" for one that is absent or an empty folder (the stage
    reports that itself, with its own message)."""
    try:
        return digest_path(path)
    except FileNotFoundError:
        return "missing"


def named_code(stage: Stage, settings: Settings) -> list[str]:
    """The modules of the code its settings name: each plugins field's ("module:object", or a
    list of entries with an fn, as rewards.functions), and the trainer of the method it trains."""
    specs = []
    for field in stage.code_fields(settings):
        value = settings.value_of(field)
        specs += [v.fn for v in value] if isinstance(value, list) else [value] if value else []
    if stage.by_method:
        specs.append(settings.method.trainer)
    return [spec.partition(":")[0] for spec in specs]


def stage_code(stage: Stage, settings: Settings) -> tuple[str, ...]:
    """The rlhf modules a stage runs: its module's, the named code's (and those the project's
    own named code imports) and the runner's, each with everything they import."""
    named = named_code(stage, settings)
    reached = [m for n in named if not is_ours(n) for m in own_modules(n, Path(settings.root))[1]]
    return code_deps(stage.module, RUNNER, *named, *reached)


def own_code(stage: Stage, settings: Settings) -> list[str]:
    """The project's own modules its settings name (a reward function's), with the project
    modules they import: paths relative to the project."""
    root = Path(settings.root).resolve()
    own = [m for m in named_code(stage, settings) if not is_ours(m)]
    return sorted({f.relative_to(root).as_posix() for m in own for f in own_modules(m, root)[0]})


def code_files(stage: Stage, settings: Settings) -> list[str]:
    """stage_code as source paths relative to the package root (dvc.yaml's deps)."""
    return [source_path(m) for m in stage_code(stage, settings)]


def cache_key(stage: Stage, settings: Settings, inputs: dict[str, str] | None = None) -> str:
    """What a stage's output depends on: its inputs' content (input_digests, computed here
    unless given), its params and its code."""
    code = {m: digest_path(source_file(m)) for m in stage_code(stage, settings)}
    code |= {f: digest_path(Path(settings.root) / f) for f in own_code(stage, settings)}
    inputs = input_digests(stage, settings) if inputs is None else inputs
    blob = json.dumps(
        {
            "stage": stage.name,
            "inputs": inputs,
            "params": settings.section_digest(*stage.sections(settings)),
            "code": code,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def finished_record(stage: Stage, settings: Settings, key: str) -> dict | None:
    """The record of an earlier run with this key whose outputs are as it wrote them, if any;
    an output changed since is said, and the stage runs again."""
    record, why = stage_record(settings, stage.name)
    if record is None and why != f"no {RECORD}":
        print(f"{stage.name}: {why}: not built, running it", file=sys.stderr)
    if record is None or record.get("cache_key") != key:
        return None
    changed = changed_outputs(settings, record)
    if changed:
        print(
            f"{stage.name}: {', '.join(changed)} changed since the stage wrote them: running it "
            "again",
            file=sys.stderr,
        )
        return None
    return record


def verify_inputs(stage: Stage, settings: Settings, inputs: dict[str, str]) -> None:
    """Every input another stage wrote is as that stage's record says it wrote it: a stage
    never starts from an output changed (or left half-built) since. UserError otherwise."""
    for need, digest in inputs.items():
        producer, _, out = need.partition("/")
        if producer == "data" or need in stage.named or digest == "missing":
            continue  # raw data has no producer; a missing input the stage names itself
        # the digest is the one just taken for the cache key: no output is read twice
        if built_record(settings, producer)["outs"].get(out) != digest:
            raise UserError(
                f"{shown(need_path(need, settings))}: not the output stage {producer} recorded: "
                f"run `rlhf stage {producer}` again (or `rlhf run`)"
            )


def is_model(need: str) -> bool:
    """A stage's registered models are its out `model`: reading one is starting from a model."""
    return need.endswith("/model")


def input_models(stage: Stage, settings: Settings) -> list[str]:
    """The logged models a stage starts from: those its upstream stages registered."""
    return [
        model_id
        for need in stage.inputs(settings)
        if is_model(need)
        for model_id in read_json(settings.stage_dir(need.partition("/")[0]) / RECORD).get(
            "logged_models", []
        )
    ]


def input_datasets(stage: Stage, settings: Settings, inputs: dict[str, str], rev: str) -> dict:
    """need -> the MLflow dataset of each input that is data, its source the DVC-tracked path
    at this commit (raw data is versioned by data.dvc, stage outputs by dvc.lock)."""
    root = settings.path().resolve()
    repo = repository(root)
    found = {}
    for need in stage.inputs(settings):
        path, md5 = need_path(need, settings), inputs[need]
        if is_model(need) or not path.exists():
            continue
        where = path.resolve()
        raw = need.startswith("data/")
        source = DvcSource(
            repo,
            where.relative_to(root).as_posix() if where.is_relative_to(root) else str(where),
            rev,
            md5,
            "data.dvc" if raw else "dvc.lock",
            "" if raw else need,
        )
        # named by its DVC path: the name and digest are what the MLflow UI shows of a dataset
        found[need] = input_dataset(path, source.path, source)
    return found


def _flat_params(settings: Settings, stage: Stage) -> dict[str, object]:
    flat = {}
    for section in stage.sections(settings):
        value = getattr(settings, section)
        items = value.model_dump().items() if hasattr(value, "model_dump") else [("", value)]
        for k, v in items:
            flat[f"{section}.{k}".rstrip(".")] = v
    return flat


def _run_module(stage: Stage, ctx: StageContext) -> dict:
    return importlib.import_module(stage.module).run(ctx)


def run_helper(stage: Stage, settings: Settings, key: str) -> dict:
    """A helper process of a multi-process stage (rank > 0): it trains alongside rank 0,
    which alone tracks, writes the outs and registers; what it writes is thrown away."""
    with tempfile.TemporaryDirectory(prefix=f"rlhf-{stage.name}-") as tmp:
        ctx = StageContext(stage, settings, Path(tmp), cache_key=key, tracking=False)
        metrics = _run_module(stage, ctx)
    return {
        "stage": stage.name,
        "cache_key": key,
        "run_id": None,
        "metrics": metrics,
        "model": None,
        "outs": {},
    }


def refuse_unsharded(stage: Stage, settings: Settings) -> None:
    """parallel.strategy fsdp under several processes is for the online policy methods; the
    Trainer stages would silently run as DDP replicas, which is not what was asked."""
    online = stage.by_method and settings.method.online
    if world_size() > 1 and settings.parallel.strategy == "fsdp" and not online:
        sharded = ", ".join(m.name for m in METHODS.values() if m.online)
        raise UserError(
            f"{stage.name}: parallel.strategy fsdp shards the online policy methods ({sharded}) "
            "only; run this stage with parallel.strategy ddp"
        )


def check_outs(stage: Stage, folder: Path) -> None:
    """What a stage wrote is exactly what the stage table declares: an out it did not write, or
    a file it wrote that is not an out, is an error naming both."""
    declared = {out.split("/")[0] for out in stage.outs}
    written = {p.name for p in folder.iterdir()}
    missing = [out for out in stage.outs if not (folder / out).exists()]
    if missing or written - declared:
        found = ", ".join(sorted(written - declared)) or "nothing else"
        raise ContractError(
            f"stage {stage.name} wrote {found} and not {', '.join(missing) or 'less'}: the stage "
            f"table (rlhf.tasks.STAGES) declares its outs as {', '.join(stage.outs)}"
        )


def resume_point(work: Path) -> Path | None:
    """The checkpoint a stage's next run resumes from: a Trainer stage's newest whole
    checkpoint-N, an online method's checkpoint.pt; None: it starts over."""
    trainer = last_complete_checkpoint(work, quiet=True)
    if trainer is not None:
        return Path(trainer)
    online = work / "checkpoint.pt"
    return online if online.is_file() else None


def run_in_place(
    stage: Stage,
    settings: Settings,
    run_id: str,
    inputs: dict[str, str],
    key: str,
    datasets: dict,
    tags: dict,
) -> tuple[dict, StageContext]:
    """The stage's run(ctx) in a temp folder that replaces its outputs only once it finished:
    a failed run (a fault, the disk full, an interrupt) leaves artifacts/ as it was, but for
    the checkpoints it can resume from."""
    name = stage.name
    left = clear_leftovers(settings.stage_dir(name))  # under the project's lock: no writer is alive
    if left:
        names = ", ".join(p.name for p in left)
        print(f"{name}: removed what a killed run left: {names}", file=sys.stderr)
    try:
        with atomic_dir(settings.stage_dir(name)) as tmp:
            ctx = StageContext(stage, settings, tmp, run_id, key, datasets=datasets, tags=tags)
            with os_faults(settings.stage_dir(name)):
                metrics = _run_module(stage, ctx)
            if LOSS_CURVE in stage.outs:
                ctx.write_losses(tmp / LOSS_CURVE)
            check_outs(stage, tmp)
            record = {
                "stage": name,
                "cache_key": key,
                "inputs": inputs,  # the digest of each input it read
                "run_id": run_id,
                "metrics": metrics,
                "model": ctx.model,
                "logged_models": ctx.logged_models,
                "outs": {o: digest_path(tmp / o) for o in stage.outs},
            }
            write_json(tmp / METRICS, metrics)
            write_json(tmp / SUMMARY, {name: stage.summary(metrics)})
            write_json(tmp / RECORD, record)
    except BaseException as e:
        work = checkpoint_dir(settings, name, key)
        remove_empty(work, settings.path())
        if is_interruption(e):
            note_stopped(name, resume_point(work))
        raise
    return record, ctx


def run_stage(stage: Stage, settings: Settings, parent_run_id: str | None = None) -> dict:
    """Run a stage now (no cache check), write its outs atomically, return its record."""
    if not stage.applies(settings):
        raise UserError(
            f"stage {stage.name}: not part of this project's runs: rewards.model_weight is 0 "
            "(no reward model, so no feedback, reward or judge stage)"
        )
    refuse_unsharded(stage, settings)
    inputs = input_digests(stage, settings)
    verify_inputs(stage, settings, inputs)
    key = cache_key(stage, settings, inputs)
    if not is_main_process():
        return run_helper(stage, settings, key)
    store = open_store(settings)
    tags = lineage_tags(settings)
    experiment = os.environ.get("DVC_EXP_NAME") if parent_run_id is None else None
    if experiment:  # `dvc exp run`: the stage's run nests under the experiment's
        identity = {
            "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
            PARAMS_TAG: tags[PARAMS_TAG],
        }
        with store.experiment_run(experiment, identity, tags) as parent:
            record = run_tracked(stage, settings, inputs, key, store, tags, parent)
            summary = {f"{stage.name}.{k}": v for k, v in stage.summary(record["metrics"]).items()}
            store.log_to(parent, summary, _flat_params(settings, stage))
        return record
    return run_tracked(stage, settings, inputs, key, store, tags, parent_run_id)


def run_tracked(
    stage: Stage,
    settings: Settings,
    inputs: dict[str, str],
    key: str,
    store: Store,
    tags: dict[str, str],
    parent_run_id: str | None,
) -> dict:
    """The stage run in its MLflow run (nested under parent_run_id), its metrics logged."""
    name = stage.name
    run_tags = {**tags, "stage": name, "cache_key": key}
    with store.run(name, parent_id=parent_run_id, tags=run_tags) as run:
        mlflow.log_params(_flat_params(settings, stage))
        # what it read, as MLflow's own inputs: `rlhf lineage` and the UI follow them
        datasets = input_datasets(stage, settings, inputs, tags[MLFLOW_GIT_COMMIT])
        log_inputs(
            run.info.run_id,
            [(ds, stage.context) for ds in datasets.values()],
            input_models(stage, settings),
        )
        version_tags = {k: tags[k] for k in (PARAMS_TAG, "data_dvc_md5")}
        record, ctx = run_in_place(
            stage, settings, run.info.run_id, inputs, key, datasets, version_tags
        )
        metrics = record["metrics"]
        # the outs are in place: no run needs this stage's checkpoints (nor another key's) now
        shutil.rmtree(ctx.checkpoints.parent, ignore_errors=True)
        mlflow.set_tags({f"output.{o}": d for o, d in record["outs"].items()})
        mlflow.log_dict(metrics, METRICS)  # what `rlhf reproduce` expects a rebuild to match
        numbers = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        }
        if not ctx.logged_models:
            mlflow.log_metrics(numbers)
        # a model's metrics are logged on it too, measured on the first dataset the stage read
        for model_id in ctx.logged_models:
            ctx.attach_metrics(numbers, model_id, next(iter(datasets), ""))
    return record
