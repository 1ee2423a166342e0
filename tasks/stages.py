"""The seven stages: what each reads, which params and code define it, what it writes.

One table serves every entry point: the Prefect flow builds its cache keys from it, the CLI
runs stages by name from it, and dvc.yaml declares the same deps/params/outs (a test checks
that `rlhf dvc-yaml` and the committed dvc.yaml agree).
"""

from __future__ import annotations

from dataclasses import dataclass

# Code every stage runs through; a change here reruns everything.
COMMON = ("tasks/runner.py", "tasks/io.py", "tasks/settings.py", "tasks/stages.py",
          "models/distributed.py")
TRAINING = ("models/lm.py", "models/tokenizer.py", "models/batching.py", "models/train.py")
SAMPLING = ("models/generation.py", "models/reward.py")
EVALUATION = tuple(f"tasks/evaluation/{m}.py" for m in ("__init__", "stats", "plots", "report"))
PREFERENCES = tuple(f"tasks/preferences/{m}.py"
                    for m in ("__init__", "formats", "importer", "dataset", "stats"))


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]  # upstream outs it reads, as "<stage>/<out>", or "data/<folder>"
    params: tuple[str, ...]  # top-level params.yaml keys it reads
    outs: tuple[str, ...]  # paths inside artifacts/<name>/ that later stages read
    code: tuple[str, ...] = ()  # source files beyond COMMON and tasks/<name>.py

    @property
    def module(self) -> str:
        return f"tasks.{self.name}"

    @property
    def code_files(self) -> tuple[str, ...]:
        return (f"tasks/{self.name}.py", *COMMON, *self.code)


STAGES = (
    Stage("ingest", ("data/corpus", "data/sft", "data/prompts"), ("ingest",),
          ("corpus.parquet", "sft.parquet", "prompts_train.parquet", "prompts_eval.parquet",
           "quarantine.jsonl"), ("tasks/validation.py", "tasks/readers.py", "tasks/sft_formats.py")),
    Stage("pretrain", ("ingest/corpus.parquet",), ("seed", "device", "pretrain"), ("model",),
          TRAINING),
    Stage("sft", ("ingest/sft.parquet", "pretrain/model"), ("seed", "device", "sft"),
          ("model", "heldout.parquet"), TRAINING),
    Stage("feedback", ("data/feedback",), ("feedback",), ("pairs.parquet", "annotators.json"),
          ("tasks/validation.py", "tasks/readers.py", *PREFERENCES)),
    Stage("reward", ("feedback/pairs.parquet", "sft/model", "ingest/prompts_train.parquet"),
          ("seed", "device", "reward"), ("model", "calibration.csv"), (*TRAINING, *SAMPLING)),
    Stage("ppo", ("ingest/prompts_train.parquet", "sft/model", "reward/model"),
          ("seed", "device", "ppo"), ("model", "history.csv", "snapshots"),
          (*TRAINING, *SAMPLING, "models/ppo.py", "models/ppo_step.py")),
    # Evaluate also reads the registry's current champion, which no digest covers: it compares
    # against whichever policy holds `champion` when it runs.
    Stage("evaluate", ("ingest/prompts_eval.parquet", "feedback/pairs.parquet", "sft/model",
                       "sft/heldout.parquet", "reward/model", "ppo/model", "ppo/history.csv",
                       "ppo/snapshots"), ("seed", "device", "evaluate", "promotion"),
          ("samples.csv", "score_vs_kl.csv", "plots", "report.md"),
          (*TRAINING, *SAMPLING, "tasks/demo.py", "tasks/registry.py",
           *EVALUATION)),
)
BY_NAME = {s.name: s for s in STAGES}
