"""Sampling policies on held-out prompts and scoring what they say.

Every policy is sampled at the same seeds with the same decoding settings, so samples are
paired (same prompt, same seed) across policies; sampling, not greedy: greedy decoding of
small models loops. Each response gets the reward model's score, each evaluation reward
model's (the judge's members), the reference judge's (NaN without one), its KL to the
reference, its length and whether it ended. Without a reward model (rewards.model_weight 0)
the reward functions' weighted sum is the reward model's score and the judge's (one member):
a checkable reward needs no judge trained apart.
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlhf.core.evaluation.extrapolation import (
    Validated,
    extrapolated,
    prompt_relevance,
    repetition,
)
from rlhf.core.evaluation.judges import (
    ReferenceJudge,
    load_members,
    reference_judge,
    reference_scores,
)
from rlhf.core.evaluation.records import JUDGE, NEW, Interval, Scores
from rlhf.core.evaluation.stats import distinct_n, mean, win_rate, win_rate_interval, wins
from rlhf.core.settings import Evaluate, Settings
from rlhf.core.tracking.registry import load_registered_lm
from rlhf.models.batching import examples_rows, response_loss
from rlhf.models.generation import decode_responses, response_logits, sample, token_logprobs
from rlhf.models.lm import load_causal_lm
from rlhf.models.reward import sample_scores
from rlhf.models.tokenizer import load_tokenizer

Where = Callable[[str, str], Path]  # (stage, out) -> its path
Scorer = Callable[[list[str], list[str]], list[float]]  # (prompts, responses) -> one score each
MEMBER_COLUMN = re.compile(rf"^{JUDGE}_\d+$")


@dataclass(frozen=True)
class Bench:
    """What every sample is scored with, the same for every policy."""

    ref: PreTrainedModel  # the reference policy (SFT): KL is measured against it
    rm: PreTrainedModel | None  # the reward model PPO optimised (None: there is none)
    judges: list[PreTrainedModel]  # the evaluation reward models (the judge stage's members)
    tok: PreTrainedTokenizerBase
    reference: ReferenceJudge | None  # the reference judge, if there is one (the demo's gold)
    max_new_tokens: int
    temperature: float
    device: torch.device
    # without a reward model (rewards.model_weight 0): the reward functions' weighted sum,
    # which then stands in for the reward model and for the judge (its one member)
    functions: Scorer | None = None

    @classmethod
    def load(
        cls,
        settings: Settings,
        device: torch.device,
        max_new_tokens: int,
        temperature: float,
        *,
        where: Where | None = None,
        with_reference: bool = True,
        functions: Scorer | None = None,
    ) -> Bench:
        """The run's SFT model, reward model, judge members and (with_reference) the
        reference judge; where: the path of a stage's out (a stage's ctx.input; by default
        the project's artifacts). Without a reward model: functions, the reward functions'
        weighted sum on the prompts to be sampled."""
        where = where or settings.out_path
        tok = load_tokenizer(str(where("sft", "model")))
        learned = settings.rewards.uses_reward_model
        if not (learned or functions):
            raise ValueError("rewards.model_weight 0: the bench scores with the reward functions")
        return cls(
            ref=load_causal_lm(where("sft", "model"), tok).to(device).eval(),
            rm=reward_model(where("reward", "model"), device) if learned else None,
            judges=load_members(where("judge", "model"), device) if learned else [],
            tok=tok,
            reference=reference_judge(settings) if with_reference else None,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            device=device,
            functions=None if learned else functions,
        )

    @torch.no_grad()
    def sample(self, policy: PreTrainedModel, prompts: list[str], seed: int) -> dict[str, list]:
        """Sample once per prompt at a fixed seed, and score each response."""
        tok, temperature = self.tok, self.temperature
        torch.manual_seed(seed)
        s = sample(policy, tok, prompts, self.max_new_tokens, temperature, self.device)
        mask = s.response_mask.float()
        lp = token_logprobs(response_logits(policy, s), s.response_ids, temperature)
        ref_logits = response_logits(self.ref, s)
        ref_lp = token_logprobs(ref_logits, s.response_ids, temperature)
        ref_nll = -(token_logprobs(ref_logits, s.response_ids, 1.0) * mask).sum(1)
        texts = decode_responses(tok, s)
        if self.rm is None:
            assert self.functions is not None
            rm = self.functions(prompts, texts)
            members = {f"{JUDGE}_0": rm}
        else:
            rm = sample_scores(self.rm, s, tok.pad_token_id).tolist()
            members = {
                f"{JUDGE}_{i}": sample_scores(m, s, tok.pad_token_id).tolist()
                for i, m in enumerate(self.judges)
            }
        return {
            "prompt": prompts,
            "response": texts,
            "rm": rm,
            JUDGE: np.mean(list(members.values()), axis=0).tolist(),
            **members,
            "gold": reference_scores(self.reference, prompts, texts),
            "kl": ((lp - ref_lp) * mask).sum(1).tolist(),
            "length": mask.sum(1).tolist(),
            "ended": s.has_eos.tolist(),
            "surprise": (ref_nll / mask.sum(1).clamp(min=1)).tolist(),
            "repetition": [repetition(t) for t in texts],
            "relevance": prompt_relevance(self.ref, tok, prompts, texts, self.device),
        }

    def sample_policies(
        self, policies: dict[str, PreTrainedModel], prompts: list[str], seeds: list[int]
    ) -> pd.DataFrame:
        """One row per (policy, seed, prompt), in that order for every policy."""
        frames = [
            pd.DataFrame({"policy": name, "seed": seed, **self.sample(model, prompts, seed)})
            for seed in seeds
            for name, model in policies.items()
        ]
        return pd.concat(frames, ignore_index=True)


def reward_model(folder: Path, device: torch.device) -> PreTrainedModel:
    return AutoModelForSequenceClassification.from_pretrained(folder).to(device).eval()


def read_samples(path: Path) -> pd.DataFrame:
    """samples.csv as written: an empty response stays an empty string, not a missing value."""
    samples = pd.read_csv(path)
    return samples.fillna({"prompt": "", "response": ""})


def eval_seeds(seed: int, samples_per_prompt: int) -> list[int]:
    return [seed + 1000 + k for k in range(samples_per_prompt)]


def per_prompt(samples: pd.DataFrame, policy: str, column: str) -> np.ndarray:
    """[P, K] scores of one policy: prompts by row, seeds by column (the pairing order)."""
    rows = samples[samples["policy"] == policy]
    return rows.pivot(index="prompt", columns="seed", values=column).to_numpy(float)


def policy_scores(samples: pd.DataFrame, policy: str, validated: Validated | None) -> Scores:
    """A policy's scores from its samples (its perplexity is measured apart); with the judges'
    validated range, the share of its samples outside it."""
    rows = samples[samples["policy"] == policy]
    texts = rows["response"].tolist()
    return Scores(
        rm=mean(rows["rm"]),
        judge=mean(rows[JUDGE]),
        gold=mean(rows["gold"]),
        kl=mean(rows["kl"]),
        length=mean(rows["length"]),
        eos_rate=float(rows["ended"].mean()),
        distinct_1=distinct_n(texts, 1),
        distinct_2=distinct_n(texts, 2),
        repetition=mean(rows["repetition"]),
        extrapolated=None if validated is None else float(extrapolated(rows, validated).mean()),
        relevance=mean(rows["relevance"]) if "relevance" in rows else None,
    )


def member_columns(samples: pd.DataFrame) -> list[str]:
    """The judge members' score columns, in member order."""
    return sorted(
        (c for c in samples.columns if MEMBER_COLUMN.match(c)), key=lambda c: int(c.rsplit("_")[1])
    )


def member_votes(samples: pd.DataFrame, other: str, columns: list[str]) -> np.ndarray | None:
    """[M, P, K] each judge's wins of the new policy against `other`, paired by prompt and
    seed; None where a judge left a sample unscored."""
    found = []
    for column in columns:
        new, base = per_prompt(samples, NEW, column), per_prompt(samples, other, column)
        if np.isnan(new).any() or np.isnan(base).any():
            return None
        found.append(wins(new, base))
    return np.stack(found)


def combine(votes: np.ndarray, how: str, k: float) -> np.ndarray:
    """[P, K] an ensemble's win on each pair from its members' [M, P, K] votes: their mean;
    worst: the least favourable member's; mean_minus_std: the mean less k standard deviations
    across members (the conservative aggregations of Coste et al. 2023), within [0, 1]."""
    if how == "worst":
        return votes.min(0)
    if how == "mean_minus_std":
        return (votes.mean(0) - k * votes.std(0)).clip(0, 1)
    return votes.mean(0)


def member_split(samples: pd.DataFrame, other: str) -> float | None:
    """The share of pairs (new policy vs `other`) on which the judge's members do not all
    agree; None with fewer than two members."""
    columns = member_columns(samples)
    votes = member_votes(samples, other, columns) if len(columns) > 1 else None
    return None if votes is None else float((votes.max(0) != votes.min(0)).mean())


def win_rates(
    samples: pd.DataFrame, other: str, cfg: Evaluate, seed: int
) -> dict[tuple[str, str], Interval | None]:
    """(judge, other) -> the new policy's win rate against `other` with its interval, by each
    judge: the reward model, the judge (its members combined by cfg.judge_aggregate, and each
    alone), gold; None for a judge that left a sample unscored."""
    members = member_columns(samples)
    judges = {"rm": ["rm"], JUDGE: members, **{m: [m] for m in members}, "gold": ["gold"]}
    found: dict[tuple[str, str], Interval | None] = {}
    for judge, columns in judges.items():
        votes = member_votes(samples, other, columns) if columns else None
        if votes is None:
            found[(judge, other)] = None
            continue
        paired = combine(votes, cfg.judge_aggregate, cfg.judge_aggregate_k)
        found[(judge, other)] = Interval(*win_rate_interval(paired, cfg.bootstrap_resamples, seed))
    return found


def perplexity(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    heldout: pd.DataFrame,
    device: torch.device,
) -> float:
    """Perplexity of the responses (with their EOS) of the SFT stage's held-out rows."""
    rows = examples_rows(tok, heldout, model.config.max_position_embeddings).rows
    return math.exp(response_loss(model, rows, tok.pad_token_id, device))


def score_vs_kl(
    snapshots: Path,
    bench: Bench,
    prompts: list[str],
    seeds: list[int],
    ref_samples: pd.DataFrame,
    validated: Validated | None = None,
) -> pd.DataFrame:
    """Mean KL and RM, judge and gold score of each PPO snapshot (iteration 0: the reference
    itself, whose samples are already in ref_samples); with the judges' validated range, the
    share of each snapshot's samples outside it."""

    def point(iteration: int, rows: pd.DataFrame) -> dict:
        means = {k: mean(rows[k]) for k in ("kl", "rm", JUDGE, "gold")}
        outside = {} if validated is None else {"extrapolated": extrapolated(rows, validated)}
        return (
            {"iteration": iteration}
            | {k: math.nan if v is None else v for k, v in means.items()}
            | {k: float(v.mean()) for k, v in outside.items()}
        )

    points = [point(0, ref_samples)]
    model = copy.deepcopy(bench.ref)  # snapshots are the policy's weights: same architecture
    for path in sorted(snapshots.glob("iter-*.pt")):
        model.load_state_dict(torch.load(path, map_location=bench.device, weights_only=True))
        rows = bench.sample_policies({"snapshot": model}, prompts, seeds)
        points.append(point(int(path.stem.removeprefix("iter-")), rows))
    return pd.DataFrame(points)


def label_gold_agreement(pairs: pd.DataFrame | None, judge: ReferenceJudge | None) -> float | None:
    """How often the annotators' choice agrees with the reference judge on the test pairs: the
    ceiling a reward model can reach on these noisy labels (ties count one half); None without
    pairs."""
    if pairs is None:
        return None
    test = pairs[pairs["split"] == "test"]
    prompts = test["prompt"].tolist()
    chosen = reference_scores(judge, prompts, test["chosen"].tolist())
    rejected = reference_scores(judge, prompts, test["rejected"].tolist())
    if not chosen or any(math.isnan(x) for x in chosen):
        return None
    return win_rate(chosen, rejected)


def sample_registered(
    name: str, version: str, bench: Bench, *, prompts: list[str], seeds: list[int], label: str
) -> tuple[pd.DataFrame, PreTrainedModel]:
    """Samples of a registered policy version (rows labelled `label`) and the model itself."""
    with tempfile.TemporaryDirectory() as tmp:
        model = load_registered_lm(name, version, bench.tok, Path(tmp))
        model.to(bench.device).eval()  # type: ignore[arg-type]
        return bench.sample_policies({label: model}, prompts, seeds), model


def function_metrics(
    samples: pd.DataFrame, other: str, resamples: int, seed: int
) -> dict[str, float | None]:
    """Per reward function (a reward_<name> column): its mean on the new policy's and other's
    samples, and the new policy's paired gain with a 95% bootstrap interval over prompts
    (a sample a function had no opinion on is left out)."""
    found: dict[str, float | None] = {}
    for col in [c for c in samples.columns if c.startswith("reward_")]:
        new = samples[samples["policy"] == NEW].set_index(["prompt", "seed"])[col]
        old = samples[samples["policy"] == other].set_index(["prompt", "seed"])[col]
        by_prompt = (new - old.reindex(new.index)).groupby(level=0).mean().dropna().to_numpy()
        found |= {f"{col}_{NEW}": mean(new), f"{col}_{other}": mean(old)}
        if len(by_prompt):  # the same bootstrap over prompts as a win rate's
            gain = win_rate_interval(by_prompt[:, None], resamples, seed)
            found |= dict(zip((f"{col}_gain", f"{col}_gain_lower", f"{col}_gain_upper"), gain))
    return found
