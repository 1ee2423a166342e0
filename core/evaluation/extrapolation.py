"""Where the judges were validated, and how far a policy has gone past it.

The evaluation reward models are measured on the feedback's test pairs (judge_accuracy): their
word is worth that much on responses like those. A policy optimised against a reward model
trained on the same kind of data drifts to responses nobody labelled, where reward models of
that data share their errors (Eisenstein et al. 2023): there a high judge score is an
extrapolation, not evidence. Every response is described by what any text has, whoever wrote
it:
  surprise    the reference's (SFT's) negative log-likelihood per token; for a policy's own
              samples its mean is the KL to the reference per token plus the policy's entropy,
              so drift away from the reference shows here, and it is defined for the feedback's
              responses too, whose writer is unknown
  length      tokens, with the EOS
  repetition  the share of its word bigrams that repeat an earlier one (loops, stock phrases)
The validated range of each is the 1st to 99th percentile over the test pairs' responses; a
response outside any of them is extrapolated.

A response's prompt relevance is how much likelier the reference finds it after its own prompt
than after another one: a pairwise reward model compares two responses to the same prompt, so
it never learns what a response that would do for any prompt is worth, and the judges, trained
the same way, share that blind spot. A policy whose responses depend on their prompts less than
the reference's do has found it.

The score-vs-KL curve gives a second bound, from the data rather than a hand-set number (Gao
et al. 2022): the judges' held-out gain over the reference, fitted as a*d - b*d^2 in
d = sqrt(KL), peaks and then falls; past the KL where it has lost a set share of its peak, the
policy is spending KL on what the judges no longer reward.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.core.evaluation.records import DESCRIPTORS, Range, Validated
from rlhf.core.evaluation.stats import repeated_share
from rlhf.models.batching import encode_pairs, labelled_row, response_nll

QUANTILES = (0.01, 0.99)


def repetition(text: str) -> float:
    """The share of the text's word bigrams that repeat an earlier one (0: none repeats)."""
    return repeated_share(text, 2)


def describe(
    ref: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    responses: list[str],
    device: torch.device,
) -> pd.DataFrame:
    """The descriptors of each (prompt, response) whose response fits the reference's
    positions (the prompt cut from the left as in training; a longer response is left out)."""
    rows, texts = [], []
    for (q, r), text in zip(zip(*encode_pairs(tok, prompts, responses)), responses):
        row = labelled_row(q, r, ref.config.max_position_embeddings)
        if row is not None:
            rows.append(row)
            texts.append(text)
    nll = response_nll(ref, rows, tok.pad_token_id, device)  # [N, 2]: summed loss, tokens
    return pd.DataFrame(
        {
            "surprise": (nll[:, 0] / nll[:, 1].clamp(min=1)).numpy(),
            "length": nll[:, 1].numpy(),
            "repetition": [repetition(t) for t in texts],
        }
    )


def nll_per_token(
    ref: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    responses: list[str],
    device: torch.device,
) -> np.ndarray:
    """[N] the reference's negative log-likelihood per token of each response after its prompt;
    NaN where the response does not fit the reference's positions."""
    rows = [
        labelled_row(q, r, ref.config.max_position_embeddings)
        for q, r in zip(*encode_pairs(tok, prompts, responses))
    ]
    fitted = [i for i, row in enumerate(rows) if row is not None]
    nll = response_nll(ref, [rows[i] for i in fitted], tok.pad_token_id, device)  # [F, 2]
    found = np.full(len(rows), np.nan)
    found[fitted] = (nll[:, 0] / nll[:, 1].clamp(min=1)).numpy()
    return found


def prompt_relevance(
    ref: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    responses: list[str],
    device: torch.device,
) -> list[float]:
    """Per response: the reference's log-likelihood of it after its own prompt less that after
    another prompt of the batch (the next different one), nats per token; about 0 for a
    response that would do for any prompt. NaN where the batch has a single prompt or the
    response does not fit."""
    unique = list(dict.fromkeys(prompts))
    if len(unique) < 2:
        return [math.nan] * len(prompts)
    other = dict(zip(unique, unique[1:] + unique[:1]))
    own = nll_per_token(ref, tok, prompts, responses, device)
    elsewhere = nll_per_token(ref, tok, [other[p] for p in prompts], responses, device)
    return (elsewhere - own).tolist()


def validated_range(
    ref: PreTrainedModel, tok: PreTrainedTokenizerBase, pairs: pd.DataFrame, device: torch.device
) -> Validated | None:
    """The validated range, from the feedback's test pairs (both responses of each); None
    where no test response fits the reference's positions (nothing to measure it on)."""
    test = pairs[pairs["split"] == "test"]
    prompts = [*test["prompt"], *test["prompt"]]
    found = describe(ref, tok, prompts, [*test["chosen"], *test["rejected"]], device)
    if found.empty:
        return None
    ranges = {d: Range(*(float(found[d].quantile(q)) for q in QUANTILES)) for d in DESCRIPTORS}
    return Validated(ranges, len(found))


def extrapolated(samples: pd.DataFrame, v: Validated) -> pd.Series:
    """Per sample: True where a descriptor lies outside its validated range."""
    outside = pd.Series(False, index=samples.index)
    for d, r in v.ranges.items():
        outside |= (samples[d] < r.lower) | (samples[d] > r.upper)
    return outside


def curve_kl_budget(curve: pd.DataFrame, judge: str, drop: float) -> float | None:
    """The KL past the judges' fitted peak where their gain has fallen by `drop` of it, from
    score_vs_kl's table; None where the curve shows no peak within the KL it measured (or has
    too few snapshots to fit)."""
    points = curve.dropna(subset=["kl", judge])
    if len(points) < 3:
        return None
    d = np.sqrt(points["kl"].clip(lower=0).to_numpy())  # [S]
    gain = (points[judge] - points[judge].iloc[0]).to_numpy()  # iteration 0 is the reference
    (a, minus_b), *_ = np.linalg.lstsq(np.stack([d, -(d**2)], 1), gain, rcond=None)
    peak = a / (2 * minus_b) if a > 0 and minus_b > 0 else math.inf  # d at the fitted peak
    if peak > d.max():
        return None  # no peak within the KL measured: the fit would be extrapolating
    return float((peak * (1 + math.sqrt(drop))) ** 2)  # the gain is (1 - drop) of the peak's
