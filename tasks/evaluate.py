"""Stage 7, evaluate: should the new policy replace the champion? The evidence, and the decision.

In the order it runs:
  1. sample    the reference (SFT), the new policy and the registry's current champion on the
               held-out prompts, with the same seeds and decoding settings (paired samples;
               sampling, not greedy: greedy decoding of small models loops)
  2. score     reward model, gold judge (demo prompts only), KL to the reference, length,
               distinct-n; perplexity of each policy on the SFT stage's held-out responses
  3. compare   win rates with 95% bootstrap intervals: new vs reference, new vs champion
  4. curve     gold and RM score against KL across PPO's snapshots (over-optimisation check)
  5. report    samples.csv, score_vs_kl.csv, plots/*.png, report.md, metrics.json; the plots
               and report go to MLflow too
  6. decide    the promotion rules (tasks/registry.py): `challenger` always, `champion` if won
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tasks.evaluation.stats import distinct_n, mean, win_rate, win_rate_interval, wins
from tasks.runner import StageContext


def gold_scores(prompts: list[str], responses: list[str]) -> list[float]:
    """The demo's gold judge where the prompt is one of its prompts, NaN elsewhere."""
    from tasks.demo import gold_score, parse_prompt

    return [gold_score(p, r) if parse_prompt(p) else math.nan for p, r in zip(prompts, responses)]


@torch.no_grad()
def sample_and_score(policy, ref, rm, tok, prompts, seed: int, cfg, device) -> dict[str, list]:
    """Sample once per prompt at a fixed seed; RM score, gold score and KL to the reference."""
    from models.generation import decode_responses, response_logits, sample, token_logprobs
    from models.reward import sample_scores

    torch.manual_seed(seed)
    s = sample(policy, tok, prompts, cfg.max_new_tokens, cfg.temperature, device)
    mask = s.response_mask.float()
    lp = token_logprobs(response_logits(policy, s), s.response_ids, cfg.temperature)
    ref_lp = token_logprobs(response_logits(ref, s), s.response_ids, cfg.temperature)
    texts = decode_responses(tok, s)
    return {"prompt": prompts, "response": texts, "rm": sample_scores(rm, s, tok.pad_token_id).tolist(),
            "gold": gold_scores(prompts, texts), "kl": ((lp - ref_lp) * mask).sum(1).tolist(),
            "length": mask.sum(1).tolist(), "ended": s.has_eos.tolist()}


def sample_policies(policies: dict, ref, rm, tok, prompts, seeds: list[int], cfg,
                    device) -> pd.DataFrame:
    """One row per (policy, seed, prompt), in that order for every policy."""
    frames = [pd.DataFrame({"policy": name, "seed": seed,
                            **sample_and_score(model, ref, rm, tok, prompts, seed, cfg, device)})
              for seed in seeds for name, model in policies.items()]
    return pd.concat(frames, ignore_index=True)


def per_prompt(samples: pd.DataFrame, policy: str, column: str) -> np.ndarray:
    """[P, K] scores of one policy: prompts by row, seeds by column (the pairing order)."""
    rows = samples[samples["policy"] == policy]
    return rows.pivot(index="prompt", columns="seed", values=column).to_numpy(float)


def policy_metrics(samples: pd.DataFrame, policy: str) -> dict:
    rows = samples[samples["policy"] == policy]
    texts = rows["response"].tolist()
    return {f"gold_score_{policy}": mean(rows["gold"]), f"rm_score_{policy}": mean(rows["rm"]),
            f"kl_{policy}_vs_ref": mean(rows["kl"]), f"length_{policy}": mean(rows["length"]),
            f"eos_rate_{policy}": float(rows["ended"].mean()),
            f"distinct_1_{policy}": distinct_n(texts, 1), f"distinct_2_{policy}": distinct_n(texts, 2)}


def win_rates(samples: pd.DataFrame, other: str, resamples: int, seed: int) -> dict:
    """The new policy's win rate against `other`, by each judge that scored every sample."""
    out = {}
    for judge in ("rm", "gold"):
        new, base = per_prompt(samples, "ppo", judge), per_prompt(samples, other, judge)
        if np.isnan(new).any() or np.isnan(base).any():
            out[f"{judge}_win_rate_ppo_vs_{other}"] = None
            continue
        rate, lo, hi = win_rate_interval(wins(new, base), resamples, seed)
        key = f"{judge}_win_rate_ppo_vs_{other}"
        out |= {key: rate, f"{key}_lower": lo, f"{key}_upper": hi}
    return out


def perplexity(model, tok, heldout: pd.DataFrame, device) -> float:
    """Perplexity of the responses (with their EOS) of the SFT stage's held-out rows."""
    from models.batching import examples_rows, response_loss

    rows = examples_rows(tok, heldout, model.config.max_position_embeddings).rows
    return math.exp(response_loss(model, rows, tok.pad_token_id, device))


def score_vs_kl(snapshots: Path, ref, rm, tok, prompts, seeds, cfg, device,
                ref_samples: pd.DataFrame) -> pd.DataFrame:
    """Mean KL, RM and gold score of each PPO snapshot (iteration 0: the reference itself,
    whose samples are already in ref_samples)."""
    def point(iteration: int, rows: pd.DataFrame) -> dict:
        gold = mean(rows["gold"])
        return {"iteration": iteration, "kl": mean(rows["kl"]), "rm": mean(rows["rm"]),
                "gold": math.nan if gold is None else gold}

    points = [point(0, ref_samples)]
    model = copy.deepcopy(ref)  # snapshots are the policy's weights: same architecture
    for path in sorted(snapshots.glob("iter-*.pt")):
        model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        rows = sample_policies({"snapshot": model}, ref, rm, tok, prompts, seeds, cfg, device)
        points.append(point(int(path.stem.removeprefix("iter-")), rows))
    return pd.DataFrame(points)


def label_gold_agreement(pairs: pd.DataFrame) -> float | None:
    """How often the annotators' choice agrees with the gold judge on the test pairs: the
    ceiling a reward model can reach on these noisy labels (ties count one half)."""
    test = pairs[pairs["split"] == "test"]
    chosen = gold_scores(test["prompt"].tolist(), test["chosen"].tolist())
    rejected = gold_scores(test["prompt"].tolist(), test["rejected"].tolist())
    if not chosen or any(math.isnan(x) for x in chosen):
        return None
    return win_rate(chosen, rejected)


def load_registered_lm(name: str, version: str, tok, folder: Path):
    """A registered policy's weights (mlflow.transformers layout: model/ holds them)."""
    import mlflow

    from models.lm import load_causal_lm

    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                dst_path=str(folder))
    return load_causal_lm(Path(local) / "model", tok)


def write_plots(out: Path, history: pd.DataFrame, curve: pd.DataFrame, metrics: dict) -> None:
    from tasks.evaluation import plots
    from tasks.evaluation.report import comparisons

    out.mkdir()
    plots.training_curves(history, out / "training_curves.png")
    plots.score_vs_kl(curve, out / "score_vs_kl.png")
    plots.win_rates(comparisons(metrics), out / "win_rates.png")


def run(ctx: StageContext) -> dict:
    import mlflow
    from transformers import AutoModelForSequenceClassification

    from models.lm import load_causal_lm, start_run
    from models.tokenizer import load_tokenizer
    from tasks.evaluation.report import markdown
    from tasks.registry import CHAMPION, alias_version, decide, record_decision

    cfg, settings = ctx.settings.evaluate, ctx.settings
    device = start_run(settings.seed, settings.device)
    tok = load_tokenizer(str(ctx.input("sft", "model")))
    sft = load_causal_lm(ctx.input("sft", "model"), tok).to(device).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(ctx.input("reward", "model"))
    rm = rm.to(device).eval()
    ctx.log_dataset("ingest", "prompts_eval.parquet", context="evaluation")
    prompts = pd.read_parquet(ctx.input("ingest", "prompts_eval.parquet"))["prompt"].tolist()
    new = ctx.upstream_record("ppo")["model"]
    champion = alias_version(new["name"], CHAMPION)
    policies = {"sft": sft, "ppo": load_causal_lm(ctx.input("ppo", "model"), tok)}

    with tempfile.TemporaryDirectory() as tmp:
        if champion not in (None, new["version"]):
            policies["champion"] = load_registered_lm(new["name"], champion, tok, Path(tmp))
        policies = {k: m.to(device).eval() for k, m in policies.items()}
        seeds = [settings.seed + 1000 + k for k in range(cfg.samples_per_prompt)]
        samples = sample_policies(policies, sft, rm, tok, prompts, seeds, cfg, device)
        heldout = pd.read_parquet(ctx.input("sft", "heldout.parquet"))
        metrics = {}
        for name, model in policies.items():
            metrics |= policy_metrics(samples, name)
            metrics[f"perplexity_{name}"] = perplexity(model, tok, heldout, device)
            if name != "ppo":
                metrics |= win_rates(samples, name, cfg.bootstrap_resamples, settings.seed)
    curve = score_vs_kl(ctx.input("ppo", "snapshots"), sft, rm, tok, prompts, seeds, cfg, device,
                        samples[samples["policy"] == "sft"])

    pairs = pd.read_parquet(ctx.input("feedback", "pairs.parquet"))
    metrics |= {"rm_accuracy": ctx.upstream_record("reward")["metrics"]["accuracy"],
                "label_gold_agreement": label_gold_agreement(pairs),
                "eval_prompts": len(prompts), "samples_per_prompt": cfg.samples_per_prompt,
                "policy_version": int(new["version"])}
    if "champion" in policies:
        metrics["champion_version_compared"] = int(champion)
    decision = decide(metrics, settings.promotion, new["version"], champion)

    samples.to_csv(ctx.out / "samples.csv", index=False)
    curve.to_csv(ctx.out / "score_vs_kl.csv", index=False)
    write_plots(ctx.out / "plots", pd.read_csv(ctx.input("ppo", "history.csv"), index_col=0),
                curve, metrics)
    (ctx.out / "report.md").write_text(
        markdown(metrics, new["uri"], decision.verdict, decision.reasons, samples), encoding="utf-8")
    mlflow.log_artifacts(str(ctx.out / "plots"), "plots")
    for name in ("report.md", "samples.csv", "score_vs_kl.csv"):
        mlflow.log_artifact(str(ctx.out / name))

    record_decision(new["name"], new["version"], decision, metrics, champion,
                    f"evaluate run {ctx.run_id}")
    metrics |= {"promoted": decision.promote, "decision": decision.verdict,
                "champion_version": int(alias_version(new["name"], CHAMPION))}
    return metrics
