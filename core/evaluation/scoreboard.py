"""The scoreboard of `rlhf compare`: a row per method from its evaluation, the table in
Markdown (the plot is rlhf.core.evaluation.plots.methods_vs_kl).

Scores are the reference judge's (the demo's gold) where there is one, else the judge's
(the evaluation reward models'); win rates are against the SFT model on the same prompts and
seeds, with 95% bootstrap intervals.
"""

from __future__ import annotations

import pandas as pd

from rlhf.core.evaluation.records import JUDGE, NEW, REFERENCE, Evaluation
from rlhf.core.evaluation.report import fmt

JUDGES = ("gold", JUDGE, "rm")  # win rates reported, the referee first


def method_row(
    method: str, e: Evaluation, trained: dict, model_uri: str = "", samples_per_answer: int = 1
) -> dict:
    """One method's figures: e (its evaluation), trained (its policy stage's metrics: seconds
    and generated tokens of training)."""
    row: dict = {"method": method}
    for judge in JUDGES:
        w = e.win(judge, REFERENCE)
        row |= {
            f"{judge}_win_rate": w.rate if w else None,
            f"{judge}_win_lower": w.lower if w else None,
            f"{judge}_win_upper": w.upper if w else None,
        }
    new = e.scores[NEW]
    return row | {
        "gold_score": new.gold,
        "judge_score": new.judge,
        "kl": new.kl,
        "length": new.length,
        "distinct_2": new.distinct_2,
        "train_seconds": float(trained.get("seconds", 0.0)),
        "generated_tokens": int(trained.get("generated_tokens", 0)),
        "samples_per_answer": samples_per_answer,
        "model": model_uri,
    }


def reference_row(e: Evaluation) -> dict:
    """The SFT model itself, from any method's evaluation (they sample it identically)."""
    sft = e.scores[REFERENCE]
    return {
        "method": REFERENCE,
        "gold_score": sft.gold,
        "judge_score": sft.judge,
        "kl": 0.0,
        "length": sft.length,
        "distinct_2": sft.distinct_2,
        "train_seconds": 0.0,
        "generated_tokens": 0,
        "samples_per_answer": 1,
        "model": "",
    }


def function_columns(metrics: dict, policy: str) -> dict:
    """Each reward function's mean score on policy's samples, from an evaluation's metrics:
    reward_<name> -> value."""
    return {
        k.removesuffix(f"_{policy}"): v
        for k, v in metrics.items()
        if k.startswith("reward_") and k.endswith(f"_{policy}")
    }


def referee(board: pd.DataFrame) -> str:
    """gold where it scored every method, else the judge."""
    has_gold = "gold_win_rate" in board and board["gold_win_rate"].drop(0).notna().all()
    return "gold" if has_gold else JUDGE


def number(value) -> str:
    """A board cell: three decimals, n/a where it was not measured (None or NaN)."""
    return fmt(None if pd.isna(value) else value)


def interval(row: pd.Series, judge: str) -> str:
    rate = row.get(f"{judge}_win_rate")
    if rate is None or pd.isna(rate):
        return "-"
    return f"{rate:.3f} ({row[f'{judge}_win_lower']:.3f}-{row[f'{judge}_win_upper']:.3f})"


def board_markdown(board: pd.DataFrame) -> str:
    """The table (first row: SFT, the reference) and which method is best by the referee."""
    ref = referee(board)
    functions = [c for c in board.columns if c.startswith("reward_")]
    lines = [
        f"| method | {ref} win rate vs SFT (95% CI) | "
        + " | ".join(f"{j} win rate" for j in JUDGES if j != ref)
        + f" | {ref} score | KL (nats) | length | distinct-2 | training s | generated tokens "
        "| samples per answer |" + "".join(f" {c.removeprefix('reward_')} |" for c in functions),
        "|---" * (8 + len(JUDGES) + len(functions)) + "|",
    ]
    for _, row in board.iterrows():
        lines.append(
            f"| {row['method']} | {interval(row, ref)} | "
            + " | ".join(interval(row, j) for j in JUDGES if j != ref)
            + f" | {fmt(row[f'{ref}_score'])} | {row['kl']:.2f} | {row['length']:.1f} | "
            f"{number(row['distinct_2'])} | {row['train_seconds']:.0f} | "
            f"{row['generated_tokens']:,} | {row['samples_per_answer']} |"
            + "".join(f" {number(row[c])} |" for c in functions)
        )
    methods = board.iloc[1:]
    best = methods.loc[methods[f"{ref}_win_rate"].astype(float).idxmax()]
    above = methods[methods[f"{ref}_win_lower"].astype(float) > 0.5]["method"].tolist()
    lines += [
        "",
        f"Best by {ref}: **{best['method']}**, win rate {interval(best, ref)} against SFT at "
        f"KL {best['kl']:.2f} nats. Better than SFT (interval above 0.5): "
        f"{', '.join(above) if above else 'none'}.",
    ]
    return "\n".join(lines) + "\n"
