"""Stage 8, evaluate: the evidence on the new policy, against its reference (SFT).

In the order it runs:
  1. sample    the reference (SFT) and the new policy on the held-out prompts, with the same
               seeds and decoding settings (paired samples)
  2. score     reward model, judge (the evaluation reward models), reference judge (where
               params.yaml names one: the demo's gold judge), KL to the reference, length,
               distinct-n, repetition; perplexity of each policy on the SFT stage's held-out
               responses; the share of responses outside the range the judges were validated
               on (rlhf.core.evaluation.extrapolation). Without a reward model
               (rewards.model_weight 0) the reward functions' weighted sum scores as reward
               model and judge, and there are no pairs to validate a range on
  3. compare   win rates with 95% bootstrap intervals, by each judge: new vs reference
  4. curve     RM, judge and gold score against KL across PPO's snapshots (over-optimisation)
  5. functions each reward function (rewards.functions) on both policies' samples: its mean
               and the new policy's gain with a 95% interval
  6. report    samples.csv, score_vs_kl.csv, plots/*.png, report.md, metrics.json; the plots
               and report go to MLflow too
A pure function of its inputs: it reads no registry alias and moves none. Whether the policy
becomes champion is the promote step's decision (rlhf.tasks.promote), taken after it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import mlflow
import pandas as pd

from rlhf.core.evaluation import plots
from rlhf.core.evaluation.extrapolation import validated_range
from rlhf.core.evaluation.records import NEW, REFERENCE, Evaluation, to_metrics
from rlhf.core.evaluation.report import (
    comparisons,
    functions_lines,
    functions_markdown,
    markdown,
    summary_lines,
)
from rlhf.core.evaluation.sampling import (
    Bench,
    eval_seeds,
    function_metrics,
    label_gold_agreement,
    member_split,
    perplexity,
    policy_scores,
    score_vs_kl,
    win_rates,
)
from rlhf.core.feedback.pairs import read_pairs
from rlhf.core.pipeline.context import StageContext
from rlhf.core.rewards.functions import (
    RewardFunctions,
    prompt_fields,
    reward_functions,
    score_table,
    weighted_sum,
)
from rlhf.models.generation import prompt_budget, prompts_cut
from rlhf.models.lm import load_causal_lm, start_run


def write_plots(out: Path, history: pd.DataFrame, curve: pd.DataFrame, e: Evaluation) -> None:
    out.mkdir()
    plots.training_curves(history, out / "training_curves.png")
    plots.score_vs_kl(curve, out / "score_vs_kl.png", int(e.selected_iteration or 0))
    plots.win_rates(comparisons(e), out / "win_rates.png")


def run(ctx: StageContext) -> dict:
    with reward_functions(ctx.settings) as functions:
        return evaluate(ctx, functions)


def feedback_pairs(ctx: StageContext) -> pd.DataFrame | None:
    """The feedback's pairs; None without a reward model (no feedback stage)."""
    if not ctx.settings.rewards.uses_reward_model:
        return None
    return read_pairs(ctx.input("feedback", "pairs.parquet"))


def accuracy(ctx: StageContext, stage: str) -> float | None:
    """A pair model's held-out accuracy (reward, judge); None where the stage is left out."""
    if not ctx.settings.rewards.uses_reward_model:
        return None
    return ctx.upstream_record(stage)["metrics"]["accuracy"]


def evaluate(ctx: StageContext, functions: RewardFunctions | None) -> dict:
    cfg, settings = ctx.settings.evaluate, ctx.settings
    device = start_run(settings.seed, settings.device)
    table = pd.read_parquet(ctx.input("ingest", "prompts_eval.parquet"))
    fields = prompt_fields(table)
    scorer = weighted_sum(functions, fields) if functions else None
    bench = Bench.load(
        settings, device, cfg.max_new_tokens, cfg.temperature, where=ctx.input, functions=scorer
    )
    tok = bench.tok
    prompts = table["prompt"].tolist()
    new = ctx.upstream_record("policy")["model"]
    policies = {
        REFERENCE: bench.ref,
        NEW: load_causal_lm(ctx.input("policy", "model"), tok).to(device).eval(),
    }

    seeds = eval_seeds(settings.seed, cfg.samples_per_prompt)
    samples = bench.sample_policies(policies, prompts, seeds)
    if functions is not None:
        samples = score_table(samples, functions, fields)
    heldout = pd.read_parquet(ctx.input("sft", "heldout.parquet"))
    pairs = feedback_pairs(ctx)
    validated = None if pairs is None else validated_range(bench.ref, tok, pairs, device)
    curve = score_vs_kl(
        ctx.input("policy", "snapshots"),
        bench,
        prompts,
        seeds,
        samples[samples["policy"] == REFERENCE],
        validated,
    )
    evaluation = Evaluation(
        scores={
            name: dataclasses.replace(
                policy_scores(samples, name, validated),
                perplexity=perplexity(model, tok, heldout, device),
            )
            for name, model in policies.items()
        },
        wins=win_rates(samples, REFERENCE, cfg, settings.seed),
        split={REFERENCE: member_split(samples, REFERENCE)},
        validated=validated,
        rm_accuracy=accuracy(ctx, "reward"),
        judge_accuracy=accuracy(ctx, "judge"),
        label_gold_agreement=label_gold_agreement(pairs, bench.reference),
        selected_iteration=ctx.upstream_record("policy")["metrics"]["selected_iteration"],
        eval_prompts=len(prompts),
        eval_prompts_cut=prompts_cut(tok, prompts, prompt_budget(bench.ref, cfg.max_new_tokens)),
        samples_per_prompt=cfg.samples_per_prompt,
        policy_version=int(new["version"]),
        functions_judge=None if settings.rewards.uses_reward_model else 1,
    )

    samples.to_csv(ctx.out / "samples.csv", index=False)
    curve.to_csv(ctx.out / "score_vs_kl.csv", index=False)
    write_plots(
        ctx.out / "plots",
        pd.read_csv(ctx.input("policy", "history.csv"), index_col=0),
        curve,
        evaluation,
    )
    by_function = function_metrics(samples, REFERENCE, cfg.bootstrap_resamples, settings.seed)
    report = markdown(evaluation, new["uri"], samples) + functions_markdown(by_function)
    (ctx.out / "report.md").write_text(report, encoding="utf-8")
    mlflow.log_artifacts(str(ctx.out / "plots"), "plots")
    for name in ("report.md", "samples.csv", "score_vs_kl.csv"):
        mlflow.log_artifact(str(ctx.out / name))
    ctx.log_table(samples, "evaluation_samples.json")  # searchable in the run's table view
    metrics = to_metrics(evaluation) | by_function
    if ctx.tracking:
        print(f"evaluate: {'; '.join(summary_lines(evaluation))}", file=sys.stderr)
        for line in functions_lines(by_function):
            print(f"evaluate: {line}", file=sys.stderr)
    # on the policy's model page, as measured on the held-out prompts
    ctx.attach_metrics(metrics, new["model_id"], "ingest/prompts_eval.parquet")
    return metrics
