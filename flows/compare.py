"""`rlhf compare` and the `rlhf-compare` Prefect flow: on this data, with this reward model,
which alignment method wins, at what KL and at what cost.

  upstream    the pipeline's stages up to the judge, cached as `rlhf run` caches them, so every
              method starts from the same SFT model and reward model
  methods     each policy method named in compare.methods trained by the policy stage and
              evaluated by the evaluate stage, in its own folder artifacts/compare/<method>/
              that sees the shared upstream stages through links; cached by the same keys as
              any stage, registered as `<prefix>-policy` with its method
  best_of_n   compare.best_of_n SFT samples per held-out prompt and seed, the reward model's
              favourite kept (rlhf.core.evaluation.best_of_n)
  scoreboard  artifacts/compare/scoreboard/: compare.csv and compare.md (win rates against
              SFT with 95% intervals, KL, length, distinct-2, training time, generated tokens)
              and compare.png (score against KL, every snapshot); in MLflow (the run
              `rlhf-compare`) and as Prefect artifacts
Every method is evaluated on the same held-out prompts at the same seeds. Nothing is promoted:
the champion stays what it was.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from rlhf.core.evaluation import plots
from rlhf.core.evaluation.best_of_n import evaluate_best_of_n
from rlhf.core.evaluation.records import NEW, REFERENCE, from_metrics, to_metrics
from rlhf.core.evaluation.scoreboard import (
    board_markdown,
    function_columns,
    method_row,
    referee,
    reference_row,
)
from rlhf.core.io import atomic_dir, write_json
from rlhf.core.pipeline.locks import project_lock
from rlhf.core.pipeline.provenance import lineage_tags
from rlhf.core.pipeline.stage import Stage
from rlhf.core.settings import BEST_OF_N, METHODS, Policy, Settings, UserError, load_settings
from rlhf.core.tracking.store import open_store
from rlhf.flows.pipeline import flow_run_tags, run_stages
from rlhf.flows.runner import cache_key, finished_record, run_stage
from rlhf.tasks import BY_NAME, stages_for

TRAINED = ("policy", "evaluate")  # the stages each method runs in its own folder
FOLDER = "compare"  # under paths.artifacts


def upstream(settings: Settings) -> tuple[Stage, ...]:
    """The stages every method shares."""
    return tuple(s for s in stages_for(settings) if s.name not in TRAINED)


def method_settings(settings: Settings, method: str) -> Settings:
    """The settings a method trains with: its policy.method, and its own artifacts folder,
    where links lead to the shared upstream stages."""
    folder = Path(settings.paths.artifacts, FOLDER, method)
    for stage in upstream(settings):
        link = settings.path(str(folder), stage.name)
        target = os.path.relpath(settings.stage_dir(stage.name), link.parent)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target, target_is_directory=True)
    return settings.model_copy(
        update={
            "policy": Policy.model_validate({"method": method}),
            "paths": settings.paths.model_copy(update={"artifacts": str(folder)}),
        }
    )


@task
def method_task(params_path: str, method: str, parent_id: str) -> dict:
    """Train and evaluate one method, or reuse its intact outputs: {row, curve, evaluated}."""
    settings = method_settings(load_settings(params_path), method)
    records: dict[str, dict] = {}
    for name in TRAINED:
        stage = BY_NAME[name]
        done = finished_record(stage, settings, cache_key(stage, settings))
        if done is None:
            done = run_stage(stage, settings, parent_id)
            open_store(settings).client.update_run(done["run_id"], name=f"{name}-{method}")
        records[name] = done
    metrics = records["evaluate"]["metrics"]
    evaluated = from_metrics(metrics)
    curve = pd.read_csv(settings.stage_dir("evaluate") / "score_vs_kl.csv")
    model = records["policy"]["model"] or {}
    row = method_row(method, evaluated, records["policy"]["metrics"], model.get("uri", ""))
    return {
        "row": row | function_columns(metrics, NEW),
        "reference_functions": function_columns(metrics, REFERENCE),
        "curve": curve.assign(method=method).to_dict("records"),
        "evaluated": evaluated,
    }


@task
def best_of_n_task(params_path: str) -> dict:
    """Best-of-n evaluated like the methods: {row, curve (none), evaluated, samples}."""
    settings = load_settings(params_path)
    n = settings.compare.best_of_n
    evaluated, samples = evaluate_best_of_n(settings, n)
    return {
        "row": method_row(f"best_of_{n}", evaluated, {}, samples_per_answer=n),
        "curve": [],
        "evaluated": evaluated,
        "samples": samples,
    }


def chosen_methods(settings: Settings, methods: list[str] | None) -> list[str]:
    methods = methods or list(settings.compare.methods)
    known = [*METHODS, BEST_OF_N]
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise UserError(f"compare: unknown method(s) {', '.join(unknown)} ({' | '.join(known)})")
    if not settings.rewards.uses_reward_model:
        offline = [m for m in methods if m == BEST_OF_N or not METHODS[m].online]
        methods = [m for m in methods if m not in offline]
        if not methods:
            raise UserError("compare: no online method to compare (rewards.model_weight is 0)")
        if offline:
            print(
                f"compare: {', '.join(offline)} left out: without a reward model "
                "(rewards.model_weight 0) there is no reward model or feedback to learn from",
                file=sys.stderr,
            )
    return list(dict.fromkeys(methods))


@flow(name="rlhf-compare", log_prints=True)
def rlhf_compare(params_path: str = "params.yaml", methods: list[str] | None = None) -> dict:
    """The upstream stages, then each method (compare.methods unless given), then the
    scoreboard. Returns {"board": rows, "markdown", "folder", "parent_run_id"}."""
    settings = load_settings(params_path)
    chosen = chosen_methods(settings, methods)
    with project_lock(settings):
        return compare(settings, params_path, chosen)


def compare(settings: Settings, params_path: str, methods: list[str]) -> dict:
    store = open_store(settings)
    tags = {
        **lineage_tags(settings),
        **flow_run_tags(),
        "entrypoint": "prefect",
        "methods": ",".join(methods),
    }
    with store.parent_run("rlhf-compare", tags) as parent_id:
        run_stages(upstream(settings), params_path, parent_id)
        results = [
            best_of_n_task(params_path)
            if method == BEST_OF_N
            else method_task.with_options(task_run_name=method)(params_path, method, parent_id)
            for method in methods
        ]
        sft = reference_row(results[0]["evaluated"]) | next(
            (r["reference_functions"] for r in results if r.get("reference_functions")), {}
        )
        board = pd.DataFrame([sft, *(r["row"] for r in results)])
        curves = pd.DataFrame([point for r in results for point in r["curve"]])
        text = board_markdown(board)
        folder = settings.path(settings.paths.artifacts, FOLDER, "scoreboard")
        with atomic_dir(folder) as tmp:
            board.to_csv(tmp / "compare.csv", index=False)
            (tmp / "compare.md").write_text(text, encoding="utf-8")
            plots.methods_vs_kl(
                board, curves, referee(board), settings.judge.kl_budget, tmp / "compare.png"
            )
            for r in results:
                if "samples" in r:
                    r["samples"].to_csv(tmp / "best_of_n_samples.csv", index=False)
                    write_json(tmp / "best_of_n_metrics.json", to_metrics(r["evaluated"]))
        store.client.log_artifacts(parent_id, str(folder), "compare")
        stamp = int(time.time() * 1000)
        store.client.log_batch(
            parent_id,
            metrics=[
                Metric(f"{row['method']}_{k}", float(row[k]), stamp, 0)
                for row in board.iloc[1:].to_dict("records")
                for k in ("gold_win_rate", "judge_win_rate", "rm_win_rate", "kl")
                if row.get(k) is not None and pd.notna(row[k])
            ],
        )
        create_markdown_artifact(key="rlhf-compare", markdown=text)
        create_table_artifact(
            key="rlhf-compare-table",
            table=board.drop(columns=["model"]).round(4).to_dict("records"),
            description="Alignment methods against SFT on the same held-out prompts and seeds",
        )
    return {
        "board": board.to_dict("records"),
        "markdown": text,
        "folder": str(folder),
        "parent_run_id": parent_id,
    }
