"""Stage 7, evaluate: SFT against PPO on held-out prompts, by the reward model and the gold judge.

Both policies sample with the same seeds and settings (sampling, not greedy: greedy
decoding of small models loops). Writes metrics.json (the keys the README lists),
samples.csv with every sample and its scores, and moves the `champion` alias to the new
policy (real promotion rules come with the evaluation issue).
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from tasks.runner import StageContext


def win_rate(a: list[float], b: list[float]) -> float:
    """P(a > b) over paired samples, ties counting one half."""
    return sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b)) / len(a)


def gold_scores(prompts: list[str], responses: list[str]) -> list[float]:
    """The demo's gold judge where the prompt is one of its prompts, NaN elsewhere."""
    from tasks.demo import gold_score, parse_prompt

    return [gold_score(p, r) if parse_prompt(p) else math.nan for p, r in zip(prompts, responses)]


def mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else None


@torch.no_grad()
def sample_and_score(policy, ref, rm, tok, prompts, seed: int, cfg, device) -> dict[str, list]:
    """Sample once per prompt at a fixed seed; RM score, gold score and KL to the reference."""
    from models.generation import decode_responses, response_logits, sample, token_logprobs
    from tasks.ppo import reward_scores

    torch.manual_seed(seed)
    s = sample(policy, tok, prompts, cfg.max_new_tokens, cfg.temperature, device)
    mask = s.response_mask.float()
    lp = token_logprobs(response_logits(policy, s), s.response_ids, cfg.temperature)
    ref_lp = token_logprobs(response_logits(ref, s), s.response_ids, cfg.temperature)
    texts = decode_responses(tok, s)
    return {"prompt": prompts, "response": texts, "rm": reward_scores(rm, s, tok.pad_token_id).tolist(),
            "gold": gold_scores(prompts, texts), "kl": ((lp - ref_lp) * mask).sum(1).tolist(),
            "length": mask.sum(1).tolist(), "ended": s.has_eos.tolist()}


def label_gold_agreement(pairs: pd.DataFrame) -> float | None:
    """How often the annotators' choice agrees with the gold judge on the test pairs: the
    ceiling a reward model can reach on these noisy labels (ties count one half)."""
    test = pairs[pairs["split"] == "test"]
    chosen = gold_scores(test["prompt"].tolist(), test["chosen"].tolist())
    rejected = gold_scores(test["prompt"].tolist(), test["rejected"].tolist())
    if not chosen or any(math.isnan(x) for x in chosen):
        return None
    return win_rate(chosen, rejected)


def promote(model: dict) -> None:
    from mlflow import MlflowClient

    MlflowClient().set_registered_model_alias(model["name"], "champion", model["version"])


def run(ctx: StageContext) -> dict:
    from models.lm import load_causal_lm, start_run
    from models.tokenizer import load_tokenizer
    from transformers import AutoModelForSequenceClassification

    cfg, settings = ctx.settings.evaluate, ctx.settings
    device = start_run(settings.seed, settings.device)
    tok = load_tokenizer(str(ctx.input("sft", "model")))
    sft = load_causal_lm(ctx.input("sft", "model"), tok).to(device).eval()
    ppo = load_causal_lm(ctx.input("ppo", "model"), tok).to(device).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(ctx.input("reward", "model"))
    rm = rm.to(device).eval()
    ctx.log_dataset("ingest", "prompts_eval.parquet", context="evaluation")
    prompts = pd.read_parquet(ctx.input("ingest", "prompts_eval.parquet"))["prompt"].tolist()

    frames = []
    for k in range(cfg.samples_per_prompt):
        seed = settings.seed + 1000 + k  # the same seed for both policies: paired samples
        for name, model in (("sft", sft), ("ppo", ppo)):
            rows = sample_and_score(model, sft, rm, tok, prompts, seed, cfg, device)
            frames.append(pd.DataFrame({"policy": name, "seed": seed, **rows}))
    samples = pd.concat(frames, ignore_index=True)
    samples.to_csv(ctx.out / "samples.csv", index=False)

    by = {name: g.reset_index(drop=True) for name, g in samples.groupby("policy")}
    s, p = by["sft"], by["ppo"]
    pairs = pd.read_parquet(ctx.input("feedback", "pairs.parquet"))
    metrics = {
        "gold_score_sft": mean(s["gold"].tolist()), "gold_score_ppo": mean(p["gold"].tolist()),
        "gold_win_rate_ppo_vs_sft": (win_rate(p["gold"].tolist(), s["gold"].tolist())
                                     if not p["gold"].isna().any() else None),
        "rm_score_sft": mean(s["rm"].tolist()), "rm_score_ppo": mean(p["rm"].tolist()),
        "rm_win_rate_ppo_vs_sft": win_rate(p["rm"].tolist(), s["rm"].tolist()),
        "kl_ppo_vs_ref": mean(p["kl"].tolist()),
        "rm_accuracy": ctx.upstream_record("reward")["metrics"]["accuracy"],
        "label_gold_agreement": label_gold_agreement(pairs),
        "length_sft": mean(s["length"].tolist()), "length_ppo": mean(p["length"].tolist()),
        "eos_rate_ppo": float(p["ended"].mean()), "eval_prompts": len(prompts),
        "samples_per_prompt": cfg.samples_per_prompt,
    }
    promote(ctx.upstream_record("ppo")["model"])
    metrics["champion_version"] = int(ctx.upstream_record("ppo")["model"]["version"])
    return metrics
