"""The evaluation as people read it: report.md, published as the Prefect run's markdown
artifact and logged to MLflow beside the plots."""

from __future__ import annotations

import pandas as pd

# (row label, metric prefix) for the per-policy table; the column suffix is the policy
ROWS = (
    ("judge score (evaluation reward models)", "judge_score"),
    ("reward-model score (optimised)", "rm_score"),
    ("gold score", "gold_score"),
    ("KL to the reference (nats)", "kl"),
    ("response length (tokens)", "length"),
    ("ended with EOS", "eos_rate"),
    ("distinct-2", "distinct_2"),
    ("perplexity on held-out SFT responses", "perplexity"),
)


def fmt(x: float | None) -> str:
    """A metric for people: three decimals, or n/a where the judge did not apply."""
    return "n/a" if x is None else f"{x:.3f}"


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def policy_key(prefix: str, policy: str) -> str:
    return f"kl_{policy}_vs_ref" if prefix == "kl" else f"{prefix}_{policy}"


def comparisons(m: dict) -> list[tuple[str, float, float, float]]:
    """(label, rate, low, high) of every win rate the evaluation measured."""
    rows = []
    for other in ("sft", "champion"):
        for judge in ("judge", "human", "rm", "gold"):
            key = f"{judge}_win_rate_policy_vs_{other}"
            if m.get(key) is not None:
                rows.append(
                    (f"new vs {other} ({judge})", m[key], m[f"{key}_lower"], m[f"{key}_upper"])
                )
    return rows


def side_by_side(samples: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first seed's responses to the first n prompts, one column per policy."""
    first = samples[samples["seed"] == samples["seed"].min()]
    table = first.pivot(index="prompt", columns="policy", values="response")
    order = list(dict.fromkeys(first["prompt"]))[:n]
    return table.loc[order]


def markdown(m: dict, model_uri: str, samples: pd.DataFrame) -> str:
    policies = [p for p in ("sft", "policy", "champion") if f"rm_score_{p}" in m]
    names = {
        "sft": "reference (SFT)",
        "policy": f"new ({model_uri})",
        "champion": f"champion (v{m.get('champion_version_compared')})",
    }
    lines = [
        f"# Evaluation of {model_uri}",
        "",
        f"{m['eval_prompts']} held-out prompts x {m['samples_per_prompt']} samples, the same "
        "seeds for every policy.",
        "",
        "| | " + " | ".join(names[p] for p in policies) + " |",
        "|---|" + "---|" * len(policies),
    ]
    for label, prefix in ROWS:
        lines.append(
            f"| {label} | " + " | ".join(fmt(m.get(policy_key(prefix, p))) for p in policies) + " |"
        )
    lines += ["", "| win rate | rate | 95% interval |", "|---|---|---|"]
    lines += [
        f"| {label} | {rate:.3f} | {lo:.3f} - {hi:.3f} |" for label, rate, lo, hi in comparisons(m)
    ]
    lines += [
        "",
        f"Held-out pairwise accuracy: reward model {fmt(m['rm_accuracy'])}, judge (mean of "
        f"its members) {fmt(m['judge_accuracy'])}; the annotators' own agreement with the "
        f"gold judge {fmt(m['label_gold_agreement'])}. The policy is PPO's snapshot at "
        f"iteration {m['selected_iteration']}, the judge's best within the KL budget.",
        "",
        "## Samples side by side",
        "",
        "| prompt | " + " | ".join(names[p] for p in policies) + " |",
        "|---|" + "---|" * len(policies),
    ]
    for prompt, row in side_by_side(samples, 4).iterrows():
        lines.append(f"| {cell(prompt)} | " + " | ".join(cell(row[p]) for p in policies) + " |")
    lines += [
        "",
        "Plots (MLflow artifacts of the evaluate run): `plots/training_curves.png`, "
        "`plots/score_vs_kl.png`, `plots/win_rates.png`.",
    ]
    return "\n".join(lines) + "\n"


def promotion_markdown(model_uri: str, verdict: str, reasons: list[str], m: dict) -> str:
    """The promote step's decision, with the comparison against the champion it rests on."""
    lines = [f"# Promotion of {model_uri}", "", f"**{verdict}.** " + "; ".join(reasons) + ".", ""]
    other = "champion" if m.get("champion_version_compared") is not None else "sft"
    rows = [r for r in comparisons(m) if f"vs {other}" in r[0]]
    if rows:
        lines += ["| win rate | rate | 95% interval |", "|---|---|---|"]
        lines += [f"| {label} | {rate:.3f} | {lo:.3f} - {hi:.3f} |" for label, rate, lo, hi in rows]
    return "\n".join(lines) + "\n"
