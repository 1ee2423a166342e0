"""The promote step, after evaluate: should the evaluated policy take `champion`?

Not a cached stage and not in dvc.yaml: it reads the registry's current champion, which is
mutable state no digest covers, and it moves aliases, so it runs every time it is asked to
(after the pipeline's stages, from the feedback loop, or as `rlhf promote --auto`) and
`dvc repro` never changes the registry. In the order it runs:
  1. read      the evaluation (metrics.json, samples.csv) and the policy version it judged
  2. compare   when another version is champion: sample it at the evaluation's seeds on the
               same prompts (paired with the evaluation's samples of the new policy), its
               metrics and the new policy's win rates against it, with 95% intervals
  3. decide    the rules in params.yaml (`promotion`), rlhf.core.registry.decide
  4. record    `challenger` always; `champion` when won; the verdict and reasons on the
               version; artifacts/promote/ (decision.json, report.md) and an MLflow run
"""

from __future__ import annotations

import mlflow
import pandas as pd
from transformers import AutoModelForSequenceClassification

from rlhf.core.context import METRICS, RECORD
from rlhf.core.evaluation.judges import reference_judge
from rlhf.core.evaluation.report import promotion_markdown
from rlhf.core.evaluation.sampling import (
    Bench,
    eval_seeds,
    perplexity,
    policy_metrics,
    sample_registered,
    win_rates,
)
from rlhf.core.io import atomic_dir, read_json, write_json
from rlhf.core.registry import CHAMPION, alias_version, decide, record_decision
from rlhf.core.settings import Settings, UserError
from rlhf.core.tracking import configure
from rlhf.models.lm import load_causal_lm, start_run
from rlhf.models.tokenizer import load_tokenizer

DECISION = "decision.json"


def against_champion(settings: Settings, name: str, champion: str, evaluated: pd.DataFrame) -> dict:
    """The champion's metrics and the new policy's win rates against it, on the evaluation's
    prompts and seeds (its samples of the new policy are reused: sampling is seeded)."""
    cfg = settings.evaluate
    device = start_run(settings.seed, settings.device)
    sft_dir = settings.stage_dir("sft") / "model"
    tok = load_tokenizer(str(sft_dir))
    rm = AutoModelForSequenceClassification.from_pretrained(settings.stage_dir("reward") / "model")
    bench = Bench(
        ref=load_causal_lm(sft_dir, tok).to(device).eval(),
        rm=rm.to(device).eval(),
        tok=tok,
        judge=reference_judge(settings),
        cfg=cfg,
        device=device,
    )
    prompts = list(dict.fromkeys(evaluated["prompt"]))
    seeds = eval_seeds(settings.seed, cfg.samples_per_prompt)
    rows, model = sample_registered(
        name, champion, bench, prompts=prompts, seeds=seeds, label="champion"
    )
    heldout = pd.read_parquet(settings.stage_dir("sft") / "heldout.parquet")
    samples = pd.concat([evaluated, rows], ignore_index=True)
    return {
        **policy_metrics(samples, "champion"),
        "perplexity_champion": perplexity(model, tok, heldout, device),
        **win_rates(samples, "champion", cfg.bootstrap_resamples, settings.seed),
        "champion_version_compared": int(champion),
    }


def promote(settings: Settings, parent_run_id: str | None = None) -> dict:
    """Decide on the evaluated policy and move the aliases; returns the decision record."""
    evaluation = settings.stage_dir("evaluate")
    if not (evaluation / METRICS).exists():
        raise UserError(f"{evaluation}: no evaluation to promote from (run the pipeline first)")
    metrics = read_json(evaluation / METRICS)
    new = read_json(settings.stage_dir("ppo") / RECORD)["model"]
    experiment_id = configure(settings)
    champion = alias_version(new["name"], CHAMPION)
    if champion not in (None, new["version"]):
        samples = pd.read_csv(evaluation / "samples.csv")
        metrics |= against_champion(
            settings, new["name"], champion, samples[samples["policy"] == "ppo"]
        )
    decision = decide(metrics, settings.promotion, new["version"], champion)
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
        record = {
            "policy": new,
            "verdict": decision.verdict,
            "promoted": decision.promote,
            "reasons": decision.reasons,
            "champion_before": champion,
            "champion_after": after,
            "run_id": run.info.run_id,
            "metrics": {k: v for k, v in metrics.items() if "champion" in k},
        }
        report = promotion_markdown(new["uri"], decision.verdict, decision.reasons, metrics)
        with atomic_dir(settings.stage_dir("promote")) as tmp:
            write_json(tmp / DECISION, record)
            (tmp / "report.md").write_text(report, encoding="utf-8")
        mlflow.log_dict(record, DECISION)
        mlflow.log_text(report, "report.md")
    return record
