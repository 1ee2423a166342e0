"""The evaluation as people read it: report.md, published as the Prefect run's markdown
artifact and logged to MLflow beside the plots."""

from __future__ import annotations

import pandas as pd

from rlhf.core.evaluation.records import (
    CHAMPION,
    JUDGE,
    NEW,
    REFERENCE,
    WHOLE_JUDGES,
    Evaluation,
    Interval,
)

# (row label, Scores field) for the per-policy table
ROWS = (
    ("judge score (evaluation reward models)", "judge"),
    ("reward-model score (optimised)", "rm"),
    ("gold score", "gold"),
    ("KL to the reference (nats)", "kl"),
    ("response length (tokens)", "length"),
    ("ended with EOS", "eos_rate"),
    ("distinct-2", "distinct_2"),
    ("perplexity on held-out SFT responses", "perplexity"),
)


def fmt(x: float | None, spec: str = ".3f") -> str:
    """A metric for people: three decimals (or spec), or n/a where the judge did not apply."""
    return "n/a" if x is None else format(x, spec)


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def comparisons(
    e: Evaluation, others: tuple[str, ...] = (REFERENCE, CHAMPION)
) -> list[tuple[str, Interval]]:
    """(label, interval) of every win rate of a whole judge against others."""
    return [
        (f"new vs {other} ({judge})", interval)
        for other in others
        for judge in WHOLE_JUDGES
        if (interval := e.win(judge, other)) is not None
    ]


def rate(w: Interval | None) -> str:
    return "n/a" if w is None else f"{w.rate:.3f} ({w.lower:.3f}-{w.upper:.3f})"


def summary_lines(e: Evaluation) -> list[str]:
    """The evaluation in a few lines for the terminal: the judge's win rate of the new policy
    against SFT and its KL, the reference judge's view where there is one, the judges'
    held-out accuracy."""
    new, sft = e.scores[NEW], e.scores[REFERENCE]
    by_rm = (
        ""
        if e.functions_judge
        else f"by the optimised reward model {rate(e.win('rm', REFERENCE))}; "
    )
    lines = [
        f"held-out prompts: win rate against SFT by {e.judge_name} "
        f"{rate(e.win(JUDGE, REFERENCE))}, {by_rm}KL to SFT {fmt(new.kl)} nats per response"
    ]
    if e.win("gold", REFERENCE) is None:
        lines.append(f"no reference judge: the policy is scored by {e.judge_name} alone")
    else:
        lines.append(
            f"reference judge: score SFT {fmt(sft.gold)} -> policy {fmt(new.gold)}, win rate "
            f"{rate(e.win('gold', REFERENCE))}; the annotators agree with it on "
            f"{fmt(e.label_gold_agreement)} of test pairs"
        )
    if not e.functions_judge:
        lines.append(
            f"held-out pair accuracy: reward model {fmt(e.rm_accuracy)}, judge "
            f"{fmt(e.judge_accuracy)}"
        )
    if e.validated is not None and new.extrapolated is not None:
        lines.append(
            f"outside the judges' validated range ({e.validated.responses} test responses): "
            f"policy {new.extrapolated:.1%}, SFT {fmt(sft.extrapolated, '.1%')}; distinct-2 "
            f"SFT {fmt(sft.distinct_2)} -> policy {fmt(new.distinct_2)}"
        )
    return lines


def side_by_side(samples: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first seed's responses to the first n prompts, one column per policy."""
    first = samples[samples["seed"] == samples["seed"].min()]
    table = first.pivot(index="prompt", columns="policy", values="response")
    order = list(dict.fromkeys(first["prompt"]))[:n]
    return table.loc[order]


def markdown(e: Evaluation, model_uri: str, samples: pd.DataFrame) -> str:
    policies = [p for p in (REFERENCE, NEW, CHAMPION) if p in e.scores]
    names = {
        REFERENCE: "reference (SFT)",
        NEW: f"new ({model_uri})",
        CHAMPION: f"champion (v{e.champion_version_compared})",
    }
    lines = [
        f"# Evaluation of {model_uri}",
        "",
        f"{e.eval_prompts} held-out prompts x {e.samples_per_prompt} samples, the same "
        "seeds for every policy.",
        "",
        "| | " + " | ".join(names[p] for p in policies) + " |",
        "|---|" + "---|" * len(policies),
    ]
    for label, name in ROWS:
        cells = (fmt(getattr(e.scores[p], name)) for p in policies)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", *win_table(comparisons(e))]
    accuracy = (
        "No reward model (rewards.model_weight 0): the reward functions' weighted sum is the "
        "judge and the reward-model score."
        if e.functions_judge
        else f"Held-out pairwise accuracy: reward model {fmt(e.rm_accuracy)}, judge (mean of "
        f"its members) {fmt(e.judge_accuracy)}; the annotators' own agreement with the "
        f"gold judge {fmt(e.label_gold_agreement)}."
    )
    best = "the reward functions' best" if e.functions_judge else "the judge's best"
    lines += [
        "",
        f"{accuracy} The policy is the snapshot at iteration {e.selected_iteration}, {best} "
        "within the KL budget.",
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


def win_table(rows: list[tuple[str, Interval]]) -> list[str]:
    return [
        "| win rate | rate | 95% interval |",
        "|---|---|---|",
        *(f"| {label} | {w.rate:.3f} | {w.lower:.3f} - {w.upper:.3f} |" for label, w in rows),
    ]


def promotion_markdown(model_uri: str, verdict: str, reasons: list[str], e: Evaluation) -> str:
    """The promote step's decision, with the comparison against the champion it rests on."""
    lines = [f"# Promotion of {model_uri}", "", f"**{verdict}.** " + "; ".join(reasons) + ".", ""]
    other = CHAMPION if e.champion_version_compared is not None else REFERENCE
    rows = comparisons(e, (other,))
    return "\n".join(lines + (win_table(rows) if rows else [])) + "\n"


def functions_lines(found: dict) -> list[str]:
    """One line per reward function (rlhf.core.evaluation.sampling.function_metrics): its mean
    on SFT's and the policy's samples and the gain with its interval."""
    names = [k.removesuffix("_gain") for k in found if k.endswith("_gain")]
    return [
        f"{name}: SFT {fmt(found[f'{name}_{REFERENCE}'])} -> policy {fmt(found[f'{name}_{NEW}'])}, "
        f"gain {found[f'{name}_gain']:+.3f} ({found[f'{name}_gain_lower']:+.3f} to "
        f"{found[f'{name}_gain_upper']:+.3f})"
        for name in names
    ]


def functions_markdown(found: dict) -> str:
    """The reward functions' section of report.md (empty without functions)."""
    lines = functions_lines(found)
    if not lines:
        return ""
    return (
        "\n## Reward functions\n\nMean score, SFT -> policy, and the policy's paired gain "
        "(95% CI over prompts):\n\n" + "".join(f"- {line}\n" for line in lines)
    )
