"""The settings schema: every params.yaml key, its type, default, bounds and meaning, in one place.

Every section is a strict pydantic model (rlhf.models.config.Config): an unknown key, a wrong type,
a value out of bounds, NaN or infinity is a one-line error naming the key. Defaults live here and
nowhere else; a project's params.yaml names only what it changes. `rlhf params --defaults` prints
this schema as a commented params.yaml, and docs/settings.md is generated from it
(rlhf.core.pipeline.params).

The policy methods are declared once, in METHODS: their settings sections are read from it, as are
the policy stage, its cache key, `rlhf compare`, the CLI's help, the docs and dvc.yaml.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import reprlib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from rlhf.core.io import regular_file
from rlhf.models.config import (
    DPO,
    PPO,
    PRESETS,
    Adapter,
    Architecture,
    Config,
    Group,
    Lora,
    Parallel,
    Training,
    default,
)
from rlhf.models.errors import InputError

# "package.module:object": code params.yaml names for a run to load (rlhf.core.pipeline.plugins)
PLUGIN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"

Section = Config
C = TypeVar("C", bound=Config)


class UserError(InputError):
    """An error in the user's input or config: printed as one line, never a traceback."""


# -- YAML, bounded ------------------------------------------------------------------------------
# A settings file is small: these bounds are far above any real one, and keep a crafted one
# (aliases that expand exponentially, nesting that overflows the parser) from hanging a run.
YAML_MAX_BYTES = 1 << 20
YAML_MAX_NODES = 100_000  # values once every alias is expanded
YAML_MAX_DEPTH = 64
SHOWN = reprlib.Repr()  # a value in an error line: its start, never all of it
SHOWN.maxstring = SHOWN.maxother = 80
SHOWN.maxlevel, SHOWN.maxdict, SHOWN.maxlist = 2, 4, 4


def read_yaml(path: Path, what: str = "file") -> Any:
    """A YAML file's content, within the bounds above; UserError (one line, that never quotes
    the content) when it is not readable, too large, too deep or expands too far."""
    try:
        if path.exists() and not path.is_dir():
            regular_file(path)  # a FIFO or a device would block or never end
        with path.open("rb") as f:
            data = f.read(YAML_MAX_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: a folder, not a {what}") from None
    except OSError as e:
        raise UserError(f"{path}: unreadable ({e.strerror})") from None
    return parse_yaml(data, path, what)


def parse_yaml(data: bytes, path: Path | str, what: str = "file") -> Any:
    """YAML text's content within the bounds above (path names it in errors)."""
    if len(data) > YAML_MAX_BYTES:
        raise UserError(f"{path}: larger than {YAML_MAX_BYTES} bytes: not a {what}")
    try:
        loader = yaml.SafeLoader(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a text file (byte {e.start} is not UTF-8)") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_yaml_size(path, node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {str(e).splitlines()[0][:200]}") from None
    except RecursionError:
        raise UserError(f"{path}: nested deeper than {YAML_MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def check_yaml_size(path: Path | str, root: yaml.Node) -> None:
    """The document's depth and its size with every alias expanded, counted without expanding
    it: an alias is the same node object, whose expanded size is computed once."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if depth > YAML_MAX_DEPTH:
            raise UserError(f"{path}: nested deeper than {YAML_MAX_DEPTH} levels")
        if id(node) in sizes:
            continue
        children = yaml_children(node)
        if children_done or not children:
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > YAML_MAX_NODES:
                raise UserError(
                    f"{path}: more than {YAML_MAX_NODES} values once its aliases are expanded"
                )
            continue
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


def yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


# -- the policy methods -----------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A policy method, declared once."""

    name: str  # policy.method's value, compare.methods' entry, the registered version's tag
    summary: str  # one line: the CLI's help and the docs
    section: str  # its params.yaml section (methods may share one: grpo and rloo)
    config: type[Config]  # that section's class
    online: bool  # samples from the policy as it trains (else learns from fixed pairs)
    trainer: str  # "module:function", called as function(ctx, method) -> the stage's metrics
    needs: tuple[str, ...] = ()  # inputs it reads besides those of every method

    # an online method scores its samples with the reward functions beside the reward model
    @property
    def params(self) -> tuple[str, ...]:
        """The params.yaml sections it reads besides its own."""
        return ("rewards",) if self.online else ()

    @property
    def plugins(self) -> tuple[str, ...]:
        """The settings fields naming code it loads (as Stage.plugins)."""
        return ("rewards.functions",) if self.online else ()


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "ppo",
            "PPO with a value head and an adaptive KL penalty",
            "ppo",
            PPO,
            online=True,
            trainer="rlhf.tasks.policy.ppo:run",
        ),
        Method(
            "grpo",
            "k responses per prompt, the group's mean and std as baseline, KL as a loss term",
            "group",
            Group,
            online=True,
            trainer="rlhf.tasks.policy.group:run",
        ),
        Method(
            "rloo",
            "k responses per prompt, the leave-one-out mean as baseline, KL in the reward",
            "group",
            Group,
            online=True,
            trainer="rlhf.tasks.policy.group:run",
        ),
        Method(
            "dpo",
            "DPO or IPO on the feedback's training pairs, offline, no reward model in the loop",
            "dpo",
            DPO,
            online=False,
            trainer="rlhf.tasks.policy.dpo:run",
            needs=("feedback/pairs.parquet",),
        ),
    )
}
BEST_OF_N = "best_of_n"  # what `rlhf compare` adds to the methods: no training, n samples


def method_sections() -> dict[str, type[Config]]:
    """Each method's params.yaml section and its class, in the table's order."""
    sections: dict[str, type[Config]] = {}
    for m in METHODS.values():
        if sections.setdefault(m.section, m.config) is not m.config:
            raise TypeError(f"methods sharing section {m.section!r} must share its class")
    return sections


# -- the sections -------------------------------------------------------------------------------


class Paths(Section):
    """Where the project's folders are, relative to the folder of params.yaml."""

    data: str = "data"
    """raw inputs, tracked by data.dvc"""
    artifacts: str = "artifacts"
    """one folder per stage, the DVC outs"""


class DemoData(Section):
    """The generated demo task (rlhf.demo), written by `rlhf data`."""

    generator: str | None = Field(None, pattern=PLUGIN)
    """"module:function" that writes the demo's raw inputs into paths.data (null: no demo)"""
    corpus_docs: int = Field(6000, gt=0)
    """pretraining documents (1-3 review sentences each)"""
    sft_examples: int = Field(3000, gt=0)
    """demonstrations of mixed quality"""
    comparisons: int = Field(8000, gt=0)
    """annotated pairs"""
    train_prompts: int = Field(1024, gt=0)
    """prompts the policy trains on"""
    eval_prompts: int = Field(96, gt=0)
    """held-out prompts, combinations never seen in training"""
    second_opinion_fraction: float = Field(0.1, ge=0, le=1)
    """share of comparisons judged again by another annotator"""


class Ingest(Section):
    """Stage ingest: data/ read, validated by Great Expectations, written as Parquet."""

    max_chars: int = Field(1_000_000, gt=0)
    """a guard against abuse, far above any real record: a longer prompt or response is
    quarantined (what fits a model is each stage's decision, in tokens: context_length)"""
    max_doc_chars: int = Field(10_000_000, gt=0)
    """the same guard for a corpus document"""
    max_quarantine_fraction: float = Field(0.2, ge=0, le=1)
    """gate: a dataset with more of its records rejected than this fails the stage"""
    prompt_fields: list[str] = Field(default_factory=list)
    """columns every prompt record must have besides its prompt (an `answer` a reward function
    checks): a file without one fails ingest, a record without a value is quarantined"""


class Pretrain(Training):
    """Stage pretrain: a byte-level BPE tokenizer and a Llama-style model from scratch, or a
    local checkpoint to start from."""

    init_checkpoint: str | None = None
    """a local Hugging Face checkpoint folder (config, weights, tokenizer) to start from instead:
    no tokenizer or base model is trained. Never a hub name"""
    vocab_size: int = Field(512, ge=260)
    """byte-level BPE vocabulary, with <|startoftext|>, <|endoftext|> and <pad>"""
    chat_tokens: bool = False
    """add <|system|>, <|user|>, <|assistant|> and use them in the chat template instead of
    "Human:" / "Assistant:\""""
    model: str = "tiny"
    """the architecture: a preset, built in (tiny ~0.9M parameters at 512 tokens, small ~11M,
    base ~100M, for a GPU) or from presets"""
    presets: dict[str, Architecture] = {}
    """more presets (or new sizes for the built-in ones): name -> {hidden_size, num_layers,
    num_heads, intermediate_size, max_positions}"""
    block_size: int = Field(64, gt=0)
    """tokens per packed training block (BOS doc EOS BOS doc EOS ...)"""
    eval_fraction: float = Field(0.05, gt=0, lt=1)
    """held-out documents: perplexity against the unigram baseline"""
    batch_size: int = default(Training, "batch_size", 32)
    lr: float = default(Training, "lr", 0.003)
    warmup_steps: int = default(Training, "warmup_steps", 50)

    @model_validator(mode="after")
    def _known_model(self):
        known = {**PRESETS, **self.presets}
        if self.model not in known:
            raise ValueError(f"model {self.model!r} is not a preset ({', '.join(known)})")
        return self

    @property
    def architecture(self) -> Architecture:
        return {**PRESETS, **self.presets}[self.model]


class SFT(Training, Adapter):
    """Stage sft: supervised fine-tuning on prompt/response, Alpaca or chat records."""

    steps: int = default(Training, "steps", 400)
    max_length: int | None = Field(None, gt=0)
    """tokens of an example (null: context_length); the context is cut from the left, a reply
    never (one that cannot fit is dropped), and both are counted"""
    packing: bool = False
    """join examples into rows of max_length (attention is not reset between them)"""
    heldout_fraction: float = Field(0.05, gt=0, lt=1)
    """held-out examples: response perplexity here and in the evaluation"""


class Bounds(Section):
    """What one input file may take: safety bounds no real export reaches, so a bomb or a
    runaway line is stopped before it takes the machine's memory."""

    max_file_bytes: int = Field(2 << 30, gt=0)
    """one file, decompressed (a gzip bomb stops here)"""
    max_document_bytes: int = Field(256 << 20, gt=0)
    """a .json array, which is read whole (JSONL streams)"""
    max_record_bytes: int = Field(8 << 20, gt=0)
    """one line, row or array element"""
    max_depth: int = Field(64, gt=0)
    """nesting of lists and objects inside one record"""


class Limits(Bounds):
    """What a feedback import accepts (rlhf.core.feedback.importer). Safety bounds far above any
    real record: what fits a model is the training stages' decision (they drop and count what
    exceeds their max_length), not the importer's."""

    max_chars: int = Field(1_000_000, gt=0)
    """longest prompt, chosen or rejected, in characters"""
    max_quarantine_fraction: float = Field(0.2, ge=0, le=1)
    """gate: an import rejecting more of its rows than this fails whole"""
    rating_range: list[float] = Field([0.0, 10.0], min_length=2, max_length=2)
    """[low, high]: the declared scale of per-response ratings"""
    max_margin: float = Field(1e6, gt=0)
    """largest |margin| of a vote, in the export's own units"""
    ignore_case: bool = True
    """a chosen and rejected answer that differ only in case are quarantined as no preference
    (as are those that differ only in Unicode normalisation or whitespace, always)"""

    @model_validator(mode="after")
    def _ordered_range(self):
        low, high = self.rating_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(
                f"rating_range must be two finite numbers, low < high (got {low}, {high})"
            )
        return self


class Feedback(Limits):
    """Human feedback: `rlhf feedback import` into data/feedback, and the feedback stage."""

    test_fraction: float = Field(0.15, gt=0, lt=1)
    """share of prompts (by hash: a prompt never lands in two splits) whose pairs are held out
    to measure the reward model"""
    judge_fraction: float = Field(0.2, ge=0, lt=1)
    """share of prompts whose pairs only the judge stage trains on"""

    @model_validator(mode="after")
    def _room_to_train(self):
        if self.test_fraction + self.judge_fraction >= 1:
            raise ValueError("test_fraction + judge_fraction must leave pairs to train on")
        return self


class Reward(Training, Adapter):
    """Stage reward: a scalar head on the SFT model, trained with the Bradley-Terry loss."""

    batch_size: int = default(Training, "batch_size", 64)
    lr: float = default(Training, "lr", 0.0003)
    max_length: int | None = Field(None, gt=0)
    """prompt + response tokens (null: context_length); a prompt is cut from the left to fit
    its longer response, a pair whose response cannot fit is dropped, both counted"""
    margin: bool = True
    """subtract the feedback's margin (where given) inside the Bradley-Terry loss"""
    ties: Literal["ignore", "draw"] = "ignore"
    """the feedback's tie votes: ignore them, or train on them as draws (the loss asks equal
    scores: -(log sigmoid(d) + log sigmoid(-d)) / 2); held-out accuracy never counts them"""
    center_coef: float = Field(0.0, ge=0)
    """weight of mean((r_chosen + r_rejected)^2), which keeps scores near 0"""
    calibration_buckets: int = Field(5, gt=0)
    """held-out accuracy by quantile of |score gap|"""
    reference_samples: int = Field(128, gt=0)
    """SFT samples whose score mean and std (saved with the model) the policy methods
    normalise rewards by; sampled as the policy will be"""
    reference_max_new_tokens: int = Field(24, gt=0)
    """longest of those samples, in tokens"""
    reference_temperature: float = Field(1.0, gt=0)
    """their sampling temperature"""


Backbone = Literal["sft", "pretrain"]


def sft_only() -> list[Backbone]:
    return ["sft"]


class Judge(Training, Adapter):
    """Stage judge: the independent judge. Evaluation reward models trained like the reward
    model but on the feedback's judge split only, which the reward model the policy optimises
    never sees; the policy's snapshot choice and promotion are theirs, never that model's."""

    members: int = Field(2, ge=1)
    """evaluation reward models, each from its own seed on its own bootstrap resample of the
    judge pairs; a promotion they disagree on is held"""
    backbones: list[Backbone] = Field(default_factory=sft_only, min_length=1)
    """what member i starts from, backbones[i % len]: the SFT model (sft, what the reward model
    starts from) or the pretrained base before SFT (pretrain: weights the policy never came
    from, so a member that shares less of the reward model's blind spots)"""
    steps: int = default(Training, "steps", 200)
    batch_size: int = default(Training, "batch_size", 64)
    lr: float = default(Training, "lr", 0.0003)
    max_length: int | None = Field(None, gt=0)
    """prompt + response tokens, as reward.max_length (null: context_length)"""
    margin: bool = True
    """as reward.margin"""
    ties: Literal["ignore", "draw"] = "ignore"
    """as reward.ties"""
    kl_budget: float = Field(4.0, gt=0)
    """nats per response to the reference: no snapshot beyond it is chosen and no policy beyond
    it promoted"""
    select: Literal["best", "last"] = "best"
    """best: the snapshot the judge scores highest within the KL budget (its mean score on
    training prompts, sampled like the policy); last: the final iteration"""
    selection_prompts: int = Field(64, ge=1)
    """training prompts each snapshot is scored on"""
    selection_samples: int = Field(2, ge=1)
    """samples per prompt (paired seeds)"""


class RewardFunction(Section):
    """One reward function: called as fn(prompts, completions, **fields, **args) with the
    prompts as chat messages, the completions as text and each of the prompt records' other
    columns as a list, it returns one float or None (no opinion) per completion."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    """what its metrics are called (reward_<name>)"""
    fn: str = Field(pattern=PLUGIN)
    """"module:function": a built-in (rlhf.core.rewards: exact_match, numeric_match, regex,
    length_band, repetition) or the project's own module"""
    weight: float = 1.0
    """its share of each sample's reward (negative: a penalty)"""
    args: dict[str, Any] = Field(default_factory=dict)
    """keyword arguments it is called with (a built-in's field, pattern or target)"""


class Rewards(Section):
    """What the online methods (ppo, grpo, rloo) optimise: the reward model's score,
    normalised on the SFT model's own samples, times model_weight, plus each function's score
    times its weight; a None counts 0. The evaluation reports every function beside the judge.
    With model_weight 0 there is no reward model: the feedback, reward and judge stages are
    left out, and the functions' weighted sum chooses the snapshot and decides promotion."""

    model_weight: float = Field(1.0, ge=0)
    """the reward model's share (0: no reward model, no feedback needed)"""
    functions: list[RewardFunction] = Field(default_factory=list)
    """the reward functions, each {name, fn, weight, args}"""
    timeout_seconds: float = Field(30.0, gt=0)
    """longest a function may take on one batch before the stage stops"""

    @field_validator("functions")
    @classmethod
    def _named_once(cls, functions: list[RewardFunction]) -> list[RewardFunction]:
        names = [f.name for f in functions]
        if len(set(names)) < len(names):
            raise ValueError(f"names a function twice: {names}")
        return functions

    @model_validator(mode="after")
    def _something_to_optimise(self):
        if not self.uses_reward_model and not self.functions:
            raise ValueError(
                "model_weight 0 with no functions leaves nothing to optimise: name a function "
                "(rewards.functions) or give the reward model a weight"
            )
        return self

    @property
    def uses_reward_model(self) -> bool:
        return self.model_weight > 0


class Policy(Section):
    """Stage policy: the aligned policy, trained from the SFT model by one method; every method
    ends with the judge's choice of snapshot."""

    method: str = Field("ppo", json_schema_extra={"choices": list(METHODS)})
    """the method; its settings are its own section (the method table of docs/settings.md)"""

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        if name not in METHODS:
            raise ValueError(f"{name!r} is not a method ({' | '.join(METHODS)})")
        return name


class Compare(Section):
    """`rlhf compare`: each method trained from the same SFT and reward model, all evaluated on
    the same held-out prompts and seeds (rlhf.flows.compare)."""

    methods: list[str] = Field(
        default_factory=lambda: [*METHODS, BEST_OF_N],
        min_length=1,
        json_schema_extra={"choices": [*METHODS, BEST_OF_N]},
    )
    """the methods side by side, and best_of_n (no training: the reward model's best of n SFT
    samples)"""
    best_of_n: int = Field(4, ge=2)
    """SFT samples per prompt for best_of_n"""

    @field_validator("methods")
    @classmethod
    def _known_once(cls, names: list[str]) -> list[str]:
        known = [*METHODS, BEST_OF_N]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)} ({' | '.join(known)})")
        if len(set(names)) < len(names):
            raise ValueError(f"names a method twice: {names}")
        return names


class Evaluate(Section):
    """Stage evaluate: the new policy against its reference on held-out prompts."""

    samples_per_prompt: int = Field(4, gt=0)
    """responses per prompt, at fixed seeds shared by every policy (paired samples)"""
    temperature: float = Field(1.0, gt=0)
    """sampling temperature (greedy decoding of small models loops)"""
    max_new_tokens: int = Field(24, gt=0)
    """longest response, in tokens"""
    bootstrap_resamples: int = Field(2000, ge=100)
    """resamples of prompts for the 95% intervals of win rates"""
    reference_judge: str | None = Field(None, pattern=PLUGIN)
    """"module:function" of a judge independent of the reward models, scoring responses in
    [0, 1] (the demo's gold judge); reported beside them, never deciding. null on real data"""
    judge_aggregate: Literal["mean", "worst", "mean_minus_std"] = "mean"
    """how the judge's members make one win on a pair: the share of members preferring the new
    response (mean), the least favourable member's vote (worst), or that share less
    judge_aggregate_k standard deviations across members (mean_minus_std)"""
    judge_aggregate_k: float = Field(1.0, ge=0)
    """k of mean_minus_std"""


class Promotion(Section):
    """The promote step: when the evaluated policy takes the `champion` alias."""

    judge: Literal["reward_models", "human"] = "reward_models"
    """who decides: the judge stage's evaluation reward models, or people labelling
    champion-vs-challenger pairs side by side (the decision waits for their labels). The
    optimised reward model is reported beside them and may only hold a promotion back"""
    min_win_rate_lower: float = Field(0.5, ge=0, le=1)
    """lower end of the 95% interval of the judge's win rate against the champion that a
    promotion needs"""
    human_pairs: int = Field(96, ge=1)
    """the human gate: pairs exported per decision (one per held-out prompt first)"""
    human_min_labels: int = Field(64, ge=1)
    """the human gate: labelled pairs it waits for before it decides"""
    max_extrapolated: float | None = Field(0.1, ge=0, le=1)
    """over-optimisation: the share of the challenger's held-out responses outside the range the
    judges were validated on (the feedback's test responses: the reference's surprise per
    token, length, repetition), beyond the reference's own share, above which the judges'
    verdict is an extrapolation: the promotion is held until people decide it
    (promotion.judge: human). null: not checked"""
    max_rm_judge_gap: float | None = Field(0.3, gt=0, le=1)
    """over-optimisation: the optimised reward model's win rate against the incumbent less the
    judge's, above which the promotion is held (a gain only the optimised model sees). null:
    not checked"""
    max_length_ratio: float | None = Field(1.5, gt=1)
    """over-optimisation: the challenger's mean response length against the incumbent's,
    either way, beyond which the promotion is held. null: not checked"""
    min_distinct_ratio: float | None = Field(None, gt=0, le=1)
    """over-optimisation: the challenger's distinct-2 against the incumbent's, below which the
    promotion is held (collapse onto a few phrasings). null: reported, not checked: distinct-2
    measures the variety of phrasing across all responses, and a policy that answers every
    prompt right in one shape has little of it; set it where responses must vary"""
    min_relevance_ratio: float | None = Field(0.95, gt=0, le=1)
    """over-optimisation: the challenger's prompt relevance (how much likelier the reference finds
    its responses after their own prompts than after others) against the reference's, below
    which the promotion is held: it learned text that would do for any prompt, which pairwise
    judges cannot see. Below 1 by what sampling moves a policy that has not changed. null: not
    checked"""
    kl_budget_drop: float | None = Field(0.1, gt=0, lt=1)
    """a KL budget from the data: past the KL where the judges' fitted held-out gain over the
    reference has fallen this share below its peak, nothing is promoted (the smaller of it and
    judge.kl_budget applies). null: judge.kl_budget alone"""
    audit_fraction: float = Field(0.0, ge=0, le=1)
    """the share of automatic promotions (by the evaluation reward models) queued for people's
    side-by-side review against the champion they replaced; a promotion the audit rejects is
    rolled back"""
    audit_every: int | None = Field(None, ge=1)
    """also audit every n-th automatic promotion (null: by audit_fraction alone)"""
    audit_min_win_rate: float = Field(0.5, ge=0, le=1)
    """an audit upholds a promotion when people's win rate for it is at least this"""


class LabelStudio(Section):
    """A Label Studio server the loop pushes its batches to and pulls annotations from."""

    url: str = Field(pattern=r"^https?://")
    """the server, e.g. http://127.0.0.1:8080"""
    token_env: str = "LABEL_STUDIO_TOKEN"
    """environment variable holding the API token (personal access or legacy token)"""
    token_file: str | None = None
    """else a file holding it, relative to the folder of params.yaml; never the token itself"""
    project: str = Field("rlhf pairwise comparisons", min_length=3)
    """the project's title: created, or reused when it exists"""
    timeout_seconds: float = Field(30.0, gt=0)
    """per request"""


class Loop(Section):
    """The feedback loop (rlhf.flows.loop): new labels in, a retrained policy out, the next
    batch to label written. Folders are relative to the folder of params.yaml."""

    inbox: str = "inbox"
    """annotation exports to import, one file per batch"""
    outbox: str = "labeling"
    """batches to label: Label Studio tasks and JSONL, a folder each"""
    min_new_comparisons: int = Field(400, ge=1)
    """retrain (reward model, policy, evaluation, promotion) once this many comparisons arrived
    since the reward model last trained"""
    collect_prompts: int = Field(256, ge=1)
    """prompts per batch to label, two champion responses each"""
    collect_temperature: float = Field(1.0, gt=0)
    """sampling temperature of those responses"""
    annotators: str | None = Field(None, pattern=PLUGIN)
    """"module:function" labelling each batch as it is written, (tasks, seed) -> a Label Studio
    export dropped in the inbox (the demo's simulated annotators); null when people label"""
    label_studio: LabelStudio | None = None
    """a Label Studio server ({url, token_env | token_file, project, timeout_seconds}): each
    batch is pushed there and its annotations pulled back into the inbox"""
    cron: str | None = None
    """schedule of the feedback-loop deployment, e.g. "0 * * * *" (null: every
    interval_seconds)"""
    interval_seconds: int = Field(3600, gt=0)
    """the schedule's interval when cron is null"""


class Tracking(Section):
    """MLflow: where runs and registered models go."""

    tracking_uri: str = "sqlite:///mlflow.db"
    """resolved against the folder of params.yaml; MLFLOW_TRACKING_URI overrides it"""
    artifact_location: str = "mlartifacts"
    """the experiment's artifact store, made when the experiment is"""
    experiment: str = "rlhf"
    """the MLflow experiment every run goes to"""
    registry_prefix: str = "rlhf"
    """models register as <prefix>-base, -sft, -reward, -judge and -policy"""
    wait_seconds: float = Field(60.0, gt=0, le=3600)
    """how long a command waits for the store before it stops in one line: a tracking server
    to answer, a SQLite store that another process (a backup) holds locked"""


# -- the whole ----------------------------------------------------------------------------------


class SectionError(Exception):
    """A method section (validated after the fields, from METHODS) that is not valid: not a
    ValueError, so pydantic lets it through with its own location."""

    def __init__(self, section: str, error: ValidationError | None):
        super().__init__(section)
        self.section, self.error = section, error


class Settings(Section):
    """params.yaml. The method sections (ppo, group, dpo) are not fields: METHODS declares
    them, and they are validated here from it."""

    model_config = ConfigDict(extra="allow")

    seed: int = Field(0, ge=0, le=2**32 - 1)
    """seeds every draw of every stage (numpy takes 32 bits)"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: cuda when present (bf16 autocast there)"""
    lock_timeout_seconds: float = Field(3600.0, ge=0)
    """how long a run waits for another holding the project or the feedback dataset"""
    context_length: int | None = Field(None, gt=0)
    """tokens of prompt + response every stage fits its rows into, never more than the model's
    positions (null: the model's positions); sft, reward, judge and dpo may set their own
    max_length. The policy's prompts are cut from the left to leave max_new_tokens"""
    allow_leakage: bool = False
    """held-out prompts (evaluation prompts, the feedback's test and judge splits) found in the
    SFT data, the policy's prompts or the corpus are a warning of `rlhf check` and `rlhf run`,
    not an error (the demo's templated prompts overlap by construction)"""
    parallel: Parallel = Parallel()
    lora: Lora = Lora()
    paths: Paths = Paths()
    demo: DemoData = DemoData()
    ingest: Ingest = Ingest()
    pretrain: Pretrain = Pretrain()
    sft: SFT = SFT()
    feedback: Feedback = Feedback()
    reward: Reward = Reward()
    judge: Judge = Judge()
    policy: Policy = Policy()
    rewards: Rewards = Rewards()
    evaluate: Evaluate = Evaluate()
    promotion: Promotion = Promotion()
    loop: Loop = Loop()
    compare: Compare = Compare()
    mlflow: Tracking = Tracking()

    root: str = "."
    """set by load_settings, not by the file: where relative paths are anchored"""

    @model_validator(mode="after")
    def _method_sections(self):
        extra = self.__pydantic_extra__
        assert extra is not None
        sections = method_sections()
        for name, value in list(extra.items()):
            if name not in sections:
                raise SectionError(name, None)
            if not isinstance(value, sections[name]):
                try:
                    extra[name] = sections[name].model_validate(value)
                except ValidationError as e:
                    raise SectionError(name, e) from None
        for name, cls in sections.items():
            extra.setdefault(name, cls())
        return self

    @model_validator(mode="after")
    def _online_without_reward_model(self):
        if not self.rewards.uses_reward_model and not self.method.online:
            online = " | ".join(m.name for m in METHODS.values() if m.online)
            raise ValueError(
                f"rewards.model_weight 0 (no reward model) needs an online policy.method "
                f"({online}): {self.policy.method} learns from feedback pairs"
            )
        return self

    @model_validator(mode="after")
    def _paths_in_place(self):
        """paths.data and paths.artifacts apart, and inside the project unless absolute: a
        stage replaces its outputs whole, so outputs over the data (or the project) would
        delete it."""
        root = Path(self.root).resolve()
        where = {}
        for key in ("data", "artifacts"):
            named = Path(getattr(self.paths, key))
            # judged as written: a link (data -> /mnt/disk/data) is the user's own choice
            written = Path(os.path.normpath(root / named))
            where[key] = written
            if not named.is_absolute() and not written.is_relative_to(root):
                raise ValueError(
                    f"paths.{key}: {named} leaves the project folder ({root}); name an "
                    "absolute path to mean a folder outside it"
                )
        data, artifacts = where["data"], where["artifacts"]
        if artifacts == root or data.is_relative_to(artifacts) or artifacts.is_relative_to(data):
            raise ValueError(
                f"paths.artifacts ({self.paths.artifacts}) and paths.data ({self.paths.data}) "
                "overlap (or the outputs would be the project folder): stages replace their "
                "outputs whole, so each must be a folder of its own"
            )
        return self

    def section(self, name: str, kind: type[C]) -> C:
        """A section by name, checked to be of kind (the method sections have no attribute
        the type checker knows)."""
        value = getattr(self, name)
        if not isinstance(value, kind):
            raise TypeError(f"section {name} is a {type(value).__name__}, not a {kind.__name__}")
        return value

    def value_of(self, field: str) -> Any:
        """The value of a dotted key ("evaluate.reference_judge")."""
        value: Any = self
        for part in field.split("."):
            value = getattr(value, part)
        return value

    @property
    def method(self) -> Method:
        """The policy method this run trains."""
        return METHODS[self.policy.method]

    def token_budget(self, max_length: int | None, positions: int) -> int:
        """A stage's tokens per row: its own max_length, else context_length, else the
        model's positions, and never more than those."""
        return min(max_length or self.context_length or positions, positions)

    def method_config(self, kind: type[C]) -> C:
        """The section of the method this run trains, checked to be of kind."""
        return self.section(self.method.section, kind)

    def path(self, *parts: str) -> Path:
        return Path(self.root, *parts)

    @property
    def data_dir(self) -> Path:
        return self.path(self.paths.data)

    def require_data(self) -> Path:
        """paths.data, which must be a folder (a one-line error saying how to make one)."""
        if not self.data_dir.is_dir():
            raise UserError(
                f"{self.data_dir}: no such folder (generate the demo data with `rlhf data`, or "
                "point paths.data at your own)"
            )
        return self.data_dir

    @property
    def feedback_dir(self) -> Path:
        """The versioned feedback dataset that `rlhf feedback import` appends to."""
        return self.data_dir / "feedback"

    def stage_dir(self, stage: str) -> Path:
        return self.path(self.paths.artifacts, stage)

    def out_path(self, stage: str, out: str) -> Path:
        """Where a stage's out is in this project's artifacts."""
        return self.stage_dir(stage) / out

    def section_digest(self, *sections: str) -> str:
        """Digest of the named sections' values: part of a stage's cache key."""
        blob = json.dumps({s: _dump(getattr(self, s)) for s in sections}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _dump(value: object) -> object:
    return value.model_dump() if isinstance(value, BaseModel) else value


def section_names() -> list[str]:
    """The top-level keys of params.yaml, in the order they are written."""
    fields = [f for f in Settings.model_fields if f != "root"]
    at = fields.index("policy") + 1
    return [*fields[:at], *method_sections(), *fields[at:]]


def section_model(name: str) -> type[BaseModel] | None:
    """The class of a top-level section (None for a plain value such as seed)."""
    methods = method_sections()
    if name in methods:
        return methods[name]
    return model_class(Settings.model_fields[name].annotation)


def model_class(annotation: Any) -> type[BaseModel] | None:
    """The section class a field holds, required or optional (None: a plain value)."""
    union = get_origin(annotation) in (Union, types.UnionType)
    for option in (annotation, *(get_args(annotation) if union else ())):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def nearest(key: str, known: list[str]) -> str:
    """' (did you mean x?)' when a known key is close to `key`."""
    found = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {found[0]}?)" if found else ""


def nested(model: type[BaseModel] | None, name: str) -> type[BaseModel] | None:
    """The section class of key `name` inside model (None: a plain value, or no such key)."""
    if model is Settings:
        return section_model(name) if name in section_names() else None
    field = model.model_fields.get(name) if model is not None else None
    return model_class(field.annotation) if field is not None else None


def known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys where `loc` points (its last part being the unknown key)."""
    model: type[BaseModel] | None = Settings
    for part in loc[:-1]:
        model = nested(model, str(part))
    if model is None:
        return []
    return section_names() if model is Settings else list(model.model_fields)


def error_line(path: Path, loc: tuple[Any, ...], error: ErrorDetails) -> str:
    key = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{path}: {key}: unknown key{nearest(str(loc[-1]), known_keys(loc))}"
    message = error["msg"].removeprefix("Value error, ")
    if not loc:  # a rule across sections: its message names the keys
        return f"{path}: {message}"
    if isinstance(error.get("input"), dict):  # a rule across a section's keys: likewise
        return f"{path}: {key}: {message}"
    return f"{path}: {key}: {message} (got {SHOWN.repr(error.get('input'))})"


def load_settings(path: str | Path = "params.yaml") -> Settings:
    path = Path(path)
    raw = read_yaml(path, "params file") or {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    if "root" in raw:
        raise UserError(f"{path}: root: unknown key")
    try:
        return Settings.model_validate({**raw, "root": str(path.resolve().parent)})
    except ValidationError as e:
        errors = e.errors()
        more = f" [+{len(errors) - 1} more]" if len(errors) > 1 else ""
        raise UserError(error_line(path, errors[0]["loc"], errors[0]) + more) from None
    except SectionError as e:
        if e.error is None:
            raise UserError(
                f"{path}: {e.section}: unknown key{nearest(e.section, section_names())}"
            ) from None
        errors = e.error.errors()
        more = f" [+{len(errors) - 1} more]" if len(errors) > 1 else ""
        line = error_line(path, (e.section, *errors[0]["loc"]), errors[0])
        raise UserError(line + more) from None
