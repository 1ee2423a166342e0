"""The evaluation's PNG plots: policy training curves, score against KL, win rates, and the
methods of `rlhf compare` against KL.

matplotlib runs headless (Agg) and each function writes one file and closes its figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from rlhf.core.evaluation.records import Interval

# policy training history columns shown, one panel each where the method logs them (a group
# method has no value loss, PPO no flat groups, DPO no rollouts): (title, columns)
CURVES = (
    ("reward-model score", ("rm_score_raw",)),
    ("KL to reference (nats)", ("kl",)),
    ("KL coefficient beta", ("beta",)),
    ("entropy (nats/token)", ("entropy",)),
    ("response length (tokens)", ("response_length",)),
    ("policy: clip fraction, approx KL", ("clipfrac", "approx_kl")),
    ("value loss", ("vf_loss",)),
    ("explained variance", ("explained_variance",)),
    ("no-EOS fraction", ("no_eos_fraction",)),
    ("groups with equal scores", ("flat_groups",)),
    ("preference loss (DPO / IPO)", ("train_loss",)),
    ("held-out preference accuracy", ("preference_accuracy",)),
)


def _pyplot():
    matplotlib.use("Agg")

    return plt


def training_curves(history: pd.DataFrame, path: Path) -> None:
    """The policy's per-iteration statistics against the iteration, three panels a row."""
    plt = _pyplot()
    curves = [(title, cols) for title, cols in CURVES if set(cols) <= set(history.columns)]
    rows = -(-len(curves) // 3)
    fig, axes = plt.subplots(rows, 3, figsize=(12, 3 * rows), sharex=True, squeeze=False)
    for ax in axes.flat[len(curves) :]:
        ax.set_visible(False)
    for ax, (title, cols) in zip(axes.flat, curves):
        for col in cols:
            logged = history[col].dropna()  # a column logged every few steps has gaps
            ax.plot(logged.index, logged, label=col, lw=1.2)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if len(cols) > 1:
            ax.legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("iteration")
    fig.suptitle("policy training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _twin_scores(ax, x, curve: pd.DataFrame, style: str) -> None:
    """The optimised RM's and the judge's scores on ax, gold score (where the reference judge
    applies) on a twin axis, one legend."""
    ax.plot(x, curve["rm"], "o" + style, color="tab:blue", label="reward model (optimised)")
    ax.plot(x, curve["judge"], "D" + style, color="tab:green", label="judge (evaluation RMs)")
    ax.set_ylabel("reward-model scores")
    lines = ax.get_lines()
    if curve["gold"].notna().any():
        gold = ax.twinx()
        gold.plot(x, curve["gold"], "s" + style, color="tab:orange", label="gold judge")
        gold.set_ylabel("gold score", color="tab:orange")
        lines += gold.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)


def score_vs_kl(curve: pd.DataFrame, path: Path, selected: int) -> None:
    """RM, judge and gold score of each policy snapshot against its KL to the reference (left),
    and against the iteration (right); a dashed line marks the snapshot the policy stage kept
    (selected).

    Over-optimisation shows as the RM score holding or rising while the others fall.
    curve: one row per snapshot with iteration, kl, rm, judge, gold (gold may be NaN).
    """
    plt = _pyplot()
    fig = plt.figure(figsize=(13, 5))
    grid = fig.add_gridspec(2, 2, height_ratios=(2, 1))
    by_kl = fig.add_subplot(grid[:, 0])
    _twin_scores(by_kl, curve["kl"], curve, "")
    for _, row in curve.iterrows():
        by_kl.annotate(
            str(int(row["iteration"])),
            (row["kl"], row["rm"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(3, 3),
        )
    by_kl.set_xlabel("KL to the reference (nats per response)")
    by_kl.set_title("score against KL (labels: iteration)", fontsize=10)
    by_iter = fig.add_subplot(grid[0, 1])
    _twin_scores(by_iter, curve["iteration"], curve, "-")
    by_iter.set_title("score against iteration", fontsize=10)
    by_iter.axvline(selected, color="black", lw=1, ls="--")
    by_kl.axvline(
        curve.loc[curve["iteration"] == selected, "kl"].mean(), color="black", lw=1, ls="--"
    )
    kl = fig.add_subplot(grid[1, 1], sharex=by_iter)
    kl.plot(curve["iteration"], curve["kl"], "^-", color="tab:gray")
    kl.set_ylabel("KL (nats)")
    kl.set_xlabel("iteration (0: the reference)")
    kl.grid(alpha=0.3)
    fig.suptitle("Over-optimisation check: held-out prompts, every policy snapshot")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def win_rates(rows: list[tuple[str, Interval]], path: Path) -> None:
    """Win rates with their 95% intervals, one bar per (label, interval)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.2))
    labels = [label for label, _ in rows]
    rates = [w.rate for _, w in rows]
    err = [[w.rate - w.lower for _, w in rows], [w.upper - w.rate for _, w in rows]]
    ax.barh(labels, rates, xerr=err, capsize=4, color="tab:green", alpha=0.7)
    ax.axvline(0.5, color="black", lw=1, ls="--")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("win rate (95% bootstrap interval; 0.5 = no difference)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def methods_vs_kl(
    board: pd.DataFrame, curves: pd.DataFrame, ref: str, kl_budget: float, path: Path
) -> None:
    """Score against KL: a line through each trained method's snapshots (iteration 0 is the
    SFT model), a large marker at the policy it kept; best-of-n as a point. board: the
    scoreboard (rlhf.core.evaluation.scoreboard), its first row SFT; ref: the judge scoring;
    a dotted line marks the KL budget no kept snapshot may exceed."""
    plt = _pyplot()
    score = f"{ref}_score"
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for (_, row), color in zip(board.iloc[1:].iterrows(), plt.cm.tab10.colors):
        snapshots = curves[curves["method"] == row["method"]] if len(curves) else curves
        if len(snapshots):
            ax.plot(snapshots["kl"], snapshots[ref], "o-", ms=3, lw=1, color=color, alpha=0.7)
        ax.plot(row["kl"], row[score], "*", ms=14, color=color, label=row["method"])
    ax.plot(0.0, board.iloc[0][score], "ks", ms=8, label="sft")
    ax.axvline(kl_budget, color="gray", lw=1, ls=":", label=f"KL budget {kl_budget:g}")
    ax.set_xlabel("KL to the SFT model (nats per response)")
    ax.set_ylabel(f"{ref} score (held-out prompts)")
    ax.set_title("Each method's snapshots (dots) and the policy it kept (star)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
