"""The `rlhf-pipeline` Prefect flow: one task per stage, each skipped when its outputs are
current, then promote.

One cache: a stage's record (artifacts/<stage>/stage.json) holds its cache key, the digest of
its inputs' content, its params and its code (rlhf.flows.runner.cache_key), and its outs'
digests; a stage whose key is unchanged and whose outs are intact is not run again, however it
was run before (this flow, `rlhf stage`, `dvc repro`). Its Prefect task then ends in a state
named Cached. The promote step runs after the stages every time: it reads and moves the
registry's aliases, which no cache key covers.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator

from mlflow.entities import RunTag
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.states import Completed
from prefect.utilities.urls import url_for

from rlhf.core.io import read_json
from rlhf.core.pipeline.locks import project_lock
from rlhf.core.pipeline.provenance import lineage_tags
from rlhf.core.settings import Settings, load_settings
from rlhf.core.tracking.store import Store, masked, open_store, tracking_uri
from rlhf.flows.dvc_yaml import commit_lock
from rlhf.flows.runner import cache_key, finished_record, run_stage
from rlhf.tasks import BY_NAME, stages_for
from rlhf.tasks.promote import promote


@task
def stage_task(name: str, params_path: str, parent_run_id: str | None, force: bool = False):
    """Run one stage, or return the record of its current outputs (state Cached)."""
    settings, stage = load_settings(params_path), BY_NAME[name]
    done = None if force else finished_record(stage, settings, cache_key(stage, settings))
    if done is not None:
        return Completed(name="Cached", message="outputs current", data=done)
    started = time.perf_counter()
    with warnings_logged():
        record = run_stage(stage, settings, parent_run_id)
    return {**record, "seconds": time.perf_counter() - started}


@contextlib.contextmanager
def warnings_logged() -> Iterator[None]:
    """Warnings go to the task run's log as well as to stderr (its prints go there through
    the flow's log_prints), so a scheduled run can be diagnosed from the Prefect UI."""
    logger, show = get_run_logger(), warnings.showwarning

    def show_and_log(message, category, filename, lineno, file=None, line=None):
        logger.warning("%s: %s (%s:%s)", category.__name__, message, filename, lineno)
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = show_and_log
    try:
        yield
    finally:
        warnings.showwarning = show


@task
def promote_task(params_path: str, parent_run_id: str | None) -> dict:
    """Decide on the evaluated policy and move the registry's aliases (never cached)."""
    return promote(load_settings(params_path), parent_run_id)


def run_stages(
    stages, params_path: str, parent_id: str, force: bool = False
) -> tuple[dict[str, dict], set[str]]:
    """Each stage as a Prefect task, in order: (stage -> record, the stages that ran)."""
    records, ran = {}, set()
    for stage in stages:
        state = stage_task.with_options(name=stage.name, task_run_name=stage.name)(
            stage.name, params_path, parent_id, force, return_state=True
        )
        records[stage.name] = state.result()
        if state.name != "Cached":
            ran.add(stage.name)
    return records, ran


def summary_rows(records: dict[str, dict], ran: set[str]) -> list[dict]:
    rows = []
    for name, rec in records.items():
        headline = BY_NAME[name].summary(rec["metrics"])
        shown = ", ".join(f"{k}={v:.4g}" for k, v in headline.items())
        rows.append(
            {
                "stage": name,
                "status": "ran" if name in ran else "cached",
                "seconds": round(rec.get("seconds", 0.0), 1) if name in ran else 0.0,
                "model": (rec.get("model") or {}).get("uri", ""),
                "mlflow_run": rec["run_id"],
                "metrics": shown,
            }
        )
    return rows


def flow_run_id() -> str:
    """The id of the Prefect flow run this code runs in."""
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    return str(ctx.flow_run.id)


def flow_run_tags() -> dict[str, str]:
    """Tags that lead from an MLflow run to the Prefect flow run that started it (the URL
    when a Prefect UI is configured: an ephemeral API has none)."""
    run_id = flow_run_id()
    url = url_for("flow-run", obj_id=run_id)
    return {"prefect.flow_run_id": run_id, **({"prefect.flow_run_url": url} if url else {})}


def mlflow_ui(settings: Settings) -> str | None:
    """The MLflow UI's address: a tracking server serves it; a SQLite store has none."""
    uri = tracking_uri(settings)
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def mlflow_links(settings: Settings, experiment_id: str, parent_id: str, rows: list[dict]) -> str:
    """Markdown leading from the Prefect run to its MLflow runs and registered versions."""
    ui = mlflow_ui(settings)

    def run_link(name: str, run_id: str) -> str:
        return f"[{name}]({ui}/#/experiments/{experiment_id}/runs/{run_id})" if ui else run_id

    def model_link(uri: str) -> str:
        name, _, version = uri.removeprefix("models:/").partition("/")
        return f"[{uri}]({ui}/#/models/{name}/versions/{version})" if ui and version else uri

    lines = [
        "# MLflow",
        "",
        f"- tracking store: `{masked(tracking_uri(settings))}`",
        f"- parent run: {run_link('rlhf-pipeline', parent_id)}",
        "",
        "| stage | MLflow run | registered model |",
        "|---|---|---|",
        *(
            f"| {r['stage']} | {run_link(r['stage'], r['mlflow_run'])} | "
            f"{model_link(r['model']) if r['model'] else ''} |"
            for r in rows
        ),
    ]
    if not ui:
        lines += ["", "Links appear here when MLFLOW_TRACKING_URI names a tracking server."]
    return "\n".join(lines) + "\n"


@flow(name="rlhf-pipeline", log_prints=True)
def rlhf_pipeline(params_path: str = "params.yaml", force: bool = False) -> dict:
    """ingest -> pretrain -> sft -> feedback -> reward -> judge -> policy -> evaluate, then promote.

    Returns {"records": stage -> record, "ran": stages that ran, "promotion": the promote
    step's decision, "dvc": what became of dvc.lock, "parent_run_id": ..., "flow_run_id": ...}.
    """
    settings = load_settings(params_path)
    with project_lock(settings):
        return run_pipeline(settings, params_path, force)


def run_pipeline(settings: Settings, params_path: str, force: bool) -> dict:
    store = open_store(settings)
    tags = {**lineage_tags(settings), **flow_run_tags(), "entrypoint": "prefect"}
    with store.parent_run("rlhf-pipeline", tags) as parent_id:
        records, ran = run_stages(stages_for(settings), params_path, parent_id, force)
        promotion = promote_task(params_path, parent_id)
        publish_artifacts(settings, store, parent_id, records, ran)
        evaluated = records["evaluate"]["metrics"]
        store.log_to(parent_id, {k: v for k, v in evaluated.items() if isinstance(v, int | float)})
        store.client.log_batch(
            parent_id,
            tags=[
                RunTag(f"stage.{name}", "ran" if name in ran else f"cached:{rec['run_id']}")
                for name, rec in records.items()
            ],
        )
    # after the runs closed: a slow or interrupted commit never undoes a finished pipeline
    dvc = commit_lock(settings, params_path, list(records))
    return {
        "records": records,
        "ran": sorted(ran),
        "promotion": promotion,
        "dvc": dvc,
        "parent_run_id": parent_id,
        "flow_run_id": flow_run_id(),
    }


def publish_artifacts(
    settings: Settings, store: Store, parent_id: str, records: dict[str, dict], ran: set[str]
) -> None:
    """The run's summary as Prefect artifacts: the stages, their MLflow runs and models, who
    judged the feedback, the evaluation and the promotion."""
    rows = summary_rows(records, ran)
    create_table_artifact(key="rlhf-stages", table=rows, description="Stages of this run")
    create_markdown_artifact(
        key="rlhf-mlflow",
        markdown=mlflow_links(settings, store.experiment_id, parent_id, rows),
        description="This run's MLflow runs and registered models",
    )
    if "feedback" in records:
        annotators_artifacts(read_json(settings.out_path("feedback", "annotators.json")))
    for key, stage in (("rlhf-evaluation", "evaluate"), ("rlhf-promotion", "promote")):
        report = settings.out_path(stage, "report.md").read_text(encoding="utf-8")
        create_markdown_artifact(key=key, markdown=report)


def annotators_artifacts(annotators: dict) -> None:
    """Who judged the feedback, and how often they agree."""
    create_table_artifact(
        key="rlhf-annotators",
        table=annotators["annotators"],
        description="Human feedback: votes per annotator",
    )
    create_table_artifact(
        key="rlhf-annotator-agreement",
        table=annotators["agreement"],
        description="Human feedback: agreement where annotators overlap",
    )
