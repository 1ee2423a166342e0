"""A tiny copy of the project to run stages and flows in: the code, params with TINY overrides,
fresh demo data, in a git repository."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
from pathlib import Path

import yaml

from rlhf.core.pipeline.codedeps import top_packages

ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILES = [".gitignore", "pyproject.toml", "params.yaml", "dvc.yaml", *top_packages()]

# Small enough that the whole pipeline runs in well under a minute on 2 CPU cores.
TINY = {
    "demo": {
        "corpus_docs": 300,
        "sft_examples": 200,
        "comparisons": 240,
        "train_prompts": 48,
        "eval_prompts": 16,
    },
    "pretrain": {
        "vocab_size": 320,
        "model": "micro",
        "presets": {
            "micro": {
                "hidden_size": 32,
                "num_layers": 2,
                "num_heads": 2,
                "intermediate_size": 64,
                "max_positions": 128,
            }
        },
        "steps": 30,
        "batch_size": 8,
        "warmup_steps": 5,
    },
    "sft": {"steps": 20, "batch_size": 8, "warmup_steps": 5},
    "reward": {
        "steps": 20,
        "batch_size": 8,
        "lr": 0.001,
        "warmup_steps": 5,
        "reference_samples": 16,
        "reference_max_new_tokens": 12,
    },
    "ppo": {
        "iterations": 3,
        "rollout_batch_size": 8,
        "minibatch_size": 4,
        "ppo_epochs": 2,
        "max_new_tokens": 12,
        "checkpoint_every": 2,
    },
    "group": {
        "iterations": 3,
        "prompts_per_iteration": 4,
        "group_size": 2,
        "minibatch_size": 4,
        "max_new_tokens": 12,
        "checkpoint_every": 2,
    },
    "dpo": {
        "steps": 6,
        "batch_size": 8,
        "warmup_steps": 2,
        "log_every": 2,
        "eval_every": 2,
        "checkpoint_every": 2,
        "max_new_tokens": 12,
    },
    "judge": {
        "steps": 10,
        "batch_size": 8,
        "lr": 0.001,
        "warmup_steps": 2,
        "selection_prompts": 8,
        "selection_samples": 1,
    },
    "evaluate": {"samples_per_prompt": 1, "max_new_tokens": 12},
    "feedback": {"test_fraction": 0.3},
}


# rewards without a reward model: the demo's verifiable task (rlhf.demo.answers) checked by
# exact match, no feedback at all
WITHOUT_MODEL = {
    "model_weight": 0.0,
    "functions": [
        {"name": "exact", "fn": "rlhf.core.rewards:exact_match", "weight": 1.0,
         "args": {"field": "answer"}},
    ],
}  # fmt: skip
ANSWERS = {
    "demo": {**TINY["demo"], "generator": "rlhf.demo.answers:write_demo_data"},
    "ingest": {"prompt_fields": ["answer"]},
    "rewards": WITHOUT_MODEL,
    "policy": {"method": "grpo"},
    "evaluate": {**TINY["evaluate"], "reference_judge": None},
}


def write_params(path: Path, overrides: dict, base: Path = ROOT / "params.yaml") -> None:
    params = yaml.safe_load(base.read_text())
    for section, values in overrides.items():
        if isinstance(values, dict):
            values = {**params.get(section, {}), **values}
        params[section] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(dest: Path, overrides: dict | None = None) -> Path:
    """A copy of the project (code, params with TINY overrides, fresh demo data) in a git repo."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / name)
    write_params(dest / "params.yaml", {**TINY, **(overrides or {})})
    # imported here: they import prefect and mlflow, which must see _quiet_env's settings
    from rlhf.core.pipeline.plugins import load_plugin  # noqa: PLC0415
    from rlhf.core.settings import load_settings  # noqa: PLC0415

    settings = load_settings(dest / "params.yaml")
    load_plugin(settings, "demo.generator")(settings)
    git = ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "project"], cwd=dest, check=True)
    return dest


def clone_project(source: Path, dest: Path, overrides: dict | None = None) -> Path:
    """A copy of a project that has run stages (its files, outputs, git history and MLflow
    store), with every path the store holds moved to the copy: the copy runs on as a project
    of its own, and the source is left as it was. overrides: params changed in the copy."""
    shutil.copytree(source, dest, symlinks=True)
    old, new = str(source.resolve()), str(dest.resolve())
    with contextlib.closing(sqlite3.connect(dest / "mlflow.db")) as db, db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in db.execute(f"PRAGMA table_info('{table}')").fetchall():
                name, kind = column[1], column[2].upper()
                if kind.startswith(("VARCHAR", "TEXT")):
                    db.execute(
                        f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) '
                        f'WHERE "{name}" LIKE ?',
                        (old, new, f"%{old}%"),
                    )
    if overrides:
        write_params(dest / "params.yaml", overrides, base=dest / "params.yaml")
    return dest
