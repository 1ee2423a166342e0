"""The promote step, after evaluate: should the evaluated policy take `champion`?

Not a cached stage and not in dvc.yaml: it reads the registry's current champion, which is
mutable state no digest covers, and it moves aliases, so it runs every time it is asked to
(after the pipeline's stages, from the feedback loop, or as `rlhf promote --auto`) and
`dvc repro` never changes the registry. In the order it runs:
  1. read      the evaluation (its record, checked against its files: metrics, samples.csv)
               and the policy version it judged, which must be the policy stage's model
  2. compare   when another version is champion: sample it at the evaluation's seeds on the
               same prompts (paired with the evaluation's samples of the new policy), its
               metrics and the new policy's win rates against it, with 95% intervals
  3. gate      with `promotion.judge: human`: the champion-vs-challenger pairs go out for
               labelling (rlhf.core.evaluation.gate) and the decision is pending until the
               labels are in; `settle_gates` takes it then (the feedback loop calls it every
               iteration)
  4. decide    the rules in params.yaml (`promotion`), rlhf.core.evaluation.promotion.decide: the
               independent judge decides, the optimised reward model can only hold it back
  5. record    `challenger` always; `champion` when won; the verdict, who decided and why on
               the version; artifacts/promote/ (decision.json, report.md) and an MLflow run
  6. audit     a share of automatic promotions (promotion.audit_fraction, audit_every) goes
               to people side by side against the champion it replaced; `settle_gates`
               upholds it once their labels are in, or rolls the champion back
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import mlflow
import pandas as pd

from rlhf.core.evaluation.extrapolation import curve_kl_budget
from rlhf.core.evaluation.gate import (
    GATE,
    WAITING,
    close_gate,
    open_gate,
    waiting_gates,
    with_human_labels,
)
from rlhf.core.evaluation.promotion import decide
from rlhf.core.evaluation.records import (
    CHAMPION,
    JUDGE,
    NEW,
    REFERENCE,
    Evaluation,
    from_metrics,
    headline,
    to_metrics,
)
from rlhf.core.evaluation.report import promotion_markdown
from rlhf.core.evaluation.sampling import (
    Bench,
    Scorer,
    eval_seeds,
    member_split,
    perplexity,
    policy_scores,
    read_samples,
    sample_registered,
    win_rates,
)
from rlhf.core.feedback.collect import policy_name
from rlhf.core.io import atomic_dir, read_json, write_json
from rlhf.core.pipeline.records import verified_record
from rlhf.core.rewards.functions import prompt_fields, reward_functions, weighted_sum
from rlhf.core.settings import Settings, UserError
from rlhf.core.tracking.registry import CHAMPION as CHAMPION_ALIAS
from rlhf.core.tracking.registry import (
    Decision,
    alias_version,
    automatic_promotions,
    record_decision,
    registry_client,
    rollback,
)
from rlhf.core.tracking.store import open_store
from rlhf.models.lm import start_run

DECISION = "decision.json"


def against_champion(
    settings: Settings, e: Evaluation, samples: pd.DataFrame, name: str, champion: str
) -> tuple[Evaluation, pd.DataFrame]:
    """e and the new policy's samples with the champion's beside them: the champion sampled on
    the evaluation's prompts at its seeds (paired with the new policy's samples, which sampling
    at the same seeds reproduces), its scores and the new policy's win rates against it."""
    if settings.rewards.uses_reward_model:
        return champion_compared(settings, e, samples, name, champion, None)
    with reward_functions(settings) as functions:
        assert functions is not None  # the settings require one without a reward model
        eval_prompts = pd.read_parquet(settings.out_path("ingest", "prompts_eval.parquet"))
        scorer = weighted_sum(functions, prompt_fields(eval_prompts))
        return champion_compared(settings, e, samples, name, champion, scorer)


def champion_compared(
    settings: Settings,
    e: Evaluation,
    samples: pd.DataFrame,
    name: str,
    champion: str,
    functions: Scorer | None,
) -> tuple[Evaluation, pd.DataFrame]:
    cfg = settings.evaluate
    device = start_run(settings.seed, settings.device)
    bench = Bench.load(settings, device, cfg.max_new_tokens, cfg.temperature, functions=functions)
    evaluated = samples[samples["policy"] == NEW]
    prompts = list(dict.fromkeys(evaluated["prompt"]))
    seeds = eval_seeds(settings.seed, cfg.samples_per_prompt)
    rows, model = sample_registered(
        name, champion, bench, prompts=prompts, seeds=seeds, label=CHAMPION
    )
    heldout = pd.read_parquet(settings.out_path("sft", "heldout.parquet"))
    both = pd.concat([evaluated, rows], ignore_index=True)
    scores = dataclasses.replace(
        policy_scores(both, CHAMPION, e.validated),
        perplexity=perplexity(model, bench.tok, heldout, device),
    )
    compared = e.but(
        scores={CHAMPION: scores},
        wins=win_rates(both, CHAMPION, cfg, settings.seed),
        split={CHAMPION: member_split(both, CHAMPION)},
        champion_version_compared=int(champion),
    )
    return compared, both


def promote(settings: Settings, parent_run_id: str | None = None, dry_run: bool = False) -> dict:
    """Decide on the evaluated policy and move the aliases; returns the decision record.
    dry_run: decide only (no gate opened, nothing recorded, no alias moved)."""
    evaluated = settings.stage_dir("evaluate")
    evaluation, policy = verified_record(settings, "evaluate"), verified_record(settings, "policy")
    if evaluation.get("inputs", {}).get("policy/model") != policy["outs"]["model"]:
        raise UserError(
            f"{evaluated}: an evaluation of another policy than the one in "
            f"{settings.stage_dir('policy')}: run `rlhf stage evaluate` again (or `rlhf run`)"
        )
    e = from_metrics(evaluation["metrics"])
    if settings.promotion.kl_budget_drop is not None:
        curve = pd.read_csv(evaluated / "score_vs_kl.csv")
        e = e.but(kl_budget_curve=curve_kl_budget(curve, JUDGE, settings.promotion.kl_budget_drop))
    new = policy["model"]
    open_store(settings)
    champion = alias_version(new["name"], CHAMPION_ALIAS)
    samples = read_samples(evaluated / "samples.csv")
    if champion not in (None, new["version"]):
        e, samples = against_champion(settings, e, samples, new["name"], champion)
    if dry_run:
        decision = decide(e, settings.promotion, settings.judge.kl_budget, new["version"], champion)
        return record_of(new, decision, champion, champion, e) | {"dry_run": True}
    if settings.promotion.judge == "human" and champion != new["version"]:
        gate = open_gate(settings, new["version"], champion, samples, e)
        e = with_human_labels(e, gate, settings)
    record = conclude(settings, new, champion, e, parent_run_id)
    if audit_due(settings, record):
        folder = open_gate(settings, new["version"], champion, samples, e, kind="audit")
        registry_client().set_model_version_tag(new["name"], new["version"], "audit.state", WAITING)
        record["audit"] = str(folder)
    return record


def audit_due(settings: Settings, record: dict) -> bool:
    """Whether people review this promotion: an automatic one (by the evaluation reward
    models), in a seeded share promotion.audit_fraction of them and every audit_every-th."""
    rules, version = settings.promotion, record["policy"]["version"]
    if not record["promoted"] or record["judge"] != JUDGE:
        return False
    every = rules.audit_every
    if every and automatic_promotions(record["policy"]["name"], JUDGE) % every == 0:
        return True
    return random.Random(settings.seed * 1_000_003 + int(version)).random() < rules.audit_fraction


def settle_audit(settings: Settings, folder: Path, gate: dict) -> dict | None:
    """Uphold the audited promotion or roll it back, once people's labels are in (None while
    they are not): the champion alias returns to the version it replaced (none, for the first
    champion), recorded on the version and in an `audit` run."""
    name, version, rules = policy_name(settings), gate["version"], settings.promotion
    e = with_human_labels(from_metrics(gate["metrics"]), folder, settings)
    seen = e.win("human", CHAMPION if gate["champion"] else REFERENCE)
    if seen is None or e.human is None:
        return None
    upheld = seen.rate >= rules.audit_min_win_rate
    replaced = f"v{gate['champion']}" if gate["champion"] else "the reference"
    reasons = [
        f"people's win rate against {replaced} {seen.rate:.3f} ({seen.lower:.3f}-"
        f"{seen.upper:.3f}) on {e.human.labelled_tasks} tasks, "
        f"{'>=' if upheld else '<'} promotion.audit_min_win_rate {rules.audit_min_win_rate:g}"
    ]
    before = alias_version(name, CHAMPION_ALIAS)
    verdict = "upheld" if upheld else "rolled back"
    if not upheld and before != version:
        verdict = "rejected"
        reasons.append(f"the champion is v{before} since: nothing to roll back")
    with open_store(settings).run("audit", tags={"stage": "audit", "policy": version}) as run:
        if verdict == "rolled back":
            rollback(name, f"audit run {run.info.run_id}", reasons[0], to_none=True)
        client = registry_client()
        for key, value in (("audit.state", verdict), ("audit.reasons", "; ".join(reasons))):
            client.set_model_version_tag(name, version, key, value)
        record = {
            "policy": {"name": name, "version": version, "uri": f"models:/{name}/{version}"},
            "verdict": f"audit {verdict}",
            "reasons": reasons,
            "champion_before": before,
            "champion_after": alias_version(name, CHAMPION_ALIAS),
            "metrics": to_metrics(e),
            "run_id": run.info.run_id,
        }
        mlflow.log_dict(record, "audit.json")
    close_gate(folder, verdict)
    return record


def settle_gates(settings: Settings) -> list[dict]:
    """Decide every human gate whose labels are in; their decision records (a gate still
    short of labels stays open). A gate opened against a champion that has changed since is
    refused: its comparison no longer stands."""
    open_store(settings)
    name, records = policy_name(settings), []
    for folder in waiting_gates(settings):
        gate = read_json(folder / GATE)
        if gate.get("kind") == "audit":
            audited = settle_audit(settings, folder, gate)
            records += [audited] if audited else []
            continue
        new = {"name": name, "version": gate["version"], "uri": f"models:/{name}/{gate['version']}"}
        e = with_human_labels(from_metrics(gate["metrics"]), folder, settings)
        champion = alias_version(name, CHAMPION_ALIAS)
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
                e, settings.promotion, settings.judge.kl_budget, new["version"], champion
            )
            if decision.verdict == "pending":
                continue
        records.append(conclude(settings, new, champion, e, None, decision))
        close_gate(folder, records[-1]["verdict"])
    return records


def record_of(
    new: dict, decision: Decision, before: str | None, after: str | None, e: Evaluation
) -> dict:
    """What decision.json says: the verdict, who decided, why, and the evaluation it rests on."""
    return {
        "policy": new,
        "verdict": decision.verdict,
        "judge": decision.judge,
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "champion_before": before,
        "champion_after": after,
        "metrics": to_metrics(e),
    }


def conclude(
    settings: Settings,
    new: dict,
    champion: str | None,
    e: Evaluation,
    parent_run_id: str | None,
    decision: Decision | None = None,
) -> dict:
    """Decide (unless decided), record the verdict on the version, move the aliases, and write
    artifacts/promote/ and the promote run."""
    decision = decision or decide(
        e, settings.promotion, settings.judge.kl_budget, new["version"], champion
    )
    tags = {"stage": "promote", "policy": new["uri"]}
    with open_store(settings).run("promote", parent_id=parent_run_id, tags=tags) as run:
        record_decision(
            new["name"],
            new["version"],
            decision,
            evaluation=headline(e),
            champion=champion,
            evaluated_by=f"promote run {run.info.run_id}",
        )
        after = alias_version(new["name"], CHAMPION_ALIAS)
        record = record_of(new, decision, champion, after, e) | {"run_id": run.info.run_id}
        report = promotion_markdown(new["uri"], decision.verdict, decision.reasons, e)
        with atomic_dir(settings.stage_dir("promote")) as tmp:
            write_json(tmp / DECISION, record)
            (tmp / "report.md").write_text(report, encoding="utf-8")
        mlflow.log_dict(record, DECISION)
        mlflow.log_text(report, "report.md")
    return record
