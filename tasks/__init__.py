"""The stages, in the order they run: what each reads, which params define it, what it writes.

One module per stage (`rlhf.tasks.<name>`), each a `run(ctx) -> metrics` function that is the
body of the stage's Prefect task. This table serves every entry point: the Prefect flow runs
and caches by it, `rlhf stage NAME` runs one stage from it, and dvc.yaml declares the same
deps/params/outs (`rlhf dvc-yaml`; a test checks the committed file agrees). The code a stage
depends on is not listed here: it is derived from the stage module's imports
(rlhf.core.pipeline.codedeps), so the cache key and dvc.yaml cannot miss a module the stage runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf.core.pipeline.stage import Stage

if TYPE_CHECKING:
    from rlhf.core.settings import Settings

STAGES = (
    Stage(
        "ingest",
        needs=("data/corpus", "data/sft", "data/prompts"),
        params=("ingest",),
        outs=(
            "corpus.parquet",
            "sft.parquet",
            "prompts_train.parquet",
            "prompts_eval.parquet",
            "quarantine.jsonl",
        ),
        headline=("corpus_clean", "sft_clean", "prompts_train_clean", "quarantined_total"),
    ),
    Stage(
        "pretrain",
        needs=("ingest/corpus.parquet",),
        params=("seed", "device", "pretrain"),
        outs=("model", "loss.csv"),
        named=("pretrain.init_checkpoint",),
        registers="base",
        headline=("eval_perplexity", "train_loss", "tokens_seen", "seconds"),
    ),
    Stage(
        "sft",
        needs=("ingest/sft.parquet", "pretrain/model"),
        params=("seed", "device", "context_length", "lora", "sft"),
        outs=("model", "heldout.parquet", "loss.csv"),
        registers="sft",
        headline=("eval_loss", "eval_perplexity", "train_loss", "seconds"),
    ),
    Stage(
        "feedback",
        needs=("data/feedback",),
        params=("feedback",),
        outs=("pairs.parquet", "annotators.json", "quarantine.jsonl"),
        headline=("train_pairs", "test_pairs", "judge_pairs", "annotators"),
    ),
    Stage(
        "reward",
        needs=("feedback/pairs.parquet", "sft/model", "ingest/prompts_train.parquet"),
        params=("seed", "device", "context_length", "lora", "reward"),
        outs=("model", "calibration.csv", "loss.csv"),
        registers="reward",
        model_task="text-classification",
        headline=("accuracy", "train_accuracy", "seconds"),
    ),
    Stage(
        "judge",
        needs=("feedback/pairs.parquet", "sft/model"),
        needs_when=(("pretrain/model", "judge.backbones", "pretrain"),),
        params=("seed", "device", "context_length", "lora", "judge"),
        outs=("model",),
        registers="judge",
        model_task="text-classification",
        headline=("accuracy", "judge_pairs"),
    ),
    Stage(
        "policy",
        needs=(
            "ingest/prompts_train.parquet",
            "sft/model",
            "reward/model",
            "judge/model",
        ),
        params=("seed", "device", "context_length", "lora", "policy", "judge"),
        outs=("model", "selection.csv", "history.csv", "snapshots"),
        registers="policy",
        by_method=True,
        headline=(
            "selected_iteration",
            "selected_kl",
            "selected_judge",
            "final_reward_*",
            "seconds",
        ),
    ),
    Stage(
        "evaluate",
        needs=(
            "ingest/prompts_eval.parquet",
            "feedback/pairs.parquet",
            "sft/model",
            "sft/heldout.parquet",
            "reward/model",
            "judge/model",
            "policy/model",
            "policy/history.csv",
            "policy/snapshots",
        ),
        params=("seed", "device", "context_length", "evaluate", "rewards"),
        outs=("samples.csv", "score_vs_kl.csv", "plots", "report.md"),
        plugins=("evaluate.reference_judge", "rewards.functions"),
        context="evaluation",
        headline=(
            "judge_win_rate_policy_vs_sft",
            "judge_win_rate_policy_vs_sft_lower",
            "judge_win_rate_policy_vs_sft_upper",
            "rm_win_rate_policy_vs_sft",
            "kl_policy_vs_ref",
            "gold_win_rate_policy_vs_sft",
            "gold_score_policy",
            "reward_*_gain",
        ),
    ),
)
BY_NAME = {s.name: s for s in STAGES}


def stages_for(settings: Settings) -> tuple[Stage, ...]:
    """The stages a run has under these settings, in order (without a reward model: no
    feedback, reward or judge stage)."""
    return tuple(s for s in STAGES if s.applies(settings))
