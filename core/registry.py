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

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from rlhf.core.settings import Promotion, UserError

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
    "gold_score_ppo",
    "rm_score_ppo",
    "kl_ppo_vs_ref",
    "rm_win_rate_ppo_vs_sft",
    "gold_win_rate_ppo_vs_sft",
    "rm_win_rate_ppo_vs_champion",
    "gold_win_rate_ppo_vs_champion",
)


@dataclass
class Decision:
    verdict: str  # first | promoted | rejected | unchanged
    reasons: list[str]

    @property
    def promote(self) -> bool:
        return self.verdict in ("first", "promoted")


def now() -> str:
    """UTC to the microsecond: the champion history is ordered by these stamps."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def decide(metrics: dict, rules: Promotion, version: str, champion: str | None) -> Decision:
    """Whether the evaluated policy `version` should take `champion` from `champion`.

    metrics: the evaluate stage's, with the `*_vs_champion` win rates when there is one.
    """
    kl = metrics["kl_ppo_vs_ref"]
    kl_ok = kl <= rules.max_kl
    kl_reason = f"KL to the reference {kl:.2f} {'<=' if kl_ok else '>'} max_kl {rules.max_kl:g}"
    if champion is None:
        return Decision("first", ["no champion yet: the first policy becomes champion", kl_reason])
    if champion == version:
        return Decision(
            "unchanged",
            [
                f"version {version} is the champion already "
                "(the same weights were registered before)"
            ],
        )
    key = f"{rules.judge}_win_rate_ppo_vs_champion"
    if metrics.get(key) is None:
        return Decision(
            "rejected",
            [
                f"the {rules.judge} judge scored none of the evaluation "
                "prompts; set promotion.judge: rm",
                kl_reason,
            ],
        )
    rate, lo, hi = metrics[key], metrics[f"{key}_lower"], metrics[f"{key}_upper"]
    beats = lo > rules.min_win_rate_lower
    win_reason = (
        f"{rules.judge} win rate against champion v{champion} {rate:.3f} "
        f"(95% interval {lo:.3f}-{hi:.3f}): lower bound "
        f"{'>' if beats else '<='} {rules.min_win_rate_lower:g}"
    )
    return Decision("promoted" if beats and kl_ok else "rejected", [win_reason, kl_reason])


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
    (oldest first)."""
    held = []
    for v in registry_client().search_model_versions(f"name='{name}'"):
        since, rolled_back = (
            datetime.fromisoformat(v.tags[key]) if key in v.tags else None
            for key in ("champion.since", "rolled_back.at")
        )
        if since and not (rolled_back and rolled_back >= since):
            held.append((since, str(v.version)))
    return [version for _, version in sorted(held)]


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
        k.removeprefix("eval."): float(x) for k, x in tags.items() if k.startswith("eval.")
    }


def list_models(prefix: str) -> list[dict]:
    """Every version of the pipeline's registered models, newest first, with its aliases,
    the key metrics of the run that made it, and its promotion verdict."""
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
                    "metrics": key_metrics(kind, metrics, v.tags),
                }
            )
    return sorted(rows, key=lambda r: (r["name"], -int(r["version"])))
