"""Typed, strict settings loaded from params.yaml.

Every section is a pydantic model that forbids unknown keys and refuses type coercion, so a
typo or a wrong type is a one-line error naming the key instead of a silently ignored value.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from rlhf.models.config import DPO, PPO, PRESETS, Architecture, Group, Parallel, Training
from rlhf.models.config import Config as Section
from rlhf.models.errors import InputError

# "package.module:object": code params.yaml names for a run to load (rlhf.core.pipeline.plugins)
PLUGIN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class UserError(InputError):
    """An error in the user's input or config: printed as one line, never a traceback."""


class Paths(Section):
    data: str = "data"  # raw inputs, tracked by data.dvc
    artifacts: str = "artifacts"  # one folder per stage, the DVC outs


class DemoData(Section):
    """Sizes of the generated demo task (rlhf.demo), and the code that writes it (`rlhf data`)."""

    generator: str | None = Field(None, pattern=PLUGIN)

    corpus_docs: int = 6000  # pretraining documents (1-3 review sentences each)
    sft_examples: int = 3000  # demonstrations of mixed quality
    comparisons: int = 8000  # annotated pairs
    train_prompts: int = 1024  # PPO prompts
    eval_prompts: int = 96  # held-out prompts, combinations never seen in training
    second_opinion_fraction: float = 0.1  # comparisons judged again by another annotator


class Ingest(Section):
    max_chars: int = 2000  # longest accepted prompt/response field
    max_doc_chars: int = 100_000  # longest accepted corpus document
    max_quarantine_fraction: float = 0.2  # gate: more than this rejected fails the stage


class Pretrain(Training):
    # A local Hugging Face checkpoint directory (config + weights + tokenizer); when set, the
    # pipeline starts from it and trains no tokenizer or base model. Never a hub name.
    init_checkpoint: str | None = None
    # tokenizer: byte-level BPE with BOS, EOS and PAD; chat_tokens adds <|system|>, <|user|>,
    # <|assistant|> and makes the chat template use them instead of "Human:" / "Assistant:"
    vocab_size: int = 512
    chat_tokens: bool = False
    model: str = "tiny"  # one of presets
    presets: dict[str, Architecture] = {}  # added to (or replacing) the built-in PRESETS
    block_size: int = 64  # tokens per packed training block
    eval_fraction: float = 0.05  # held-out slice of the corpus (whole documents)
    batch_size: int = 32
    lr: float = 0.003
    warmup_steps: int = 50

    @model_validator(mode="after")
    def _known_model(self):
        known = {**PRESETS, **self.presets}
        if self.model not in known:
            raise ValueError(f"model {self.model!r} is not a preset ({', '.join(known)})")
        return self

    @property
    def architecture(self) -> Architecture:
        return {**PRESETS, **self.presets}[self.model]


class SFT(Training):
    steps: int = 400
    # tokens; the context is cut from the left, a reply never: too short a length cuts off the
    # start of instructions (docs/training.md counts what each length loses on the demo)
    max_length: int = 128
    packing: bool = False  # several examples per row (attention is not reset between them)
    heldout_fraction: float = 0.05


class Feedback(Section):
    """Importing human feedback (rlhf.core.feedback) into the dataset under data/feedback."""

    # Splits by hash of the prompt, so a prompt never lands in two: test (the reward model's
    # held-out pairs), judge (what only the evaluation reward models train on), train the rest
    test_fraction: float = Field(0.15, ge=0, lt=1)
    judge_fraction: float = Field(0.2, ge=0, lt=1)
    max_quarantine_fraction: float = 0.2  # gate: an import rejecting more than this fails whole
    # Safety bounds, far above any real record: what fits a model is the training stages'
    # decision (they drop and count what exceeds their max_length), not the importer's.
    max_chars: int = Field(1_000_000, gt=0)  # longest prompt/chosen/rejected
    max_record_bytes: int = Field(8 << 20, gt=0)  # one line, row or array element
    max_depth: int = Field(64, gt=0)  # nesting of lists and objects in one record
    max_file_bytes: int = Field(2 << 30, gt=0)  # one file, decompressed (gzip bombs stop here)
    max_document_bytes: int = Field(256 << 20, gt=0)  # a .json array, read whole
    rating_range: list[float] = Field([0.0, 10.0], min_length=2, max_length=2)  # scale of `rating`
    max_margin: float = Field(1e6, gt=0)  # largest |margin| of a vote

    @model_validator(mode="after")
    def _ordered_range(self):
        if self.test_fraction + self.judge_fraction >= 1:
            raise ValueError("test_fraction + judge_fraction must leave pairs to train on")
        low, high = self.rating_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(
                f"rating_range must be two finite numbers, low < high (got {low}, {high})"
            )
        return self


class Reward(Training):
    batch_size: int = 64  # pairs per step (smaller batches make accuracy swing with the seed)
    lr: float = 0.0003
    max_length: int = 128
    margin: bool = True  # subtract the feedback's `margin` (where given) inside the BT loss
    center_coef: float = 0.0  # weight of mean((r_chosen + r_rejected)^2): keeps scores near 0
    calibration_buckets: int = 5  # held-out accuracy by quantile of |score gap|
    # The score's mean and std on the SFT model's own samples (saved with the model) are
    # what PPO normalises rewards by; sample them like PPO will.
    reference_samples: int = 128
    reference_max_new_tokens: int = 24
    reference_temperature: float = 1.0


class Judge(Training):
    """The independent judge (stage `judge`): evaluation reward models trained like the reward
    model but on the feedback's judge split only, which the reward model PPO optimises never
    sees. PPO's snapshot choice and promotion are decided by them, never by that reward model."""

    # each member from its own seed on its own bootstrap resample of the judge pairs; where
    # they disagree about a promotion, it is held
    members: int = Field(2, ge=1)
    steps: int = 200
    batch_size: int = 64
    lr: float = 0.0003
    max_length: int = 128  # prompt + response tokens, as reward.max_length
    margin: bool = True
    # The KL budget (nats per response to the reference): no snapshot beyond it is chosen and
    # no policy beyond it promoted. On the demo, gold fell beyond about 4 while the reward
    # model's score kept rising (docs/demo.md).
    kl_budget: float = Field(4.0, gt=0)
    # PPO's policy: `best` is the snapshot the judge scores highest within the KL budget (its
    # mean score on these training prompts, sampled like PPO); `last` the final iteration
    select: Literal["best", "last"] = "best"
    selection_prompts: int = Field(64, ge=1)
    selection_samples: int = Field(2, ge=1)  # samples per prompt (paired seeds)


class Policy(Section):
    """Stage `policy`: how the aligned policy is trained from the SFT model; each method
    reads its own section (ppo, group) and all share the judge's snapshot choice."""

    # ppo: PPO with a value head (section ppo); grpo / rloo: k responses per prompt and a group
    # baseline, no critic (section group; grpo: mean/std of the group, KL as a loss term;
    # rloo: leave-one-out mean, KL in the reward); dpo: DPO or IPO on the feedback's training
    # pairs, no reward model in the loop (section dpo)
    method: Literal["ppo", "grpo", "rloo", "dpo"] = "ppo"


# what `rlhf compare` can put side by side: the policy methods, and best-of-n sampling
Compared = Literal["ppo", "grpo", "rloo", "dpo", "best_of_n"]


class Compare(Section):
    """`rlhf compare`: each method trained from the same SFT and reward model, all evaluated
    on the same held-out prompts and seeds (rlhf.flows.compare)."""

    methods: list[Compared] = Field(list(get_args(Compared)), min_length=1)
    # best_of_n: responses sampled from the SFT model per prompt, the reward model's best kept
    best_of_n: int = Field(4, ge=2)

    @model_validator(mode="after")
    def _each_once(self):
        if len(set(self.methods)) < len(self.methods):
            raise ValueError(f"methods names a method twice: {self.methods}")
        return self


class Evaluate(Section):
    samples_per_prompt: int = 4
    temperature: float = 1.0  # greedy decoding of small models loops; sample at fixed seeds
    max_new_tokens: int = 24
    bootstrap_resamples: int = 2000  # for the 95% intervals of win rates (prompts resampled)
    # A judge independent of the reward model, "module:function" (rlhf.core.evaluation.judges):
    # the demo's gold judge; empty on real data, where only the reward model judges.
    reference_judge: str | None = Field(None, pattern=PLUGIN)


class Promotion(Section):
    """When the evaluated policy takes the `champion` alias from the current champion."""

    # who decides: the evaluation reward models (`judge` section), or people labelling
    # champion-vs-challenger pairs side by side (the decision waits for their labels). The
    # reward model PPO optimised is reported next to it and may only hold a promotion back.
    judge: Literal["reward_models", "human"] = "reward_models"
    # lower end of the 95% interval of the judge's win rate against the champion (or, with no
    # champion yet, the reference)
    min_win_rate_lower: float = 0.5
    # the human gate: pairs exported per decision (one per held-out prompt first), and labels
    # needed before it decides
    human_pairs: int = Field(96, ge=1)
    human_min_labels: int = Field(64, ge=1)


class LabelStudio(Section):
    """A Label Studio server the loop pushes its batches to and pulls annotations from."""

    url: str = Field(pattern=r"^https?://")  # e.g. http://127.0.0.1:8080
    # the API token (a personal access token or a legacy token) is read from this variable,
    # else from token_file (relative to the folder that holds params.yaml); never from here
    token_env: str = "LABEL_STUDIO_TOKEN"
    token_file: str | None = None
    project: str = Field("rlhf pairwise comparisons", min_length=3)  # created or reused
    timeout_seconds: float = Field(30, gt=0)


class Loop(Section):
    """The feedback loop (rlhf.flows.loop): new labels in, a retrained policy out, the next
    batch to label written. Folders are relative to the folder that holds params.yaml."""

    inbox: str = "inbox"  # annotation exports to import; each file is one batch
    outbox: str = "labeling"  # batches to label: Label Studio tasks + JSONL, one folder each
    # retrain (reward model, PPO, evaluation, promotion) once this many new comparisons
    # have arrived since the reward model was last trained
    min_new_comparisons: int = 400
    collect_prompts: int = 256  # prompts per batch to label (two champion responses each)
    collect_temperature: float = 1.0
    # "module:function" that labels each batch it writes (tasks, seed) -> a Label Studio export
    # dropped in the inbox: the demo's simulated annotators; empty when people label
    annotators: str | None = Field(None, pattern=PLUGIN)
    # a Label Studio server: each batch is pushed there and its annotations pulled back
    # into the inbox (the inbox keeps working for exports dropped by hand)
    label_studio: LabelStudio | None = None
    # schedule of the `feedback-loop` deployment: cron (if set) or an interval
    cron: str | None = None
    interval_seconds: int = 3600


class Tracking(Section):
    # Resolved against the folder that holds params.yaml; MLFLOW_TRACKING_URI overrides.
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "rlhf"
    registry_prefix: str = "rlhf"  # models register as <prefix>-base, -sft, -reward, -policy


class Settings(Section):
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # how long a run waits for another holding the project or the feedback dataset
    lock_timeout_seconds: float = Field(3600, ge=0)
    parallel: Parallel = Parallel()
    paths: Paths = Paths()
    demo: DemoData = DemoData()
    ingest: Ingest = Ingest()
    pretrain: Pretrain = Pretrain()
    sft: SFT = SFT()
    feedback: Feedback = Feedback()
    reward: Reward = Reward()
    policy: Policy = Policy()
    ppo: PPO = PPO()
    group: Group = Group()
    dpo: DPO = DPO()
    judge: Judge = Judge()
    evaluate: Evaluate = Evaluate()
    promotion: Promotion = Promotion()
    loop: Loop = Loop()
    compare: Compare = Compare()
    mlflow: Tracking = Tracking()

    # Set by load_settings, not by the file: where relative paths are anchored.
    root: str = "."

    def path(self, *parts: str) -> Path:
        return Path(self.root, *parts)

    @property
    def data_dir(self) -> Path:
        return self.path(self.paths.data)

    @property
    def feedback_dir(self) -> Path:
        """The versioned feedback dataset that `rlhf feedback import` appends to."""
        return self.data_dir / "feedback"

    def stage_dir(self, stage: str) -> Path:
        return self.path(self.paths.artifacts, stage)

    def section_digest(self, *sections: str) -> str:
        """Digest of the named sections' values: part of a stage's cache key."""
        blob = json.dumps({s: _dump(getattr(self, s)) for s in sections}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _dump(value: object) -> object:
    return value.model_dump() if isinstance(value, BaseModel) else value


def load_settings(path: str | Path = "params.yaml") -> Settings:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: no such params file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder, not a params file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text file (byte {e.start} is not UTF-8)") from None
    except OSError as e:
        raise UserError(f"{path}: unreadable ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    if "root" in raw:
        raise UserError(f"{path}: root: unknown key")
    try:
        return Settings(**raw, root=str(path.resolve().parent))
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        got = "" if err["type"] == "extra_forbidden" else f" (got {err.get('input')!r})"
        more = f" [+{len(e.errors()) - 1} more]" if len(e.errors()) > 1 else ""
        raise UserError(f"{path}: {key}: {msg}{got}{more}") from None
