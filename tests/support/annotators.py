"""Scripted people for the loop's tests (a `loop.annotators` plugin): at a human gate they
always pick the challenger (its side is in the gate's gate.json, which OUTBOX points at),
elsewhere the left answer; they answer as a Label Studio export."""

from __future__ import annotations

import json
from pathlib import Path

OUTBOX: list[Path] = []  # the project's loop.outbox, set by the test


def challenger_sides() -> dict[str, str]:
    sides = {}
    for gate in (p for outbox in OUTBOX for p in outbox.glob("gate-v*/gate.json")):
        sides |= {t["id"]: t["challenger"] for t in json.loads(gate.read_text())["tasks"]}
    return sides


def prefer_challenger(tasks: list[dict], seed: int) -> list[dict]:
    sides = challenger_sides()
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
                            "value": {
                                "selected": "left"
                                if sides.get(task["data"]["id"], "a") == "a"
                                else "right"
                            },
                        }
                    ],
                }
            ],
        }
        for i, task in enumerate(tasks)
    ]
