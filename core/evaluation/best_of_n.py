"""Best-of-n: n responses sampled from the SFT model, the reward model's favourite kept. The
baseline every alignment method is reported against: no training, n times the sampling.

Its KL to the SFT model is not a per-sample log-ratio (every response is an SFT sample); it is
the analytic bound KL(best-of-n || SFT) <= log n - (n - 1) / n, the figure the field reports
for it (Stiennon et al., 2020; Beirami et al., 2024).
"""

from __future__ import annotations

import math

import pandas as pd

from rlhf.core.evaluation.records import NEW, REFERENCE, Evaluation
from rlhf.core.evaluation.sampling import Bench, eval_seeds, policy_scores, win_rates
from rlhf.core.settings import Settings
from rlhf.models.lm import start_run

CANDIDATE_SEED_STRIDE = 100_003  # candidate j of seed s samples at s + j * stride (j = 0: s)


def best_of_n_kl(n: int) -> float:
    return math.log(n) - (n - 1) / n


def choose_best(candidates: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, item): the candidate with the highest reward-model score (the first such
    candidate where scores tie)."""
    return candidates.loc[candidates.groupby(["seed", "item"])["rm"].idxmax().to_numpy()]


def sample_best_of_n(bench: Bench, prompts: list[str], seeds: list[int], n: int) -> pd.DataFrame:
    """Rows of the SFT model ("sft": candidate 0, the very sample the evaluation draws at that
    seed) and of best-of-n (NEW), paired by seed and prompt as the evaluation pairs them."""
    candidates = pd.concat(
        [
            pd.DataFrame(
                {
                    "seed": seed,
                    "candidate": j,
                    "item": range(len(prompts)),
                    **bench.sample(bench.ref, prompts, seed + j * CANDIDATE_SEED_STRIDE),
                }
            )
            for seed in seeds
            for j in range(n)
        ],
        ignore_index=True,
    )
    sft = candidates[candidates["candidate"] == 0].assign(policy="sft")
    best = choose_best(candidates).assign(policy=NEW, kl=best_of_n_kl(n))
    return pd.concat([sft, best], ignore_index=True).drop(columns=["candidate", "item"])


def evaluate_best_of_n(settings: Settings, n: int) -> tuple[Evaluation, pd.DataFrame]:
    """Best-of-n and SFT on the held-out prompts at the evaluation's seeds and settings: their
    scores and the win rates of best-of-n against SFT, and the samples."""
    cfg = settings.evaluate
    device = start_run(settings.seed, settings.device)
    bench = Bench.load(settings, device, cfg.max_new_tokens, cfg.temperature)
    prompts = pd.read_parquet(settings.out_path("ingest", "prompts_eval.parquet"))
    seeds = eval_seeds(settings.seed, cfg.samples_per_prompt)
    samples = sample_best_of_n(bench, prompts["prompt"].tolist(), seeds, n)
    evaluation = Evaluation(
        scores={policy: policy_scores(samples, policy, None) for policy in (REFERENCE, NEW)},
        wins=win_rates(samples, REFERENCE, cfg, settings.seed),
    )
    return evaluation, samples
