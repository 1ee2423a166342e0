"""The promote step, after evaluate: should the evaluated policy take `champion`?

Not a cached stage and not in dvc.yaml: it reads the registry's current champion, which is
mutable state no digest covers, and it moves aliases, so it runs every time it is asked to
(after the pipeline's stages, from the feedback loop, or as `rlhf promote --auto`) and
`dvc repro` never changes the registry. In the order it runs:
  1. read      the evaluation (metrics.json, samples.csv) and the policy version it judged
  2. compare   when another version is champion: sample it at the evaluation's seeds on the
               same prompts (paired with the evaluation's samples of the new policy), its
               metrics and the new policy's win rates against it, with 95% intervals
  3. gate      with `promotion.judge: human`: the champion-vs-challenger pairs go out for
               labelling (rlhf.core.evaluation.gate) and the decision is pending until the
               labels are in; `settle_gates` takes it then (the feedback loop calls it every
               iteration)
  4. decide    the rules in params.yaml (`promotion`), rlhf.core.tracking.registry.decide: the
               independent judge decides, the optimised reward model can only hold it back
  5. record    `challenger` always; `champion` when won; the verdict, who decided and why on
               the version; artifacts/promote/ (decision.json, report.md) and an MLflow run
"""

from __future__ import annotations

import mlflow
import pandas as pd

from rlhf.core.evaluation.gate import GATE, close_gate, human_metrics, open_gate, waiting_gates
from rlhf.core.evaluation.report import promotion_markdown
from rlhf.core.evaluation.sampling import (
    NEW,
    Bench,
    eval_seeds,
    perplexity,
    policy_metrics,
    read_samples,
    sample_registered,
    win_rates,
)
from rlhf.core.feedback.collect import policy_name
from rlhf.core.io import atomic_dir, read_json, write_json
from rlhf.core.pipeline.context import METRICS, RECORD
from rlhf.core.settings import Settings, UserError
from rlhf.core.tracking.registry import CHAMPION, Decision, alias_version, decide, record_decision
from rlhf.core.tracking.store import configure
from rlhf.models.lm import start_run

DECISION = "decision.json"
# what decision.json keeps of the metrics: every judge's view and the KL
DECISION_METRICS = ("judge_", "human_", "rm_", "gold_", "kl_", "champion_version")


def against_champion(
    settings: Settings, name: str, champion: str, evaluated: pd.DataFrame
) -> tuple[pd.DataFrame, float]:
    """The champion's samples on the evaluation's prompts and seeds (paired with its samples
    of the new policy, which sampling at the same seeds reproduces), and its perplexity."""
    cfg = settings.evaluate
    device = start_run(settings.seed, settings.device)
    bench = Bench.load(settings, device, cfg.max_new_tokens, cfg.temperature)
    prompts = list(dict.fromkeys(evaluated["prompt"]))
    seeds = eval_seeds(settings.seed, cfg.samples_per_prompt)
    rows, model = sample_registered(
        name, champion, bench, prompts=prompts, seeds=seeds, label="champion"
    )
    heldout = pd.read_parquet(settings.stage_dir("sft") / "heldout.parquet")
    return rows, perplexity(model, bench.tok, heldout, device)


def champion_metrics(
    settings: Settings, samples: pd.DataFrame, perplexity_: float, champion: str
) -> dict:
    cfg = settings.evaluate
    return {
        **policy_metrics(samples, "champion"),
        "perplexity_champion": perplexity_,
        **win_rates(samples, "champion", cfg.bootstrap_resamples, settings.seed),
        "champion_version_compared": int(champion),
    }


def promote(settings: Settings, parent_run_id: str | None = None, dry_run: bool = False) -> dict:
    """Decide on the evaluated policy and move the aliases; returns the decision record.
    dry_run: decide only (no gate opened, nothing recorded, no alias moved)."""
    evaluation = settings.stage_dir("evaluate")
    if not (evaluation / METRICS).exists():
        raise UserError(f"{evaluation}: no evaluation to promote from (run the pipeline first)")
    metrics = read_json(evaluation / METRICS)
    new = read_json(settings.stage_dir("policy") / RECORD)["model"]
    configure(settings)
    champion = alias_version(new["name"], CHAMPION)
    samples = read_samples(evaluation / "samples.csv")
    if champion not in (None, new["version"]):
        evaluated = samples[samples["policy"] == NEW]
        rows, champion_perplexity = against_champion(settings, new["name"], champion, evaluated)
        samples = pd.concat([evaluated, rows], ignore_index=True)
        metrics |= champion_metrics(settings, samples, champion_perplexity, champion)
    if dry_run:
        decision = decide(
            metrics, settings.promotion, settings.judge.kl_budget, new["version"], champion
        )
        return record_of(new, decision, champion, champion, metrics) | {"dry_run": True}
    if settings.promotion.judge == "human" and champion != new["version"]:
        gate = open_gate(settings, new["version"], champion, samples, metrics)
        metrics |= human_metrics(gate, settings)
    return conclude(settings, new, champion, metrics, parent_run_id)


def settle_gates(settings: Settings) -> list[dict]:
    """Decide every human gate whose labels are in; their decision records (a gate still
    short of labels stays open). A gate opened against a champion that has changed since is
    refused: its comparison no longer stands."""
    configure(settings)
    name, records = policy_name(settings), []
    for folder in waiting_gates(settings):
        gate = read_json(folder / GATE)
        new = {"name": name, "version": gate["version"], "uri": f"models:/{name}/{gate['version']}"}
        metrics = gate["metrics"] | human_metrics(folder, settings)
        champion = alias_version(name, CHAMPION)
        if champion != gate["champion"]:
            decision = Decision(
                "rejected",
                [
                    f"the champion changed (v{gate['champion']} -> v{champion}) while the "
                    "labels were awaited: the comparison no longer stands"
                ],
                "human",
            )
        else:
            decision = decide(
                metrics, settings.promotion, settings.judge.kl_budget, new["version"], champion
            )
            if decision.verdict == "pending":
                continue
        records.append(conclude(settings, new, champion, metrics, None, decision))
        close_gate(folder, records[-1]["verdict"])
    return records


def record_of(
    new: dict, decision: Decision, before: str | None, after: str | None, metrics: dict
) -> dict:
    """What decision.json says: the verdict, who decided, why, and every judge's view."""
    return {
        "policy": new,
        "verdict": decision.verdict,
        "judge": decision.judge,
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "champion_before": before,
        "champion_after": after,
        "metrics": {k: v for k, v in metrics.items() if k.startswith(DECISION_METRICS)},
    }


def conclude(
    settings: Settings,
    new: dict,
    champion: str | None,
    metrics: dict,
    parent_run_id: str | None,
    decision: Decision | None = None,
) -> dict:
    """Decide (unless decided), record the verdict on the version, move the aliases, and write
    artifacts/promote/ and the promote run."""
    decision = decision or decide(
        metrics, settings.promotion, settings.judge.kl_budget, new["version"], champion
    )
    experiment_id = configure(settings)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name="promote",
        parent_run_id=parent_run_id,
        nested=parent_run_id is not None,
        tags={"stage": "promote", "policy": new["uri"]},
    ) as run:
        record_decision(
            new["name"],
            new["version"],
            decision,
            metrics=metrics,
            champion=champion,
            evaluated_by=f"promote run {run.info.run_id}",
        )
        after = alias_version(new["name"], CHAMPION)
        record = record_of(new, decision, champion, after, metrics) | {"run_id": run.info.run_id}
        report = promotion_markdown(new["uri"], decision.verdict, decision.reasons, metrics)
        with atomic_dir(settings.stage_dir("promote")) as tmp:
            write_json(tmp / DECISION, record)
            (tmp / "report.md").write_text(report, encoding="utf-8")
        mlflow.log_dict(record, DECISION)
        mlflow.log_text(report, "report.md")
    return record
