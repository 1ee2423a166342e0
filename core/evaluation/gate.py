"""The human side-by-side gate (`promotion.judge: human`): people decide a promotion; and the
audit (`promotion.audit_fraction`, `audit_every`): people review an automatic one afterwards.

The promote step writes the challenger's and the incumbent's responses to the held-out
prompts (the evaluation's paired samples: same prompt, same seed) as a labelling batch, with
the sides shuffled, and the decision waits for the labels:

    <outbox>/gate-v<N>/tasks.labelstudio.json   Label Studio import (the pairwise project);
                                                audit-v<N>/ for an audit, the same files
                      /labeling_config.xml      that project's labelling interface
                      /tasks.jsonl              the same pairs for any other tool
                      /gate.json                which side is which, the evaluation's metrics,
                                                the state (waiting | decided)
                      /labels/                  the labelled exports go here

Labels are read in any pairwise format the feedback importer reads and matched to the tasks
by prompt and responses, so no tool has to carry ids through; records that match no task or
cannot be read are counted in the decision's metrics. They never enter the feedback
dataset: they are judgements on held-out prompts, which the reward models must not train on.
Once `promotion.human_min_labels` tasks are labelled, the human win rate (a task's share of
votes for the challenger; 95% bootstrap interval over tasks, one per prompt) decides.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf.core.data.readers import read_records
from rlhf.core.evaluation.records import (
    CHAMPION,
    NEW,
    REFERENCE,
    Evaluation,
    HumanLabels,
    Interval,
    to_metrics,
)
from rlhf.core.evaluation.stats import win_rate_interval
from rlhf.core.feedback.collect import outbox_dir, write_tasks
from rlhf.core.feedback.dataset import normalise_prompt
from rlhf.core.feedback.formats import PAIRWISE, Reject, Vote, votes_of
from rlhf.core.feedback.importer import detect_format
from rlhf.core.io import atomic_dir, read_json, write_json
from rlhf.core.settings import Settings, UserError
from rlhf.models.errors import InputError

GATE, LABELS = "gate.json", "labels"
WAITING, DECIDED = "waiting", "decided"
KINDS = ("gate", "audit")  # before a promotion, after an automatic one


def gate_dir(settings: Settings, version: str, kind: str = "gate") -> Path:
    return outbox_dir(settings) / f"{kind}-v{version}"


def gate_pairs(samples: pd.DataFrame, incumbent: str, n: int, seed: int) -> list[dict]:
    """Up to n (prompt, challenger, incumbent) responses from the evaluation's samples, one
    per prompt before a second, identical responses left out (they say nothing)."""
    new = samples[samples["policy"] == NEW].set_index(["prompt", "seed"])["response"]
    old = samples[samples["policy"] == incumbent].set_index(["prompt", "seed"])["response"]
    rows = [
        {"prompt": p, "seed": int(s), "challenger": new[(p, s)], "incumbent": old[(p, s)]}
        for (p, s) in new.index
        if new[(p, s)] != old[(p, s)]
    ]
    rng = random.Random(seed)
    rng.shuffle(rows)
    rank: dict[str, int] = {}
    for r in rows:  # the k-th pair of a prompt goes after every prompt's (k-1)-th
        r["round"] = rank[r["prompt"]] = rank.get(r["prompt"], -1) + 1
    return sorted(rows, key=lambda r: r["round"])[:n]


def open_gate(
    settings: Settings,
    version: str,
    champion: str | None,
    samples: pd.DataFrame,
    e: Evaluation,
    kind: str = "gate",
) -> Path:
    """Write the labelling batch for version against the champion (or, with none, the
    reference); kind: gate (people decide) or audit (people review a promotion made, against
    the champion it replaced). A gate for the version against the same champion is kept as it
    is, with its labels; one against another champion is replaced."""
    folder = gate_dir(settings, version, kind)
    if (folder / GATE).exists() and read_json(folder / GATE)["champion"] == champion:
        return folder
    incumbent = CHAMPION if champion else REFERENCE
    rng = random.Random(settings.seed * 104_729 + int(version))
    pairs = gate_pairs(samples, incumbent, settings.promotion.human_pairs, rng.randrange(2**31))
    tasks = []
    for i, p in enumerate(pairs):
        left = rng.random() < 0.5  # the challenger's side
        a, b = (p["challenger"], p["incumbent"]) if left else (p["incumbent"], p["challenger"])
        tasks.append(
            {
                "id": f"{folder.name}-{i:05d}",
                "prompt": p["prompt"],
                "response_a": a,
                "response_b": b,
                "challenger": "a" if left else "b",
            }
        )
    with atomic_dir(folder) as tmp:
        write_tasks(
            tmp,
            folder.name,
            [{k: t[k] for k in ("id", "prompt", "response_a", "response_b")} for t in tasks],
        )
        (tmp / LABELS).mkdir()
        write_json(
            tmp / GATE,
            {
                "version": version,
                "kind": kind,
                "champion": champion,
                "state": WAITING,
                "tasks": tasks,
                "metrics": to_metrics(e),
            },
        )
    return folder


def read_votes(folder: Path, settings: Settings) -> tuple[list[Vote], int]:
    """Every vote in the gate's labels/, in any pairwise format the importer reads; and how
    many records or files gave none (unreadable, not a vote), counted rather than fatal. The
    importer's quality gate is not applied: an empty response is a real answer here, and
    people preferring the other one is the point."""
    votes, unusable = [], 0
    for path in sorted(p for p in (folder / LABELS).iterdir() if p.is_file()):
        if path.name.startswith("."):
            continue  # still being written
        try:
            fmt, records = detect_format(path, read_records(path, settings.feedback))
            if fmt not in PAIRWISE:
                raise UserError(f"{path}: {fmt} is not a pairwise format")
            for record in records:
                try:
                    votes += votes_of(fmt, record.row) if record.row is not None else []
                    unusable += record.row is None
                except Reject:
                    unusable += 1
        except InputError:  # a file gone or of the wrong kind since it was listed
            unusable += 1
    return votes, unusable


def with_human_labels(e: Evaluation, folder: Path, settings: Settings) -> Evaluation:
    """e with the gate's label counts and, once enough tasks are labelled, the human win rate
    of the challenger against the incumbent and its interval (None while waiting)."""
    gate = read_json(folder / GATE)
    incumbent = CHAMPION if gate["champion"] else REFERENCE
    sides = {}
    for t in gate["tasks"]:
        challenger = t["response_a"] if t["challenger"] == "a" else t["response_b"]
        pair = frozenset((t["response_a"], t["response_b"]))
        sides[(normalise_prompt(t["prompt"]), pair)] = challenger
    votes: dict[tuple, list[float]] = {}
    found, unusable = read_votes(folder, settings)
    for v in found:
        task = (normalise_prompt(v.prompt), frozenset((v.chosen, v.rejected)))
        if task in sides:
            votes.setdefault(task, []).append(float(v.chosen == sides[task]))
    labels = HumanLabels(
        tasks=len(gate["tasks"]),
        labelled_tasks=len(votes),
        votes_unmatched=len(found) - sum(len(v) for v in votes.values()),
        records_unusable=unusable,
    )
    needed = min(settings.promotion.human_min_labels, len(gate["tasks"]))
    interval = None
    if labels.labelled_tasks >= needed and labels.labelled_tasks > 0:
        per_task = np.array([[np.mean(v)] for v in votes.values()])  # [T, 1]
        resamples = settings.evaluate.bootstrap_resamples
        interval = Interval(*win_rate_interval(per_task, resamples, settings.seed))
    return e.but(human=labels, wins={("human", incumbent): interval})


def waiting_gates(settings: Settings) -> list[Path]:
    """Gate and audit folders whose decision still waits for labels, oldest version first."""
    found = [
        p.parent
        for kind in KINDS
        for p in outbox_dir(settings).glob(f"{kind}-v*/{GATE}")
        if read_json(p)["state"] == WAITING
    ]
    return sorted(found, key=lambda p: int(p.name.rsplit("-v", 1)[1]))


def close_gate(folder: Path, verdict: str) -> None:
    gate = read_json(folder / GATE)
    write_json(folder / GATE, {**gate, "state": DECIDED, "verdict": verdict})
