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

from rlhf.core.feedback.formats import UNKNOWN


class AnnotatorStats:
    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.comparison = array("Q")  # 64 bits of comparison_id
        self.annotator = array("q")  # index into names
        self.side = array("b")  # 1 when the vote chose the lexically smaller response

    def add(self, comparison_ids: list[str], annotators: list[str], chosen_first: list[bool]):
        """Votes, as parallel lists."""
        self.comparison.extend(int(c, 16) for c in comparison_ids)
        self.annotator.extend(self.names.setdefault(a, len(self.names)) for a in annotators)
        self.side.extend(chosen_first)

    def shared(self):
        """(annotator, side) votes of each comparison that has several, and the number of
        comparisons (every vote of a single-vote comparison is its own)."""
        ids = np.frombuffer(self.comparison, dtype=np.uint64)
        order = np.argsort(ids, kind="stable")
        starts = np.flatnonzero(np.diff(ids[order], prepend=ids[order][:1] + 1) != 0)
        ends = np.r_[starts[1:], len(order)]
        several = ends - starts > 1
        names = list(self.names)
        groups = [
            [(names[self.annotator[i]], bool(self.side[i])) for i in order[lo:hi]]
            for lo, hi in zip(starts[several], ends[several])
        ]
        return groups, len(starts)

    def result(self) -> dict:
        overlap: Counter[tuple[str, str]] = Counter()
        agree: Counter[tuple[str, str]] = Counter()
        names = list(self.names)
        counts = np.bincount(np.frombuffer(self.annotator, dtype=np.int64), minlength=len(names))
        votes = Counter({a: int(k) for a, k in zip(names, counts)})
        comparisons = Counter(votes)  # less the repeat votes on one comparison, below
        groups, n = self.shared()
        conflicting = 0
        for group in groups:
            conflicting += len({side for _, side in group}) > 1
            by_annotator = Counter(a for a, _ in group)
            comparisons.subtract({a: k - 1 for a, k in by_annotator.items()})
            side_of = defaultdict(set)
            for ann, side in group:
                if ann != UNKNOWN:
                    side_of[ann].add(side)
            for a, b in combinations(sorted(side_of), 2):
                overlap[a, b] += 1
                agree[a, b] += side_of[a] == side_of[b]
        multi = len(groups)
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
