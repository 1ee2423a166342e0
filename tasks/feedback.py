"""Stage 4, feedback: the pair table of this run, merged from the feedback dataset's batches.

Batches get into data/feedback through `rlhf feedback import` (rlhf.core.feedback.batches);
this stage runs the same merge the import ends with, under this run's settings, and reports
who judged: per-annotator counts and agreement go to MLflow (as tables) and to the Prefect run.
"""

from __future__ import annotations

import json
import sys

from rlhf.core.feedback.batches import log_annotators, splits
from rlhf.core.feedback.dataset import ANNOTATORS, batch_dirs, merge
from rlhf.core.pipeline.context import StageContext


def run(ctx: StageContext) -> dict:
    dataset = ctx.data("feedback")
    metrics = merge(batch_dirs(dataset), ctx.out, splits(ctx.settings))
    log_annotators(json.loads((ctx.out / ANNOTATORS).read_text()))
    if ctx.tracking:
        print(
            f"feedback: {metrics['pairs']} votes from {metrics['batches']} batch(es) by "
            f"{metrics['annotators']} annotator(s): train {metrics['train_pairs']}, test "
            f"{metrics['test_pairs']}, judge {metrics['judge_pairs']} ({metrics['ties']} ties, "
            "left out of training)",
            file=sys.stderr,
        )
    return metrics
