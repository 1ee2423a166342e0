"""Who judged what, and how often judges agree on the same comparison.

A comparison is a prompt with an unordered pair of responses; each vote on it picks one side.
Agreement between two annotators is measured on the comparisons both voted on; disagreement
is a comparison with votes for both sides. Votes of unknown judges count in the totals but
not as a person in pairwise agreement. Votes are kept as three compact arrays (13 bytes a
vote), so the statistics of a large import cost little memory.
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from itertools import combinations

import numpy as np

from rlhf.core.preferences.formats import UNKNOWN


class AnnotatorStats:
    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.comparison = array("Q")  # 64 bits of comparison_id
        self.annotator = array("l")  # index into names
        self.side = array("b")  # 1 when the vote chose the lexically smaller response

    def add(self, comparison_id: str, annotator: str, chosen_first: bool) -> None:
        self.comparison.append(int(comparison_id, 16))
        self.annotator.append(self.names.setdefault(annotator, len(self.names)))
        self.side.append(chosen_first)

    def groups(self):
        """(annotator, side) votes of each comparison, comparison by comparison."""
        ids = np.frombuffer(self.comparison, dtype=np.uint64)
        order = np.argsort(ids, kind="stable")
        starts = np.flatnonzero(np.r_[True, ids[order][1:] != ids[order][:-1]])
        names = list(self.names)
        for lo, hi in zip(starts, [*starts[1:], len(order)]):
            yield [(names[self.annotator[i]], bool(self.side[i])) for i in order[lo:hi]]

    def result(self) -> dict:
        overlap: Counter[tuple[str, str]] = Counter()
        agree: Counter[tuple[str, str]] = Counter()
        votes: Counter[str] = Counter()
        comparisons: Counter[str] = Counter()
        n = multi = conflicting = 0
        for group in self.groups():
            n += 1
            votes.update(a for a, _ in group)
            comparisons.update({a for a, _ in group})
            if len(group) == 1:
                continue
            multi += 1
            conflicting += len({side for _, side in group}) > 1
            side_of = defaultdict(set)
            for ann, side in group:
                if ann != UNKNOWN:
                    side_of[ann].add(side)
            for a, b in combinations(sorted(side_of), 2):
                overlap[a, b] += 1
                agree[a, b] += side_of[a] == side_of[b]
        return {
            "annotators": [
                {"annotator": a, "votes": k, "comparisons": comparisons[a]}
                for a, k in sorted(votes.items(), key=lambda x: (-x[1], x[0]))
            ],
            "agreement": [
                {
                    "annotator_a": a,
                    "annotator_b": b,
                    "overlap": k,
                    "agreement": round(agree[a, b] / k, 4),
                }
                for (a, b), k in sorted(overlap.items())
            ],
            "comparisons": n,
            "comparisons_with_several_votes": multi,
            "comparisons_with_conflicting_votes": conflicting,
        }
