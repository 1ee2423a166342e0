"""The `rlhf-feedback-loop` flow: new labels in, a judged policy out, the next batch to label.

One iteration, in the order it runs (the `feedback-loop` deployment runs it on a schedule):
  0. pull     with loop.label_studio: a pushed batch whose every task is annotated is
              exported from Label Studio into the inbox
  1. import   every export waiting in loop.inbox becomes a batch of the feedback dataset;
              a file that fails validation moves to inbox/rejected/ with its report
  2. settle   a human gate (promotion.judge: human) whose labels are in is decided, and an
              audit of an automatic promotion upheld or rolled back (an alert in the log and
              the summary)
  3. retrain  when at least loop.min_new_comparisons arrived since the reward model last
              trained (or no policy is champion yet), and no human gate is still waiting:
              the rlhf-pipeline flow, as a subflow.
              Ingest, pretrain and SFT are unchanged and cached, so the reward model and PPO
              start from the champion's lineage (its SFT parent); evaluation then promotes
              the new policy or rejects it, with reasons on the registry version
  4. collect  the next batch to label: prompts from the pool, two champion responses each
  5. label    demo only (loop.annotators names the demo's simulated annotators): they answer
              it as a Label Studio export dropped in the inbox, for the next iteration to
              import, and a human gate's or an audit's pairs at once, so its decision is
              taken in the same iteration
  6. push     with loop.label_studio: the batch out for labelling becomes tasks of the
              Label Studio project (one not pushed before, e.g. while the server was down)
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from rlhf.core.evaluation.gate import LABELS, gate_dir, waiting_gates
from rlhf.core.feedback.collect import (
    LABEL_STUDIO_TASKS,
    champion_version,
    collect_batch,
    policy_name,
)
from rlhf.core.feedback.inbox import import_inbox, inbox_dir
from rlhf.core.feedback.label_studio import LabelStudioError, pull_finished, push_pending
from rlhf.core.io import read_json, write_json
from rlhf.core.pipeline.locks import project_lock
from rlhf.core.pipeline.plugins import load_plugin
from rlhf.core.settings import Settings, UserError, load_settings
from rlhf.core.tracking.lineage import input_model_ids, registered_uris
from rlhf.core.tracking.registry import registry_client
from rlhf.core.tracking.store import open_store
from rlhf.flows.pipeline import rlhf_pipeline
from rlhf.tasks.promote import settle_gates


@task
def import_inbox_task(params_path: str) -> dict:
    return import_inbox(load_settings(params_path))


@task
def collect_task(params_path: str) -> dict | None:
    return collect_batch(load_settings(params_path))


@task
def label_studio_task(params_path: str, step: str) -> dict:
    """Pull a finished batch from Label Studio into the inbox (step "pull") or push the batch
    out for labelling (step "push"). A server that cannot be reached is reported in the
    loop's summary and its log; the loop goes on with the inbox."""
    settings = load_settings(params_path)
    try:
        done = pull_finished(settings) if step == "pull" else push_pending(settings)
    except LabelStudioError as e:
        get_run_logger().warning(str(e))
        return {"error": str(e)}
    return done or {}


@task
def settle_gates_task(params_path: str) -> list[dict]:
    return settle_gates(load_settings(params_path))


def simulate_labels(settings: Settings, folder: Path, target: Path, seed: int) -> str:
    """The annotators params.yaml names (the demo's) label the tasks in folder; their export
    is written to target."""
    annotators = load_plugin(settings, "loop.annotators")
    assert annotators is not None  # the flow labels only when loop.annotators names them
    target.parent.mkdir(parents=True, exist_ok=True)
    write_json(target, annotators(read_json(folder / LABEL_STUDIO_TASKS), seed))
    return str(target)


@task
def simulate_labels_task(params_path: str, batch: dict) -> str:
    """The next batch to label, answered into the inbox."""
    settings = load_settings(params_path)
    number = int(batch["batch"].removeprefix("batch-"))
    target = inbox_dir(settings) / f"{batch['batch']}-labelstudio.json"
    return simulate_labels(settings, Path(batch["folder"]), target, settings.seed * 7919 + number)


@task
def simulate_gate_labels_task(params_path: str, version: int, kind: str = "gate") -> str:
    """The human gate's (or the audit's) pairs, answered into its labels/."""
    settings = load_settings(params_path)
    folder = gate_dir(settings, str(version), kind)
    target = folder / LABELS / "labelstudio.json"
    return simulate_labels(settings, folder, target, settings.seed * 6007 + version)


def rows_in(path) -> int:
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0


def trained_pairs(settings: Settings) -> int:
    """Comparisons in the feedback table the current reward model was trained on (the
    feedback stage's copy of the dataset's pairs.parquet)."""
    return rows_in(settings.stage_dir("feedback") / "pairs.parquet")


def parent_model(settings: Settings, version) -> str | None:
    """The models:/ URI of the SFT version a registered policy version was trained from."""
    if version is None:
        return None
    run = registry_client().get_run(
        registry_client().get_model_version(policy_name(settings), str(version)).run_id
    )
    sft = f"models:/{settings.mlflow.registry_prefix}-sft/"
    found = [u for m in input_model_ids(run) for u in registered_uris(m) if u.startswith(sft)]
    return found[0] if found else None


def summary_markdown(s: dict) -> str:
    lines = [
        f"# Feedback loop: {s['outcome']}",
        "",
        f"- inbox: {s['imported_files']} file(s) imported ({s['added_pairs']} new pairs), "
        f"{s['rejected_files']} rejected"
        + "".join(f"\n  - rejected `{r['file']}`: {r['error']}" for r in s["rejected"]),
        f"- new comparisons since the reward model last trained: {s['new_comparisons']} "
        f"(retrain at {s['min_new_comparisons']})",
        f"- champion: v{s['champion_before']} -> v{s['champion_after']}",
    ]
    if s["settled"]:
        lines.append(f"- human gates and audits decided: {', '.join(s['settled'])}")
    lines += [f"- **alert**: {alert}" for alert in s["alerts"]]
    if s["retrained"]:
        lines.append(
            f"- retrained on {s['trained_pairs']} comparisons (was "
            f"{s['trained_pairs_before']}): policy v{s['policy_version']} {s['decision']}, "
            f"trained from {s['policy_parent']} (the champion's: {s['champion_parent']})"
        )
    if s["collected"]:
        lines.append(
            f"- next batch to label: {s['collected']['batch']} "
            f"({s['collected']['tasks']} pairs) in {s['collected']['folder']}"
        )
    lines += label_studio_lines(s.get("label_studio_pull", {}), s.get("label_studio_push", {}))
    return "\n".join(lines) + "\n"


def label_studio_lines(pull: dict, push: dict) -> list[str]:
    lines = [f"- Label Studio: {step['error']}" for step in (pull, push) if "error" in step]
    if pull.get("file"):
        lines.append(f"- Label Studio: {pull['batch']} pulled ({pull['tasks']} tasks annotated)")
    elif "batch" in pull:
        lines.append(
            f"- Label Studio: {pull['batch']} has {pull['annotated']} of {pull['tasks']} "
            "tasks annotated"
        )
    if "batch" in push:
        lines.append(
            f"- Label Studio: {push['batch']} pushed ({push['tasks']} tasks, "
            f"project {push['project']})"
        )
    return lines


def log_loop_run(settings: Settings, summary: dict) -> str:
    metrics = {
        k: float(summary[k])
        for k in (
            "imported_files",
            "rejected_files",
            "added_pairs",
            "new_comparisons",
            "trained_pairs",
            "retrained",
        )
    }
    tags = {
        "outcome": summary["outcome"],
        "champion_before": str(summary["champion_before"]),
        "champion_after": str(summary["champion_after"]),
        "pipeline_run": summary.get("pipeline_run") or "",
        "alerts": " | ".join(summary["alerts"])[:4000],
    }
    with open_store(settings).run("feedback-loop", tags=tags) as run:
        mlflow.log_metrics(metrics)
        mlflow.log_dict(summary, "loop/summary.json")
    return run.info.run_id


@flow(name="rlhf-feedback-loop", log_prints=True)
def feedback_loop(params_path: str = "params.yaml") -> dict:
    """One iteration of the loop (see the module's docstring); returns its summary."""
    settings = load_settings(params_path)
    if not settings.rewards.uses_reward_model:
        raise UserError(
            "the feedback loop brings labels to a reward model, and rewards.model_weight is 0: "
            "run `rlhf run` (or the `pipeline` deployment) instead"
        )
    cfg = settings.loop
    # One iteration at a time per project, and none beside a pipeline run in the same folder.
    with project_lock(settings):
        pulled = label_studio_task(params_path, "pull") if cfg.label_studio else {}
        inbox = import_inbox_task(params_path)
        settled = settle_gates_task(params_path)
        before = trained_pairs(settings)
        new = rows_in(settings.feedback_dir / "pairs.parquet") - before
        champion_before = champion_version(settings)
        # a human gate or an audit still waiting for labels: no new challenger until it is
        # decided (an audit may move the champion back)
        waiting = [p.name for p in waiting_gates(settings)]
        retrain = not waiting and (new >= cfg.min_new_comparisons or champion_before is None)
        summary = {
            "waiting_gates": waiting,
            "imported_files": len(inbox["imported"]),
            "rejected_files": len(inbox["rejected"]),
            "rejected": inbox["rejected"],
            "added_pairs": inbox["added"],
            "new_comparisons": new,
            "min_new_comparisons": cfg.min_new_comparisons,
            "trained_pairs_before": before,
            "retrained": retrain,
            "champion_before": champion_before,
        }
        if retrain:
            result = rlhf_pipeline(params_path=params_path)
            promotion = result["promotion"]
            policy_version = int(promotion["policy"]["version"])
            if promotion["verdict"] == "pending" and cfg.annotators:
                summary["gate_labelled_into"] = simulate_gate_labels_task(
                    params_path, policy_version
                )
                promotion = next(
                    (r for r in settle_gates_task(params_path) if r["verdict"] != "pending"),
                    promotion,
                )
            if promotion.get("audit") and cfg.annotators:
                summary["audit_labelled_into"] = simulate_gate_labels_task(
                    params_path, policy_version, "audit"
                )
                settled += settle_gates_task(params_path)
            summary |= {
                "pipeline_run": result["parent_run_id"],
                "decision": promotion["verdict"],
                "policy_version": policy_version,
                # the lineage PPO started from, next to the champion's
                "policy_parent": parent_model(settings, policy_version),
                "champion_parent": parent_model(settings, champion_before),
            }
        summary["settled"] = [f"v{r['policy']['version']} {r['verdict']}" for r in settled]
        summary["alerts"] = [
            f"policy v{r['policy']['version']}'s promotion rolled back by its audit: "
            + "; ".join(r["reasons"])
            for r in settled
            if r["verdict"] == "audit rolled back"
        ]
        for alert in summary["alerts"]:
            get_run_logger().warning(f"ALERT: {alert}")
        summary["trained_pairs"] = trained_pairs(settings)
        summary["champion_after"] = champion_version(settings)
        summary["collected"] = batch = collect_task(params_path)
        if batch and cfg.annotators:
            summary["labelled_into"] = simulate_labels_task(params_path, batch)
        if cfg.label_studio:
            summary["label_studio_pull"] = pulled
            summary["label_studio_push"] = label_studio_task(params_path, "push")
    if retrain:
        summary["outcome"] = f"policy v{summary['policy_version']} {summary['decision']}"
    elif waiting:
        summary["outcome"] = f"waiting for the human gate's labels ({', '.join(waiting)})"
    else:
        summary["outcome"] = f"waiting for labels ({new} of {cfg.min_new_comparisons} new)"
    create_markdown_artifact(key="rlhf-feedback-loop", markdown=summary_markdown(summary))
    summary["mlflow_run"] = log_loop_run(settings, summary)
    return summary
