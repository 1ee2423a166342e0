"""`rlhf init DIR`: a project of one's own, from a team's files.

  layout     DIR/data/{corpus,sft,prompts/train,prompts/eval}/ with the files given copied in,
             the feedback files imported into DIR/data/feedback (the versioned dataset)
  derive     what was not given, from the feedback by split (rlhf.core.feedback.dataset.Splits):
             SFT examples and policy prompts from the train split's chosen dialogues,
             evaluation prompts from the test split, a pretraining corpus from the train
             split's dialogues; the judge split and the test split's answers feed nothing
  params     DIR/params.yaml with only what differs from the defaults: the model (a preset, or
             a local checkpoint), and with --minutes each stage's share of the budget
  files      .gitignore, dvc.yaml (the stage table's), README.md with the next steps
Nothing is written where a params.yaml already is; a failed init removes what it added.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from rlhf.core.feedback.batches import import_batch
from rlhf.core.feedback.pairs import read_pairs
from rlhf.core.io import write_jsonl, write_text
from rlhf.core.settings import METHODS, PRESETS, Policy, Settings, UserError, load_settings
from rlhf.core.tracking.dvc_source import in_repository
from rlhf.flows.dvc_yaml import render
from rlhf.models.chat import conversation, dialogue_text
from rlhf.models.tokenizer import train_tokenizer

# The share of --minutes each training stage may take (its max_minutes); what is left pays for
# ingest, feedback, the reward model's reference samples, the judge's choice of snapshot and
# the evaluation. A local checkpoint is not pretrained: its share goes to the others.
SHARES = {"pretrain": 0.22, "sft": 0.14, "reward": 0.12, "judge": 0.1, "policy": 0.2}

VOCAB = 4096  # a preset's vocabulary on real text
MAX_POSITIONS = 1024  # the most positions init gives a preset
DERIVED_CORPUS = "corpus/from-feedback.jsonl"

GITIGNORE = """\
# run outputs: stage outputs (DVC outs), the MLflow store, servers, locks
/artifacts/
/mlflow.db
/mlruns/
/mlartifacts/
/.prefect/
/.servers/
/.rlhf.lock
/dvc_plots/
"""


@dataclass
class Request:
    """What `rlhf init` was asked for."""

    folder: Path
    feedback: list[Path] = field(default_factory=list)
    sft: list[Path] = field(default_factory=list)
    corpus: list[Path] = field(default_factory=list)
    prompts: list[Path] = field(default_factory=list)
    eval_prompts: list[Path] = field(default_factory=list)
    base: Path | None = None  # a local Hugging Face checkpoint
    preset: str | None = None  # a built-in size, trained from scratch
    minutes: float | None = None  # the whole run's wall-clock budget


def init_project(req: Request) -> list[str]:
    """Write the project; the lines that tell the user what was made and what comes next."""
    check_request(req)
    before = set(os.listdir(req.folder)) if req.folder.is_dir() else None
    try:
        return scaffold(req)
    except BaseException:  # nothing half-made is left behind: what init added goes
        if before is None:
            shutil.rmtree(req.folder, ignore_errors=True)
        else:
            for name in set(os.listdir(req.folder)) - before:
                path = req.folder / name
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        raise


def check_request(req: Request) -> None:
    if (req.folder / "params.yaml").exists():
        raise UserError(f"{req.folder / 'params.yaml'}: exists; init makes new projects only")
    if req.base and req.preset:
        raise UserError("init: --base (a checkpoint) and --preset (from scratch): one or the other")
    if req.preset and req.preset not in PRESETS:
        raise UserError(f"init: --preset {req.preset}: not one of {', '.join(PRESETS)}")
    if req.base and not (req.base / "config.json").is_file():
        raise UserError(f"{req.base}: not a Hugging Face checkpoint folder (no config.json)")
    for path in [*req.feedback, *req.sft, *req.corpus, *req.prompts, *req.eval_prompts]:
        if not path.is_file():
            raise UserError(f"{path}: no such file")


def scaffold(req: Request) -> list[str]:
    root = req.folder
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / "params.yaml", params_text(req))
    settings = load_settings(root / "params.yaml")
    data = settings.data_dir
    for sub in ("corpus", "sft", "prompts/train", "prompts/eval"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    copy_into(req.sft, data / "sft")
    copy_into(req.corpus, data / "corpus")
    copy_into(req.prompts, data / "prompts/train")
    copy_into(req.eval_prompts, data / "prompts/eval")
    lines = []
    if req.feedback:
        summary = import_batch(req.feedback, "auto", settings.feedback_dir, settings)
        lines.append(
            f"feedback: {summary['total']} rows, {summary['imported']} imported, "
            f"{summary['quarantined']} quarantined, {summary['dataset_pairs']} pairs "
            f"({summary['dataset_ties']} ties) in {settings.feedback_dir}"
        )
        lines += derive(req, settings)
    if req.preset and req.feedback and not req.corpus:  # sized on the corpus it derived
        fitted = fit_preset(req.preset, settings)
        write_text(root / "params.yaml", params_text(req, fitted))
        settings = load_settings(root / "params.yaml")
        arch = fitted["presets"][req.preset]
        lines.append(
            f"model: the {req.preset} preset with a {fitted['vocab_size']}-token vocabulary and "
            f"{arch['max_positions']} positions (3 in 4 of the train pairs fit)"
        )
    write_text(root / ".gitignore", GITIGNORE)
    write_text(root / "dvc.yaml", render(settings))
    write_text(root / "README.md", readme(req, settings))
    return [f"project written to {root}", *lines, *next_steps(root)]


def copy_into(files: list[Path], folder: Path) -> None:
    for path in files:
        shutil.copy2(path, folder / path.name)


def params_text(req: Request, fitted: dict | None = None) -> str:
    """params.yaml: the model and the budget, nothing that is a default; fitted: pretrain
    settings that size a preset to the data (fit_preset)."""
    params: dict = {}
    if req.base:
        params["pretrain"] = {"init_checkpoint": str(req.base.resolve())}
    elif req.preset:
        params["pretrain"] = {"model": req.preset, **(fitted or {})}
    if req.minutes:
        for stage, minutes in stage_minutes(req).items():
            section = METHODS[Policy().method].section if stage == "policy" else stage
            params.setdefault(section, {})["max_minutes"] = minutes
    header = (
        "# This project's settings: each key here differs from its default; `rlhf params`\n"
        "# prints every key with its meaning, `rlhf params --defaults` the defaults.\n"
    )
    return header + (yaml.safe_dump(params, sort_keys=False) if params else "")


def fit_preset(preset: str, settings: Settings) -> dict:
    """A preset sized to the data: a vocabulary of VOCAB tokens (the default suits the demo's
    small alphabet of words, not real text) and positions for 3 in 4 of the train pairs'
    prompt and longer response (rotary positions cost no parameters; attention's cost grows
    with them, hence the cap)."""
    docs = [json.loads(line)["text"] for line in corpus_lines(settings)]
    tok = train_tokenizer(docs, VOCAB, settings.pretrain.chat_tokens)
    pairs = read_pairs(settings.feedback_dir / "pairs.parquet")
    train = pairs[pairs["split"] == "train"]
    prompt, chosen, rejected = (
        [len(ids) for ids in tok(train[c].tolist())["input_ids"]]
        for c in ("prompt", "chosen", "rejected")
    )
    widths = sorted(q + max(a, b) + 2 for q, a, b in zip(prompt, chosen, rejected))
    arch = PRESETS[preset]
    wanted = -(-widths[3 * len(widths) // 4] // 128) * 128  # rounded up to 128
    positions = min(max(wanted, arch.max_positions), MAX_POSITIONS)
    return {
        "vocab_size": max(VOCAB, settings.pretrain.vocab_size),
        "presets": {preset: {**arch.model_dump(), "max_positions": positions}},
    }


def corpus_lines(settings: Settings) -> list[str]:
    """The derived corpus' records (a preset is fitted only to a corpus init derived)."""
    return (settings.data_dir / DERIVED_CORPUS).read_text(encoding="utf-8").splitlines()


def stage_minutes(req: Request) -> dict[str, float]:
    """Each training stage's max_minutes: its share of --minutes (the judge's split over its
    members, each of which is timed on its own)."""
    shares = dict(SHARES)
    if req.base:  # a checkpoint is not pretrained: its share goes to the rest
        freed = shares.pop("pretrain")
        shares = {k: v * (1 + freed / sum(shares.values())) for k, v in shares.items()}
    minutes = {k: round(req.minutes * v, 2) for k, v in shares.items()} if req.minutes else {}
    if "judge" in minutes:
        minutes["judge"] = round(minutes["judge"] / 2, 2)  # judge.members' default
    return minutes


def derive(req: Request, settings: Settings) -> list[str]:
    """The datasets not given, from the feedback by split; a line per dataset written."""
    pairs = read_pairs(settings.feedback_dir / "pairs.parquet")
    train, test = pairs[pairs["split"] == "train"], pairs[pairs["split"] == "test"]
    data, lines = settings.data_dir, []
    dialogues = train[["prompt", "chosen"]].drop_duplicates()
    made = {
        "sft/from-feedback.jsonl": (
            not req.sft,
            [{"prompt": p, "response": c} for p, c in dialogues.itertuples(index=False)],
            "SFT examples: the train split's chosen responses",
        ),
        "prompts/train/from-feedback.jsonl": (
            not req.prompts,
            [{"prompt": p} for p in unique(train["prompt"])],
            "policy prompts: the train split's",
        ),
        "prompts/eval/from-feedback.jsonl": (
            not req.eval_prompts,
            [{"prompt": p} for p in unique(test["prompt"])],
            "evaluation prompts: the test split's",
        ),
        DERIVED_CORPUS: (
            not req.corpus,
            [{"text": corpus_text(p, c)} for p, c in dialogues.itertuples(index=False)],
            "pretraining corpus: the train split's chosen dialogues",
        ),
    }
    for name, (wanted, rows, what) in made.items():
        if not wanted:
            continue
        if not rows:
            raise UserError(
                f"{settings.feedback_dir}: no {what.split(':')[0]} to derive (the split is "
                "empty: import more feedback, or give the file)"
            )
        write_jsonl(data / name, rows)
        lines.append(f"{what}: {len(rows)} rows in {data / name}")
    return lines


def unique(prompts: pd.Series) -> list[str]:
    return list(dict.fromkeys(prompts.tolist()))


def corpus_text(prompt: str, response: str) -> str:
    return dialogue_text([*conversation(prompt), {"role": "assistant", "content": response}])


def readme(req: Request, settings: Settings) -> str:
    model = (
        f"the local checkpoint {req.base}"
        if req.base
        else f"the `{settings.pretrain.model}` preset, trained from scratch"
    )
    budget = f" within about {req.minutes:g} minutes" if req.minutes else ""
    return f"""# {req.folder.name}

An RLHF project: {model}, aligned on this folder's data{budget}.

    rlhf check          # settings, data, token lengths, leakage, time and memory per stage
    rlhf run            # the whole pipeline (it runs the same checks first)
    rlhf feedback import FILE...   # more feedback: a new batch of data/feedback

- `params.yaml` holds what differs from the defaults; `rlhf params` prints every key.
- `data/` holds the inputs: `corpus/`, `sft/`, `prompts/train/`, `prompts/eval/` and the
  feedback dataset `feedback/`. Stage outputs go to `artifacts/`, runs and models to the
  MLflow store `mlflow.db` (`mlflow ui --backend-store-uri sqlite:///mlflow.db`).
- With git (`git init`, a commit), every MLflow run records the commit it ran at; with DVC as
  well (`dvc init`, `dvc add data`), `dvc repro` reruns exactly the stages whose data, params
  or code changed. Without them the pipeline runs all the same.
"""


def next_steps(root: Path) -> list[str]:
    git = (
        shutil.which("git")
        and subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--git-dir"], capture_output=True
        ).returncode
        == 0
    )
    lines = [
        "git: a repository, runs record their commit"
        if git
        else "git: not a repository: runs record no commit (`git init` for lineage)",
        "dvc: initialised, `dvc repro` reruns what changed"
        if in_repository(root)
        else "dvc: not initialised (`git init && dvc init && dvc add data` for `dvc repro`)",
        f"next: cd {root} && rlhf check && rlhf run",
    ]
    return lines
