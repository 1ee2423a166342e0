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

from rlhf.core.settings import UserError
from rlhf.core.tracking.store import WEIGHTS_DIGEST
from rlhf.models.lm import load_causal_lm, weights_digest

CHAMPION, CHALLENGER = "champion", "challenger"
# What `rlhf models` shows per kind: metric names of the run that made the version.
KEY_METRICS = {
    "base": ("eval_perplexity", "unigram_perplexity"),
    "sft": ("eval_perplexity",),
    "reward": ("accuracy",),
    "policy": ("final_score", "final_kl"),
}
# What a promotion decision can say, and what it means (recorded on the version as
# promotion.verdict; `first` and `promoted` move the champion alias)
VERDICTS = {
    "first": "no champion yet: the policy takes the alias unless the judge shows it worse "
    "than the reference, within the KL budget",
    "promoted": "the judge's win rate against the champion clears promotion.min_win_rate_lower "
    "within the KL budget, and no other judge disagrees: the policy takes the alias",
    "held": "the judge would promote it, but another judge (the optimised reward model, or a "
    "member of the judge) prefers the champion, or an over-optimisation signal is past its "
    "limit (responses outside the judges' validated range, length or diversity drift, a gain "
    "only the optimised reward model sees): people must decide",
    "rejected": "the judge does not show it better (or it is beyond the KL budget); the "
    "champion stays",
    "pending": "people decide (promotion.judge: human) and their labels are not all in yet",
    "unchanged": "the same weights are the champion already",
}
PROMOTING = ("first", "promoted")


@dataclass
class Decision:
    verdict: str  # a key of VERDICTS
    reasons: list[str]
    judge: str = ""  # who decided: `judge` (the evaluation reward models) or `human`

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"{self.verdict!r} is not a verdict ({', '.join(VERDICTS)})")

    @property
    def promote(self) -> bool:
        return self.verdict in PROMOTING


def now() -> str:
    """UTC to the microsecond: the champion history is ordered by these stamps."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def registry_client():
    """The MLflow client of the store open_store made active."""
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
    evaluation: dict[str, float],
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
        **{f"eval.{k}": f"{v:.4f}" for k, v in evaluation.items()},
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


def automatic_promotions(name: str, judge: str) -> int:
    """How many versions took `champion` by the decision of `judge` (not by hand)."""
    return sum(
        v.tags.get("promotion.judge") == judge and v.tags.get("promotion.verdict") in PROMOTING
        for v in registry_client().search_model_versions(f"name='{name}'")
    )


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


def rollback(
    name: str, by: str | None, reason: str, to_none: bool = False
) -> tuple[str, str | None]:
    """`rlhf rollback`: champion goes back to the version that held it before the current
    one. Returns (from, to). to_none: with no earlier champion, the alias is removed (an
    audit that rejects the first champion) rather than refused."""
    current = alias_version(name, CHAMPION)
    if current is None:
        raise UserError(f"{name}: has no champion to roll back")
    history = [v for v in champion_history(name) if v != current]
    if not history and not to_none:
        raise UserError(f"{name}: no earlier champion than version {current}")
    who, client = by or getpass.getuser(), registry_client()
    for key, value in (
        ("rolled_back.at", now()),
        ("rolled_back.by", who),
        ("rolled_back.reason", reason),
    ):
        client.set_model_version_tag(name, current, key, value)
    if not history:
        client.delete_registered_model_alias(name, CHAMPION)
        return current, None
    target = history[-1]
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
    """A registered policy's weights (mlflow.transformers layout: model/ holds them), checked
    against the digest its version was registered with: UserError when they differ."""
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(folder)
        )
    )
    expected = MlflowClient().get_model_version(name, version).tags.get(WEIGHTS_DIGEST)
    if expected is not None and weights_digest(local / "model") != expected:
        raise UserError(
            f"models:/{name}/{version}: its weights are not those registered ({WEIGHTS_DIGEST} "
            "differs): the stored files were changed or damaged; nothing was decided on them"
        )
    return load_causal_lm(local / "model", tok)
