"""The next batch to label: prompts from the pool, two responses each from the champion.

    <outbox>/<batch>/tasks.labelstudio.json   Label Studio import (a pairwise project)
    <outbox>/<batch>/labeling_config.xml      that project's labelling interface
    <outbox>/<batch>/tasks.jsonl              the same pairs for any other tool
    <outbox>/<batch>/batch.json               champion version, seeds, counts
    <outbox>/state.json                       which batch is out for labelling

The pool is the validated PPO prompts (artifacts/ingest/prompts_train.parquet): never the
evaluation prompts, which would let the reward model train on what promotion is judged on.
Prompts asked least often so far go first. One batch is out at a time: the next is written
after labels have come back through the inbox, so batches do not pile up unanswered.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd
import torch

from rlhf.core.io import atomic_dir, read_json, write_json, write_jsonl
from rlhf.core.settings import Settings
from rlhf.core.tracking.registry import CHAMPION, alias_version, load_registered_lm
from rlhf.core.tracking.store import open_store
from rlhf.models.generation import decode_responses, sample
from rlhf.models.lm import start_run
from rlhf.models.tokenizer import load_tokenizer

STATE = "state.json"
TASKS, LABEL_STUDIO_TASKS = "tasks.jsonl", "tasks.labelstudio.json"
# Label Studio's pairwise template: the annotator picks the left or the right answer.
LABEL_CONFIG = """<View>
  <Header value="$prompt"/>
  <Pairwise name="comparison" toName="answer1,answer2" selectionStyle="background: #cde"/>
  <Text name="answer1" value="$answer1"/>
  <Text name="answer2" value="$answer2"/>
</View>
"""


def outbox_dir(settings: Settings) -> Path:
    return settings.path(settings.loop.outbox)


def read_state(outbox: Path) -> dict:
    path = outbox / STATE
    return read_json(path) if path.exists() else {"batches": 0, "waiting_for": None}


def labels_arrived(settings: Settings) -> None:
    """Called when an import succeeded: the batch out for labelling has been answered."""
    outbox = outbox_dir(settings)
    state = read_state(outbox)
    if state["waiting_for"] is not None:
        write_json(outbox / STATE, {**state, "waiting_for": None})


def asked_so_far(outbox: Path) -> Counter:
    asked: Counter = Counter()
    for tasks in outbox.glob(f"batch-*/{TASKS}"):
        with tasks.open(encoding="utf-8") as f:
            asked.update(json.loads(line)["prompt"] for line in f)
    return asked


def pick_prompts(pool: list[str], asked: Counter, n: int, rng: random.Random) -> list[str]:
    """The n prompts asked least often so far, ties broken at random."""
    order = sorted(set(pool), key=lambda p: (asked[p], rng.random()))
    return order[:n]


def policy_name(settings: Settings) -> str:
    return f"{settings.mlflow.registry_prefix}-policy"


def champion_version(settings: Settings) -> str | None:
    """The policy version holding `champion` in this project's registry, if any."""
    open_store(settings)
    return alias_version(policy_name(settings), CHAMPION)


def champion_responses(
    settings: Settings, version: str, prompts: list[str], seeds: tuple[int, int]
) -> tuple[list[str], list[str]]:
    """Two sampled responses per prompt from that policy version, one per seed."""
    device = start_run(settings.seed, settings.device)
    tok = load_tokenizer(str(settings.stage_dir("sft") / "model"))
    cfg = settings.loop
    with tempfile.TemporaryDirectory() as tmp:
        model = load_registered_lm(policy_name(settings), version, tok, Path(tmp))
        model.to(device).eval()  # type: ignore[arg-type]
        answers = []
        for seed in seeds:
            torch.manual_seed(seed)
            # as long as the responses evaluation judges, so labels cover what gets promoted
            s = sample(
                model,
                tok,
                prompts,
                settings.evaluate.max_new_tokens,
                cfg.collect_temperature,
                device,
            )
            answers.append(decode_responses(tok, s))
    return answers[0], answers[1]


def write_tasks(folder: Path, batch: str, rows: list[dict]) -> None:
    """Pairs to label (id, prompt, response_a, response_b) as a Label Studio import with its
    labelling interface, and as JSONL for any other tool."""
    write_jsonl(folder / TASKS, rows)
    write_json(
        folder / LABEL_STUDIO_TASKS,
        [
            {
                "data": {
                    "id": r["id"],
                    "batch": batch,
                    "prompt": r["prompt"],
                    "answer1": r["response_a"],
                    "answer2": r["response_b"],
                }
            }
            for r in rows
        ],
    )
    (folder / "labeling_config.xml").write_text(LABEL_CONFIG, encoding="utf-8")


def collect_batch(settings: Settings) -> dict | None:
    """Write the next batch to label; None when one is still out or there is no champion."""
    outbox = outbox_dir(settings)
    state = read_state(outbox)
    if state["waiting_for"] is not None:
        return None
    version = champion_version(settings)
    if version is None:
        return None
    number = state["batches"] + 1
    rng = random.Random(settings.seed * 1_000_003 + number)
    pool = pd.read_parquet(settings.stage_dir("ingest") / "prompts_train.parquet")[
        "prompt"
    ].tolist()
    prompts = pick_prompts(pool, asked_so_far(outbox), settings.loop.collect_prompts, rng)
    seeds = (rng.randrange(2**31), rng.randrange(2**31))
    first, second = champion_responses(settings, version, prompts, seeds)
    batch = f"batch-{number:04d}"
    rows = [
        {"id": f"{batch}-{i:05d}", "prompt": p, "response_a": a, "response_b": b}
        for i, (p, a, b) in enumerate(zip(prompts, first, second))
        if a != b
    ]
    with atomic_dir(outbox / batch) as tmp:
        write_tasks(tmp, batch, rows)
        info = {
            "batch": batch,
            "champion_version": version,
            "seeds": list(seeds),
            "prompts": len(prompts),
            "tasks": len(rows),
            "identical_pairs_dropped": len(prompts) - len(rows),
            "folder": str(outbox / batch),
        }
        write_json(tmp / "batch.json", info)
    write_json(outbox / STATE, {"batches": number, "waiting_for": batch})
    return info
