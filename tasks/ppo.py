"""Stage 6, ppo: PPO against the reward model with the frozen SFT model as reference.

One iteration, in the order it runs:
  1. rollout  sample responses to a batch of prompts (left padding, KV cache, temperature)
  2. score    RM score at EOS, normalised by the mean/std of scores on reference samples;
              a fixed penalty replaces the score of a response that never emitted EOS
  3. no-grad  old logprobs and values (policy) and reference logprobs, logits / temperature
  4. rewards  -beta * per-token KL, plus the score at the last real token; GAE; whitening
  5. update   several epochs of minibatches: clipped policy loss + clipped value loss
  6. KL       the controller adapts beta towards the target KL
Checkpoints every `checkpoint_every` iterations make the stage resumable after a crash;
snapshots of the policy every `snapshot_every` iterations let the evaluation plot gold and RM
score against KL (over-optimisation shows there); history.csv holds the per-iteration stats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from tasks.runner import StageContext
from tasks.settings import PPO

TIMINGS = ("rollout_s", "update_s", "generated_tokens_per_s", "samples_per_s")  # not in history.csv


@dataclass
class Rollout:
    samples: object  # models.generation.Samples
    old_logprobs: torch.Tensor  # [B, R]
    old_values: torch.Tensor  # [B, R]
    advantages: torch.Tensor  # [B, R] whitened
    returns: torch.Tensor  # [B, R]
    stats: dict


@torch.no_grad()
def reward_scores(rm, samples, pad_id: int) -> torch.Tensor:
    from models.generation import repack_right
    from models.reward import scores

    return scores(rm, *repack_right(samples, pad_id))


@torch.no_grad()
def reference_stats(ref, rm, tok, prompts: list[str], cfg: PPO, device) -> tuple[float, float]:
    """Mean and std of RM scores on the reference policy's own samples: the scale PPO's
    scores are normalised to, so beta and the no-EOS penalty mean the same for any RM."""
    from models.generation import sample

    s = sample(ref, tok, prompts, cfg.max_new_tokens, cfg.temperature, device)
    sc = reward_scores(rm, s, tok.pad_token_id)
    return sc.mean().item(), sc.std().clamp(min=1e-6).item()


@torch.no_grad()
def collect(policy, ref, rm, tok, prompts, cfg: PPO, beta: float, norm: tuple[float, float],
            device) -> Rollout:
    """Steps 1-4: sample, score, evaluate old/ref logprobs and values, compute advantages."""
    from models.generation import entropy, response_logits, sample, token_logprobs
    from models.lm import autocast
    from models.ppo import gae, kl_rewards, masked_mean, masked_whiten

    policy.eval()
    s = sample(policy.lm, tok, prompts, cfg.max_new_tokens, cfg.temperature, device)
    mask = s.response_mask.float()
    raw = reward_scores(rm, s, tok.pad_token_id)
    score = (raw - norm[0]) / norm[1]
    score = torch.where(s.has_eos, score, torch.full_like(score, cfg.no_eos_penalty))
    with autocast(device):
        logits, values = policy(**s.model_inputs())
        ref_logits = response_logits(ref, s)
    logits, values = s.response_part(logits).float(), s.response_part(values).float()
    old_logprobs = token_logprobs(logits, s.response_ids, cfg.temperature)
    ref_logprobs = token_logprobs(ref_logits, s.response_ids, cfg.temperature)
    rewards, kl = kl_rewards(score, old_logprobs, ref_logprobs, mask, beta)
    advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    stats = {
        "rm_score_raw": raw.mean().item(), "score": score.mean().item(),
        "non_score_reward": (-beta * kl).sum(1).mean().item(), "kl": kl.sum(1).mean().item(),
        "entropy": masked_mean(entropy(logits, cfg.temperature), mask).item(),
        "response_length": mask.sum(1).mean().item(),
        "no_eos_fraction": (~s.has_eos).float().mean().item(),
        "generated_tokens": int(mask.sum().item()),
    }
    return Rollout(s, old_logprobs, values * mask, masked_whiten(advantages, mask), returns, stats)


def update(policy, opt, ro: Rollout, cfg: PPO, device) -> dict:
    """Step 5: ppo_epochs passes of shuffled minibatches over one rollout."""
    from models.generation import token_logprobs
    from models.lm import autocast
    from models.ppo import explained_variance, policy_loss, value_loss

    policy.train()
    n = len(ro.samples.response_ids)
    totals = {"pg_loss": 0.0, "vf_loss": 0.0, "clipfrac": 0.0, "approx_kl": 0.0}
    steps = 0
    for _ in range(cfg.ppo_epochs):
        for idx in torch.randperm(n).split(cfg.minibatch_size):
            idx = idx.to(device)
            s = ro.samples.select(idx)
            mask = s.response_mask.float()
            with autocast(device):
                logits, values = policy(**s.model_inputs())
            logprobs = token_logprobs(s.response_part(logits).float(), s.response_ids, cfg.temperature)
            values = s.response_part(values).float()
            pg, clipfrac, approx_kl = policy_loss(logprobs, ro.old_logprobs[idx],
                                                  ro.advantages[idx], mask, cfg.cliprange)
            vf = value_loss(values, ro.old_values[idx], ro.returns[idx], mask, cfg.cliprange_value)
            loss = pg + cfg.vf_coef * vf
            if not torch.isfinite(loss):
                raise FloatingPointError("non-finite PPO loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
            opt.step()
            for k, v in zip(totals, (pg, vf, clipfrac, approx_kl)):
                totals[k] += v.item()
            steps += 1
    policy.eval()
    stats = {k: v / steps for k, v in totals.items()}
    stats["explained_variance"] = explained_variance(ro.old_values, ro.returns,
                                                     ro.samples.response_mask.float())
    return stats


def save_checkpoint(path: Path, **state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def save_snapshot(folder: Path, iteration: int, policy) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".iter-{iteration:05d}.tmp"
    torch.save(policy.lm.state_dict(), tmp)
    tmp.replace(folder / f"iter-{iteration:05d}.pt")


def run(ctx: StageContext) -> dict:
    import shutil

    from transformers import AutoModelForSequenceClassification

    from models.lm import load_causal_lm, start_run
    from models.ppo import KLController, PolicyWithValue
    from models.tokenizer import load_tokenizer

    cfg, settings = ctx.settings.ppo, ctx.settings
    device = start_run(settings.seed, settings.device)

    sft_dir = str(ctx.input("sft", "model"))
    tok = load_tokenizer(sft_dir)
    policy = PolicyWithValue(load_causal_lm(sft_dir, tok)).to(device)
    ref = load_causal_lm(sft_dir, tok).to(device).eval().requires_grad_(False)
    rm = AutoModelForSequenceClassification.from_pretrained(ctx.input("reward", "model"))
    rm = rm.to(device).eval().requires_grad_(False)
    ctx.log_dataset("ingest", "prompts_train.parquet")
    prompts = pd.read_parquet(ctx.input("ingest", "prompts_train.parquet"))["prompt"].tolist()

    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, eps=1e-5)
    kl_ctl = KLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    norm = reference_stats(ref, rm, tok, prompts[: cfg.reference_samples], cfg, device)

    # A crashed run leaves its checkpoint here; a rerun with the same cache key resumes it.
    work = settings.path(settings.paths.artifacts, ".work", "ppo")
    ckpt_path, snapshots = work / "checkpoint.pt", work / "snapshots"
    key = ctx.cache_key
    start, history = 0, []
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False)
        if state["cache_key"] == key:
            policy.load_state_dict(state["policy"])
            opt.load_state_dict(state["optimizer"])
            kl_ctl.load_state_dict(state["kl"])
            torch.set_rng_state(state["rng"])
            if state["cuda_rng"] is not None:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            norm, start, history = state["norm"], state["iteration"], state["history"]
            print(f"ppo: resuming from iteration {start}")
    if start == 0:
        shutil.rmtree(snapshots, ignore_errors=True)  # from another run

    for it in range(start, cfg.iterations):
        t0 = time.perf_counter()
        batch = [prompts[i] for i in torch.randperm(len(prompts))[: cfg.rollout_batch_size]]
        ro = collect(policy, ref, rm, tok, batch, cfg, kl_ctl.beta, norm, device)
        t1 = time.perf_counter()
        stats = {**ro.stats, **update(policy, opt, ro, cfg, device), "beta": kl_ctl.beta}
        t2 = time.perf_counter()
        kl_ctl.update(ro.stats["kl"], len(batch))
        stats |= {"rollout_s": t1 - t0, "update_s": t2 - t1,
                  "generated_tokens_per_s": ro.stats["generated_tokens"] / (t1 - t0),
                  "samples_per_s": len(batch) / (t2 - t0)}
        ctx.log_metrics(stats, it)
        history.append(stats)
        print(f"ppo {it + 1:>4}/{cfg.iterations}  score {stats['score']:+.3f}  "
              f"kl {stats['kl']:.2f}  beta {kl_ctl.beta:.3f}  len {stats['response_length']:.1f}")
        if (it + 1) % cfg.snapshot_every == 0 and it + 1 < cfg.iterations:
            save_snapshot(snapshots, it + 1, policy)
        if (it + 1) % cfg.checkpoint_every == 0 and it + 1 < cfg.iterations:
            save_checkpoint(ckpt_path, cache_key=key, policy=policy.state_dict(),
                            optimizer=opt.state_dict(), kl=kl_ctl.state_dict(),
                            rng=torch.get_rng_state(),
                            cuda_rng=torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                            norm=norm, iteration=it + 1, history=history)

    policy.lm.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    torch.save(policy.v_head.state_dict(), ctx.out / "value_head.pt")
    pd.DataFrame([{k: v for k, v in h.items() if k not in TIMINGS} for h in history],
                 index=pd.RangeIndex(1, len(history) + 1, name="iteration")).to_csv(
        ctx.out / "history.csv")
    save_snapshot(snapshots, cfg.iterations, policy)
    shutil.move(snapshots, ctx.out / "snapshots")
    ckpt_path.unlink(missing_ok=True)
    ctx.register(ctx.out / "model", "policy", parent=ctx.upstream_record("sft")["model"]["uri"],
                 reward_model=ctx.upstream_record("reward")["model"]["uri"])
    last = history[-max(1, len(history) // 10):]
    return {"iterations": cfg.iterations, "resumed_from": start,
            "reference_score_mean": norm[0], "reference_score_std": norm[1],
            **{f"final_{k}": sum(h[k] for h in last) / len(last)
               for k in ("score", "kl", "response_length", "no_eos_fraction")}}
