"""The evaluation's results as a typed record. `to_metrics` writes it as the flat names users see
(metrics.json, MLflow, the registry's eval.* tags, decision.json) and `from_metrics` reads them
back; no other module builds or parses a metric name.

The names, for a policy p (sft: the reference, policy: the new one, champion), a judge j (rm:
the optimised reward model, judge: the evaluation reward models together, judge_<i>: member i,
gold: the reference judge, human: people) and an incumbent o (sft or champion):
  <j>_score_<p>                            j's mean score of p's samples (rm, judge, gold)
  kl_<p>_vs_ref, length_<p>, eos_rate_<p>, distinct_1_<p>, distinct_2_<p>, perplexity_<p>
  <j>_win_rate_policy_vs_<o>               the new policy's win rate against o by j (null: j
  <j>_win_rate_policy_vs_<o>_lower|_upper  did not score every sample), its 95% interval
  repetition_<p>, extrapolated_<p>         repeated bigrams; share outside the validated range
  relevance_<p>                            how much the responses depend on their prompts, by
                                           the reference (nats per token)
  judge_split_policy_vs_<o>                share of pairs the judge's members do not agree on
  validated_<d>_lower|_upper, validated_responses   the judges' validated range (descriptor d:
                                           surprise, length, repetition) and its size
  kl_budget_curve                          the KL budget the held-out curve gives (null: none)
  rm_accuracy, judge_accuracy, label_gold_agreement, selected_iteration, eval_prompts,
  samples_per_prompt, policy_version, champion_version_compared, human_tasks,
  human_labelled_tasks, human_votes_unmatched, human_records_unusable
  functions_judge                          1: no reward model; the reward functions' weighted
                                           sum scored as rm and as judge (one member)
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

NEW, REFERENCE, CHAMPION = "policy", "sft", "champion"  # the policies an evaluation samples
JUDGE = "judge"  # the evaluation reward models' mean score; judge_<i>: member i's
MEAN_SCORES = ("rm", "judge", "gold")  # the judges whose mean score of each policy is reported
WHOLE_JUDGES = (
    "judge",
    "human",
    "rm",
    "gold",
)  # judges as reported (members aside), the decider first
WIN = re.compile(rf"^(?P<judge>\w+?)_win_rate_{NEW}_vs_(?P<other>{REFERENCE}|{CHAMPION})$")
Number = float | int | None
DESCRIPTORS = (
    "surprise",
    "length",
    "repetition",
)  # of a response (rlhf.core.evaluation.extrapolation)


@dataclass(frozen=True)
class Interval:
    """A win rate with its 95% bootstrap interval."""

    rate: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Scores:
    """What one policy's samples measured."""

    rm: float | None  # the optimised reward model's mean score
    judge: float | None  # the evaluation reward models' mean score
    gold: float | None  # the reference judge's mean score (None: there is none)
    kl: float | None  # mean KL to the reference, nats per response
    length: float | None  # mean response length, tokens
    eos_rate: float  # share of responses that ended
    distinct_1: float | None  # None: no response long enough
    distinct_2: float | None
    perplexity: float | None = None  # on the SFT stage's held-out responses
    repetition: float | None = None  # mean share of a response's bigrams repeating an earlier
    extrapolated: float | None = None  # share outside the judges' validated range
    relevance: float | None = None  # mean prompt relevance, nats per token (extrapolation.py)


@dataclass(frozen=True)
class Range:
    lower: float
    upper: float


@dataclass(frozen=True)
class Validated:
    """The range of each descriptor over the responses the judges were measured on."""

    ranges: dict[str, Range]  # descriptor -> its 1st-99th percentile range
    responses: int  # test responses it was measured on


@dataclass(frozen=True)
class HumanLabels:
    """How far the human gate's labelling got."""

    tasks: int
    labelled_tasks: int
    votes_unmatched: int
    records_unusable: int


@dataclass(frozen=True)
class Evaluation:
    """The evidence on the new policy: each policy's scores, and the new policy's win rates
    against its reference and (at promotion) the champion, by each judge."""

    scores: dict[str, Scores]  # policy -> its scores
    wins: dict[tuple[str, str], Interval | None]  # (judge, incumbent) -> the new policy's
    rm_accuracy: float | None = None
    judge_accuracy: float | None = None
    label_gold_agreement: float | None = None  # the annotators' ceiling, by the gold judge
    selected_iteration: int | None = None
    eval_prompts: int | None = None
    eval_prompts_cut: int | None = None  # cut from the left to leave room for the response
    samples_per_prompt: int | None = None
    policy_version: int | None = None
    champion_version_compared: int | None = None
    human: HumanLabels | None = None
    split: dict[str, float | None] = dataclasses.field(default_factory=dict)  # incumbent -> the
    # share of pairs the judge's members do not agree on
    validated: Validated | None = None
    kl_budget_curve: float | None = None
    # 1: no reward model (rewards.model_weight 0), the reward functions' weighted sum scored
    # as the reward model and as the judge
    functions_judge: int | None = None

    @property
    def judge_name(self) -> str:
        """Who the `judge` is, for people."""
        return "the reward functions" if self.functions_judge else "the judge"

    def win(self, judge: str, other: str) -> Interval | None:
        """The new policy's win rate against other by judge; None where it did not judge."""
        return self.wins.get((judge, other))

    def members(self, other: str) -> list[str]:
        """The judge's members that compared the new policy with other, in member order."""
        found = [j for j, o in self.wins if o == other and j.startswith("judge_")]
        return sorted(found, key=lambda j: int(j.removeprefix("judge_")))

    def but(self, **changes) -> Evaluation:
        """A copy with changes; scores and wins are merged into the copy's."""
        scores = self.scores | changes.pop("scores", {})
        wins = self.wins | changes.pop("wins", {})
        split = self.split | changes.pop("split", {})
        return dataclasses.replace(self, scores=scores, wins=wins, split=split, **changes)


def score_names(policy: str) -> dict[str, str]:
    """Each field of a policy's Scores and its metric name."""
    return {
        **{judge: f"{judge}_score_{policy}" for judge in MEAN_SCORES},
        "kl": f"kl_{policy}_vs_ref",
        **{f: f"{f}_{policy}" for f in ("length", "eos_rate", "distinct_1", "distinct_2")},
        "perplexity": f"perplexity_{policy}",
        "repetition": f"repetition_{policy}",
        "extrapolated": f"extrapolated_{policy}",
        "relevance": f"relevance_{policy}",
    }


OPTIONAL = (
    "perplexity",
    "repetition",
    "extrapolated",
    "relevance",
)  # not measured for every policy


def score_metrics(policy: str, s: Scores) -> dict[str, Number]:
    named = score_names(policy).items()
    return {
        name: getattr(s, f) for f, name in named if getattr(s, f) is not None or f not in OPTIONAL
    }


def win_metrics(judge: str, other: str, interval: Interval | None) -> dict[str, Number]:
    key = f"{judge}_win_rate_{NEW}_vs_{other}"
    if interval is None:
        return {key: None}
    return {key: interval.rate, f"{key}_lower": interval.lower, f"{key}_upper": interval.upper}


FACTS = (
    "rm_accuracy",
    "judge_accuracy",
    "label_gold_agreement",
    "selected_iteration",
    "eval_prompts",
    "eval_prompts_cut",
    "samples_per_prompt",
    "policy_version",
    "champion_version_compared",
    "kl_budget_curve",
    "functions_judge",
)
SPLIT = "judge_split_{}_vs_{}"


def to_metrics(e: Evaluation) -> dict[str, Number]:
    """The record under the names users see."""
    flat: dict[str, Number] = {}
    for policy, s in e.scores.items():
        flat |= score_metrics(policy, s)
    for (judge, other), interval in e.wins.items():
        flat |= win_metrics(judge, other, interval)
    flat |= {name: getattr(e, name) for name in FACTS if getattr(e, name) is not None}
    if e.human is not None:
        flat |= {f"human_{k}": v for k, v in dataclasses.asdict(e.human).items()}
    flat |= {SPLIT.format(NEW, other): share for other, share in e.split.items()}
    if e.validated is not None:
        for d, r in e.validated.ranges.items():
            flat |= {f"validated_{d}_lower": r.lower, f"validated_{d}_upper": r.upper}
        flat["validated_responses"] = e.validated.responses
    return flat


def from_metrics(m: dict[str, Number]) -> Evaluation:
    """The record to_metrics wrote (metrics.json, a human gate's copy of it)."""
    scores = {
        policy: Scores(**{f: m.get(name) for f, name in score_names(policy).items()})  # type: ignore[arg-type]
        for policy in (REFERENCE, NEW, CHAMPION)
        if f"kl_{policy}_vs_ref" in m
    }
    wins: dict[tuple[str, str], Interval | None] = {}
    for key, rate in m.items():
        if found := WIN.match(key):
            bounds = (m.get(f"{key}_lower"), m.get(f"{key}_upper"))
            interval = None if rate is None else Interval(rate, *bounds)  # type: ignore[arg-type]
            wins[(found["judge"], found["other"])] = interval
    human = None
    if "human_tasks" in m:
        counts = (m.get(f"human_{f.name}") for f in dataclasses.fields(HumanLabels))
        human = HumanLabels(*(int(c or 0) for c in counts))
    split = {o: m[SPLIT.format(NEW, o)] for o in (REFERENCE, CHAMPION) if SPLIT.format(NEW, o) in m}
    validated = None
    if "validated_responses" in m:
        ranges = {
            d: Range(m[f"validated_{d}_lower"], m[f"validated_{d}_upper"])  # type: ignore[arg-type]
            for d in DESCRIPTORS
        }
        validated = Validated(ranges, int(m["validated_responses"] or 0))
    facts = {name: m.get(name) for name in FACTS}
    return Evaluation(
        scores,
        wins,
        human=human,
        split=split,
        validated=validated,
        **facts,  # type: ignore[arg-type]
    )


def headline(e: Evaluation) -> dict[str, float]:
    """What a registered policy version carries of its evaluation (tags eval.<name>): the new
    policy's mean scores and KL, and each whole judge's win rates with their intervals."""
    names = score_names(NEW)
    picked = {names[f]: getattr(e.scores[NEW], f) for f in (*MEAN_SCORES, "kl")}
    for (judge, other), interval in e.wins.items():
        if judge in WHOLE_JUDGES:
            picked |= win_metrics(judge, other, interval)
    return {k: float(v) for k, v in picked.items() if v is not None}
