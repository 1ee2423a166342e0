"""Scripted people for the loop's tests (a `loop.annotators` plugin): at a human gate they
always pick the challenger (its side is in the gate's gate.json, which OUTBOX points at),
elsewhere the left answer; `reject_audits` picks the champion it replaced at an audit. They
answer as a Label Studio export."""

from __future__ import annotations

import json
from pathlib import Path

OUTBOX: list[Path] = []  # the project's loop.outbox, set by the test


def challenger_sides(kind: str) -> dict[str, str]:
    """Task id -> the challenger's side ("a" or "b"), at gates of this kind."""
    sides = {}
    for gate in (p for outbox in OUTBOX for p in outbox.glob(f"{kind}-v*/gate.json")):
        sides |= {t["id"]: t["challenger"] for t in json.loads(gate.read_text())["tasks"]}
    return sides


def export(tasks: list[dict], left: list[bool]) -> list[dict]:
    """A Label Studio export choosing the left answer where left[i], the right one elsewhere."""
    return [
        {
            "id": i + 1,
            "data": task["data"],
            "annotations": [
                {
                    "completed_by": {"email": "scripted@example.com"},
                    "result": [
                        {
                            "type": "pairwise",
                            "from_name": "comparison",
                            "to_name": ["answer1", "answer2"],
                            "value": {"selected": "left" if is_left else "right"},
                        }
                    ],
                }
            ],
        }
        for i, (task, is_left) in enumerate(zip(tasks, left))
    ]


def prefer_challenger(tasks: list[dict], seed: int) -> list[dict]:
    sides = challenger_sides("gate")
    return export(tasks, [sides.get(t["data"]["id"], "a") == "a" for t in tasks])


def reject_audits(tasks: list[dict], seed: int) -> list[dict]:
    """At an audit, the answer of the champion the audited policy replaced; elsewhere the left
    one."""
    sides = challenger_sides("audit")
    return export(tasks, [sides.get(t["data"]["id"], "b") == "b" for t in tasks])
