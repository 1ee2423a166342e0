"""The model registry's aliases: who is `champion`, why, and how it got there.

Every evaluated policy takes the `challenger` alias; `champion` moves to it only when it beats
the current champion by the rules in params.yaml (`promotion`). People can also move it by hand
(`rlhf promote`, `rlhf rollback`). Every move is written on the versions involved (tags and the
description). The champion's history is those tags: each version that held `champion` carries
when it took it (`champion.since`) and, if it was rolled back, when (`rolled_back.at`); rollback
walks back along them. Nothing is kept on the registered model itself, so two projects sharing a
registry never read-modify-write one value.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.core.settings import Promotion, UserError
from rlhf.models.lm import load_causal_lm

CHAMPION, CHALLENGER = "champion", "challenger"
# What `rlhf models` shows per kind: metric names of the run that made the version.
KEY_METRICS = {
    "base": ("eval_perplexity", "unigram_perplexity"),
    "sft": ("eval_perplexity",),
    "reward": ("accuracy",),
    "policy": ("final_score", "final_kl"),
}
# Evaluation results written on a policy version as tags `eval.<key>`.
EVAL_TAGS = (
    "judge_score_policy",
    "rm_score_policy",
    "gold_score_policy",
    "kl_policy_vs_ref",
    *(
        f"{judge}_win_rate_policy_vs_{other}{bound}"
        for other in ("sft", "champion")
        for judge in ("judge", "human", "rm", "gold")
        for bound in ("", "_lower", "_upper")
    ),
)


@dataclass
class Decision:
    verdict: str  # first | promoted | rejected | held | pending | unchanged
    reasons: list[str]
    judge: str = ""  # who decided: `judge` (the evaluation reward models) or `human`

    @property
    def promote(self) -> bool:
        return self.verdict in ("first", "promoted")


# The judges a verdict names, by their metric prefix; `gold` is never one of them (the demo's
# referee), and the optimised reward model (`rm`) may hold a promotion back, never make one.
JUDGES = {
    "judge": "the evaluation reward models",
    "human": "people, side by side",
    "rm": "the optimised reward model",
}


def now() -> str:
    """UTC to the microsecond: the champion history is ordered by these stamps."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def judge_label(prefix: str) -> str:
    if prefix in JUDGES:
        return JUDGES[prefix]
    return f"evaluation reward model {prefix.removeprefix('judge_')}"  # a member: judge_<i>


def view(metrics: dict, prefix: str, other: str) -> tuple[float, float, float] | None:
    """(rate, lower, upper) of a judge's win rate against other, if it judged."""
    key = f"{prefix}_win_rate_policy_vs_{other}"
    if metrics.get(key) is None:
        return None
    return metrics[key], metrics[f"{key}_lower"], metrics[f"{key}_upper"]


def dissenters(metrics: dict, decider: str, other: str) -> list[str]:
    """The other judges (the optimised RM, the evaluation RMs together and one by one) whose
    win rate says the incumbent is better."""
    members = sorted(
        k.split("_win_rate")[0]
        for k in metrics
        if k.startswith("judge_") and k.endswith(f"_win_rate_policy_vs_{other}")
    )
    found = []
    for prefix in ("rm", "judge", *members):
        seen = view(metrics, prefix, other) if prefix != decider else None
        if seen is not None and seen[0] < 0.5:
            found.append(f"{judge_label(prefix)} disagree(s): win rate {seen[0]:.3f}")
    return found


def decide(
    metrics: dict, rules: Promotion, kl_budget: float, version: str, champion: str | None
) -> Decision:
    """Whether the evaluated policy `version` should take `champion` from `champion`.

    metrics: the evaluation's, with the win rates against the champion (`*_vs_champion`) when
    there is one, and the human win rate when people decide. The decider is the judge
    `rules.judge` names; with a champion, its interval's lower bound must clear
    `rules.min_win_rate_lower`, and a promotion another judge disagrees with is held. With no
    champion yet, the first policy takes it unless the judge shows it worse than the
    reference. Beyond the KL budget nothing is promoted.
    """
    if champion == version:
        return Decision(
            "unchanged",
            [
                f"version {version} is the champion already "
                "(the same weights were registered before)"
            ],
        )
    decider = "human" if rules.judge == "human" else "judge"
    other, incumbent = (
        ("champion", f"champion v{champion}") if champion else ("sft", "the reference")
    )
    kl = metrics["kl_policy_vs_ref"]
    kl_ok = kl <= kl_budget
    kl_reason = f"KL to the reference {kl:.2f} {'<=' if kl_ok else '>'} the budget {kl_budget:g}"
    rm = view(metrics, "rm", other)
    rm_reason = (
        f"the optimised reward model's win rate {rm[0]:.3f} ({rm[1]:.3f}-{rm[2]:.3f}), not a judge"
        if rm
        else "the optimised reward model did not judge"
    )
    seen = view(metrics, decider, other)
    if seen is None and decider == "human" and metrics.get("human_tasks") == 0:
        return Decision(
            "rejected",
            [
                f"the new policy's responses equal {incumbent}'s on every held-out sample: "
                "nothing for people to compare",
                rm_reason,
                kl_reason,
            ],
            decider,
        )
    if seen is None:
        if decider == "human":
            got = f"{metrics.get('human_labelled_tasks', 0)} of {metrics.get('human_tasks', '?')}"
            return Decision(
                "pending",
                [f"waiting for people's labels ({got} tasks labelled)", rm_reason, kl_reason],
                decider,
            )
        return Decision(
            "rejected",
            [f"{JUDGES[decider]} scored none of the samples", rm_reason, kl_reason],
            decider,
        )
    rate, lo, hi = seen
    if champion is None:
        worse = hi < 0.5
        win_reason = (
            f"{JUDGES[decider]}: win rate against {incumbent} {rate:.3f} (95% interval "
            f"{lo:.3f}-{hi:.3f}), {'worse than' if worse else 'not worse than'} it"
        )
        verdict = "first" if kl_ok and not worse else "rejected"
        return Decision(verdict, [win_reason, rm_reason, kl_reason], decider)
    beats = lo > rules.min_win_rate_lower
    win_reason = (
        f"{JUDGES[decider]}: win rate against {incumbent} {rate:.3f} (95% interval "
        f"{lo:.3f}-{hi:.3f}), lower bound {'>' if beats else '<='} {rules.min_win_rate_lower:g}"
    )
    if not (beats and kl_ok):
        return Decision("rejected", [win_reason, rm_reason, kl_reason], decider)
    dissent = dissenters(metrics, decider, other)
    if dissent:
        return Decision("held", [win_reason, *dissent, rm_reason, kl_reason], decider)
    return Decision("promoted", [win_reason, rm_reason, kl_reason], decider)


def registry_client():
    """The MLflow client for the store tasks.tracking.configure pointed MLflow at."""
    return MlflowClient()


def alias_version(name: str, alias: str) -> str | None:
    """The version holding alias, or None (no such alias, or no such model yet)."""
    try:
        return str(registry_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def champion_history(name: str) -> list[str]:
    """Versions that took `champion` and were not rolled back since, by when they last took it
    (oldest first), the version holding the alias last. The alias decides who holds it now:
    two processes moving it at once each set the alias, then stamp `champion.since`, and the
    stamps may land in the other order."""
    held = []
    for v in registry_client().search_model_versions(f"name='{name}'"):
        since, rolled_back = (
            datetime.fromisoformat(v.tags[key]) if key in v.tags else None
            for key in ("champion.since", "rolled_back.at")
        )
        if since and not (rolled_back and rolled_back >= since):
            held.append((since, str(v.version)))
    current = alias_version(name, CHAMPION)
    return sorted((version for _, version in sorted(held)), key=lambda v: v == current)


def set_alias(client, name: str, alias: str, version: str) -> None:
    """Point alias at version. MLflow's SQL stores insert a new alias after checking that it
    is absent, so when two processes set the same new alias at once (two projects sharing a
    registry) one fails on the unique key; the alias exists by then, and setting it again
    updates it."""
    try:
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as error:
        try:
            client.get_model_version_by_alias(name, alias)
        except MlflowException:
            raise error from None  # not that race: the alias is still absent
        client.set_registered_model_alias(name, alias, version)


def move_champion(name: str, version: str, by: str, reason: str) -> None:
    """Give `version` the champion alias, recorded on it and in the history."""
    client = registry_client()
    set_alias(client, name, CHAMPION, version)
    for key, value in (("champion.since", now()), ("champion.by", by), ("champion.reason", reason)):
        client.set_model_version_tag(name, version, key, value)


def record_decision(
    name: str,
    version: str,
    decision: Decision,
    *,
    metrics: dict,
    champion: str | None,
    evaluated_by: str,
) -> None:
    """Write the evaluation's decision on the version; move the aliases it calls for."""
    client = registry_client()
    set_alias(client, name, CHALLENGER, version)
    if decision.verdict == "unchanged":
        return  # the same weights again: the version keeps the verdict it was promoted with
    tags = {
        "promotion.verdict": decision.verdict,
        "promotion.judge": decision.judge,
        "promotion.reasons": "; ".join(decision.reasons),
        "promotion.compared_to": champion or "",
        "promotion.at": now(),
        "promotion.by": evaluated_by,
        **{f"eval.{k}": f"{metrics[k]:.4f}" for k in EVAL_TAGS if metrics.get(k) is not None},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(
        name,
        version,
        description=(
            f"Evaluation ({evaluated_by}): {decision.verdict}. " + "; ".join(decision.reasons) + "."
        ),
    )
    if decision.promote:
        move_champion(name, version, evaluated_by, "; ".join(decision.reasons))


def resolve_name(name: str, prefix: str) -> str:
    """A registered model's name, accepting the short kind (`policy` for `rlhf-policy`)."""
    client = registry_client()
    for candidate in (name, f"{prefix}-{name}"):
        try:
            return client.get_registered_model(candidate).name
        except MlflowException:
            continue
    raise UserError(f"{name}: no such registered model")


def promote_by_hand(name: str, version: str, by: str | None, reason: str) -> str | None:
    """`rlhf promote`: move champion to version; returns the version it took it from."""
    try:
        registry_client().get_model_version(name, version)
    except MlflowException:
        raise UserError(f"{name}: no version {version}") from None
    before = alias_version(name, CHAMPION)
    move_champion(name, version, by or getpass.getuser(), reason)
    return before


def rollback(name: str, by: str | None, reason: str) -> tuple[str, str]:
    """`rlhf rollback`: champion goes back to the version that held it before the current
    one. Returns (from, to)."""
    current = alias_version(name, CHAMPION)
    if current is None:
        raise UserError(f"{name}: has no champion to roll back")
    history = [v for v in champion_history(name) if v != current]
    if not history:
        raise UserError(f"{name}: no earlier champion than version {current}")
    target, who, client = history[-1], by or getpass.getuser(), registry_client()
    for key, value in (
        ("rolled_back.at", now()),
        ("rolled_back.by", who),
        ("rolled_back.reason", reason),
    ):
        client.set_model_version_tag(name, current, key, value)
    set_alias(client, name, CHAMPION, target)
    for key, value in (
        ("champion.since", now()),
        ("champion.by", who),
        ("champion.reason", f"rollback from v{current}: {reason}"),
    ):
        client.set_model_version_tag(name, target, key, value)
    return current, target


def key_metrics(kind: str, run_metrics: dict, tags: dict) -> dict[str, float]:
    """The few numbers that say what a version is worth: its run's, and its evaluation's."""
    key = {k: run_metrics[k] for k in KEY_METRICS.get(kind, ()) if k in run_metrics}
    return key | {
        k.removeprefix("eval."): float(x)
        for k, x in tags.items()
        if k.startswith("eval.") and not k.endswith(("_lower", "_upper"))
    }


def list_models(prefix: str) -> list[dict]:
    """Every version of the pipeline's registered models, newest first, with its aliases,
    the key metrics of the run that made it, and its promotion verdict: who decided, why."""
    client = registry_client()
    rows = []
    for model in client.search_registered_models(f"name LIKE '{prefix}-%'"):
        kind = model.name.removeprefix(f"{prefix}-")
        # version search results leave aliases out; the model has them
        aliases: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        for v in client.search_model_versions(f"name='{model.name}'"):
            metrics = client.get_run(v.run_id).data.metrics if v.run_id else {}
            rows.append(
                {
                    "name": model.name,
                    "version": str(v.version),
                    "aliases": sorted(aliases.get(str(v.version), [])),
                    "created": time.strftime(
                        "%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000)
                    ),
                    "run_id": v.run_id,
                    "verdict": v.tags.get("promotion.verdict", ""),
                    "judge": v.tags.get("promotion.judge", ""),
                    "reasons": v.tags.get("promotion.reasons", ""),
                    "metrics": key_metrics(kind, metrics, v.tags),
                }
            )
    return sorted(rows, key=lambda r: (r["name"], -int(r["version"])))


def load_registered_lm(
    name: str, version: str, tok: PreTrainedTokenizerBase, folder: Path
) -> PreTrainedModel:
    """A registered policy's weights (mlflow.transformers layout: model/ holds them)."""
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/{version}", dst_path=str(folder)
    )
    return load_causal_lm(Path(local) / "model", tok)
