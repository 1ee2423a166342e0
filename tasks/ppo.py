"""Stage 7, ppo: PPO against the reward model with the SFT model as reference.

The iteration itself is models/ppo_step.py (rollout, score, no-grad passes, GAE, update);
this stage owns what surrounds it, in the order it runs:
  setup     seeds (sampling per process, prompt batches shared), policy + value head, the
            reference (frozen copy or LoRA adapter off), the reward model and its
            normalisation (saved by the reward stage)
  resume    from the last checkpoint of a run with the same cache key and process count
  loop      collect -> guard -> update -> KL controller -> log (MLflow, progress, samples)
  guard     a bad rollout (non-finite, KL above max_kl) or a non-finite gradient restores
            the last good state and retries; max_unstable in a row stop the run
  select    the snapshot the judge (the evaluation reward models) scores best within the
            KL budget (rlhf.core.evaluation.selection): early stopping by a judge the policy
            was not trained to please
  save      that snapshot as a plain transformers checkpoint, all of them for the evaluation
Run under `torchrun --nproc_per_node N -m rlhf.flows.cli stage ppo` it trains with DDP: each
process samples rollout_batch_size / N prompts; rank 0 logs, saves and registers.
"""

from __future__ import annotations

import copy
import pickle
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from peft import LoraConfig, get_peft_model
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from transformers import AutoModelForSequenceClassification

from rlhf.core.context import StageContext
from rlhf.core.evaluation.sampling import JUDGE, Bench
from rlhf.core.evaluation.selection import SNAPSHOT, best_snapshot
from rlhf.core.settings import PPO, UserError
from rlhf.models.distributed import from_env
from rlhf.models.generation import decode_responses
from rlhf.models.lm import load_causal_lm, start_run
from rlhf.models.ppo import KLController, PolicyWithValue
from rlhf.models.ppo_step import Actors, Unstable, collect, update
from rlhf.models.reward import read_score_stats, sample_scores
from rlhf.models.tokenizer import load_tokenizer

TIMINGS = ("rollout_s", "update_s", "generated_tokens_per_s", "samples_per_s")  # not in history.csv
SAMPLE_ROWS = 4  # responses per table of samples


def build_policy(sft_dir: str, tok, cfg: PPO, device):
    """(policy with value head, reference or None). With reference `lora` only the adapter
    and the value head train, and the reference is the policy with its adapter off."""
    lm = load_causal_lm(sft_dir, tok)
    ref = None
    if cfg.reference == "lora":
        lm = get_peft_model(
            lm,
            LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha,
                target_modules="all-linear",
                lora_dropout=0.0,
            ),
        )
    else:
        ref = load_causal_lm(sft_dir, tok).to(device).eval().requires_grad_(False)
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return PolicyWithValue(lm).to(device), ref


def plain_lm(policy):
    """The policy's language model as plain transformers weights (a LoRA adapter merged in,
    on a copy: training goes on with the adapter)."""
    if not hasattr(policy.lm, "merge_and_unload"):
        return policy.lm
    return copy.deepcopy(policy.lm).merge_and_unload()


class LastGood:
    """The training state before the latest update, kept in memory to undo it."""

    def __init__(self, policy, opt, kl_ctl):
        self.parts = policy, opt, kl_ctl
        self.keep()

    def keep(self) -> None:
        self.states = [copy.deepcopy(p.state_dict()) for p in self.parts]

    def restore(self) -> None:
        for part, state in zip(self.parts, self.states):
            part.load_state_dict(copy.deepcopy(state))


def rollout_problem(stats: dict, cfg: PPO) -> str | None:
    """Why a rollout (stats averaged over processes, so every process agrees) must not train."""
    bad = [k for k in ("score", "kl", "entropy") if not torch.isfinite(torch.tensor(stats[k]))]
    if bad:
        return f"non-finite {', '.join(bad)} in the rollout"
    if stats["kl"] > cfg.max_kl:
        return f"KL {stats['kl']:.2f} above ppo.max_kl {cfg.max_kl}"
    return None


def sample_table(tok, batch: list[str], ro, iteration: int) -> pd.DataFrame:
    n = min(SAMPLE_ROWS, len(batch))
    responses = decode_responses(tok, ro.samples.select(torch.arange(n, device=ro.kl.device)))
    return pd.DataFrame(
        {
            "iteration": iteration,
            "prompt": batch[:n],
            "response": responses,
            "rm_score": ro.raw_scores[:n].tolist(),
            "kl": ro.kl[:n].tolist(),
            "ended": ro.samples.has_eos[:n].tolist(),
        }
    )


def save_checkpoint(path: Path, **state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path) -> dict | None:
    """The checkpoint a crashed run left, loaded as tensors and plain values only (no pickled
    code runs); None, and a fresh start, when it is not one this stage wrote."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")  # RNG states stay CPU
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        print(
            f"ppo: {path}: not a usable checkpoint ({type(e).__name__}); starting over",
            file=sys.stderr,
        )
        return None


def save_snapshot(folder: Path, iteration: int, policy) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".iter-{iteration:05d}.tmp"
    torch.save(plain_lm(policy).state_dict(), tmp)
    tmp.replace(folder / SNAPSHOT.format(iteration))


def rng_state(device) -> dict:
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_state(state: dict, device) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def progress_line(it: int, cfg: PPO, stats: dict, beta: float) -> str:
    return (
        f"ppo {it:>4}/{cfg.iterations}  score {stats['score']:+.3f}  kl {stats['kl']:.2f}  "
        f"beta {beta:.3f}  len {stats['response_length']:.1f}  "
        f"{stats['generated_tokens_per_s']:.0f} tok/s"
    )


def run(ctx: StageContext) -> dict:
    # -- setup -----------------------------------------------------------------------------
    cfg, settings = ctx.settings.ppo, ctx.settings
    dist = from_env(start_run(settings.seed, settings.device))
    device = dist.device
    if cfg.rollout_batch_size % cfg.minibatch_size or cfg.minibatch_size % dist.world:
        raise UserError(
            f"ppo: rollout_batch_size {cfg.rollout_batch_size} must be a multiple "
            f"of minibatch_size {cfg.minibatch_size}, and that of the {dist.world} "
            "processes"
        )
    torch.manual_seed(settings.seed + dist.rank)  # each process samples its own responses
    batches = torch.Generator().manual_seed(settings.seed)  # the same prompt batches everywhere

    sft_dir = str(ctx.input("sft", "model"))
    tok = load_tokenizer(sft_dir)
    policy, ref = build_policy(sft_dir, tok, cfg, device)
    trained = DistributedDataParallel(policy) if dist.world > 1 else policy
    if cfg.compile:
        trained = torch.compile(trained, dynamic=True)  # prompt widths change every rollout
    rm = AutoModelForSequenceClassification.from_pretrained(ctx.input("reward", "model"))
    score_fn = partial(
        sample_scores, rm.to(device).eval().requires_grad_(False), pad_id=tok.pad_token_id
    )
    ctx.log_dataset("ingest", "prompts_train.parquet")
    prompts = pd.read_parquet(ctx.input("ingest", "prompts_train.parquet"))["prompt"].tolist()

    opt = torch.optim.AdamW(
        [p for p in policy.parameters() if p.requires_grad], lr=cfg.lr, eps=1e-5
    )
    kl_ctl = KLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)
    # the RM's mean/std on the SFT model's samples: beta and the no-EOS penalty then mean
    # the same for any reward model
    norm = read_score_stats(ctx.input("reward", "model"))

    # -- resume: a crashed run leaves its checkpoint; a rerun with the same key continues ----
    ckpt_path, snapshots = ctx.checkpoints / "checkpoint.pt", ctx.checkpoints / "snapshots"
    start, history, events = 0, [], []
    state = read_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if state is not None and len(state["rng"]) == dist.world:
        policy.load_state_dict(state["policy"])
        opt.load_state_dict(state["optimizer"])
        kl_ctl.load_state_dict(state["kl"])
        set_rng_state(state["rng"][dist.rank], device)
        batches.set_state(state["batches"])
        start, history, events = state["iteration"], state["history"], state["events"]
        if dist.main:
            print(f"ppo: resuming from iteration {start}", file=sys.stderr)
    if start == 0 and dist.main:
        shutil.rmtree(snapshots, ignore_errors=True)  # of a run with another process count

    # -- loop --------------------------------------------------------------------------------
    actors = Actors(policy=policy, ref=ref, score=score_fn, tok=tok)
    last_good, unstable = LastGood(policy, opt, kl_ctl), 0
    bar = tqdm(
        total=cfg.iterations,
        initial=start,
        desc="ppo",
        unit="it",
        dynamic_ncols=True,
        disable=not (dist.main and sys.stderr.isatty()),
    )
    it, started = start, time.perf_counter()
    while it < cfg.iterations:
        t0 = time.perf_counter()
        order = torch.randperm(len(prompts), generator=batches)[: cfg.rollout_batch_size]
        batch = [prompts[i] for i in order[dist.rank :: dist.world]]
        ro = collect(actors, batch, cfg, beta=kl_ctl.beta, norm=norm, device=device, dist=dist)
        t1 = time.perf_counter()
        rollout = dist.mean({**ro.stats, "generated_tokens": float(ro.samples.response_mask.sum())})
        problem = rollout_problem(rollout, cfg)
        if problem is None:
            last_good.keep()
            try:
                learned = dist.mean(update(trained, opt, ro, cfg, device=device, dist=dist))
            except Unstable as e:
                problem = str(e)
        if problem is not None:  # undo, record, and try the iteration again with new samples
            last_good.restore()
            unstable += 1
            events.append({"iteration": it + 1, "problem": problem})
            ctx.log_metrics({"unstable_events": len(events)}, it)
            print(
                f"ppo: iteration {it + 1}: {problem}; restored the state before the last "
                f"update ({unstable} in a row)",
                file=sys.stderr,
            )
            if unstable >= cfg.max_unstable:
                raise UserError(
                    f"ppo: stopped after {unstable} unstable iterations in a row at "
                    f"iteration {it + 1} (last: {problem}); lower ppo.lr or raise "
                    "ppo.kl_coef"
                )
            continue
        unstable = 0
        t2 = time.perf_counter()
        stats = {**rollout, **learned, "beta": kl_ctl.beta}
        kl_ctl.update(rollout["kl"], cfg.rollout_batch_size)
        stats |= {
            "rollout_s": t1 - t0,
            "update_s": t2 - t1,
            "generated_tokens_per_s": stats.pop("generated_tokens") * dist.world / (t1 - t0),
            "samples_per_s": cfg.rollout_batch_size / (t2 - t0),
        }
        it += 1
        history.append(stats)
        ctx.log_metrics(stats, it - 1)
        bar.update()
        bar.set_postfix(
            score=f"{stats['score']:+.3f}",
            kl=f"{stats['kl']:.2f}",
            tok_s=f"{stats['generated_tokens_per_s']:.0f}",
        )
        if dist.main and bar.disable and (it % max(1, cfg.iterations // 10) == 0):
            print(progress_line(it, cfg, stats, kl_ctl.beta), file=sys.stderr)
        if dist.main and it % cfg.samples_every == 0:
            ctx.log_table(sample_table(tok, batch, ro, it), "ppo_samples.json")
        if dist.main and it % cfg.snapshot_every == 0 and it < cfg.iterations:
            save_snapshot(snapshots, it, policy)
        if it % cfg.checkpoint_every == 0 and it < cfg.iterations:
            rngs = dist.gather(rng_state(device))  # every process's, so each resumes its own
            if dist.main:
                save_checkpoint(
                    ckpt_path,
                    policy=policy.state_dict(),
                    optimizer=opt.state_dict(),
                    kl=kl_ctl.state_dict(),
                    rng=rngs,
                    batches=batches.get_state(),
                    iteration=it,
                    history=history,
                    events=events,
                )
    bar.close()

    # -- save ----------------------------------------------------------------------------------
    checksums = dist.gather(sum(p.double().sum().item() for p in policy.parameters()))
    if len(set(checksums)) > 1:
        raise RuntimeError(f"ppo: processes ended with different weights: {checksums}")
    seconds = time.perf_counter() - started
    last = history[-max(1, len(history) // 10) :]
    metrics = {
        "iterations": cfg.iterations,
        "resumed_from": start,
        "processes": dist.world,
        "unstable_events": len(events),
        "reference_score_mean": norm[0],
        "reference_score_std": norm[1],
        **{
            f"final_{k}": sum(h[k] for h in last) / len(last)
            for k in ("score", "kl", "response_length", "no_eos_fraction")
        },
    }
    if not dist.main:
        return metrics
    done = history[start:]
    rollout_s, update_s = (sum(h[k] for h in done) for k in ("rollout_s", "update_s"))
    print(
        f"ppo: {len(done)} iterations in {seconds:.0f} s (rollout {rollout_s:.0f} s, update "
        f"{update_s:.0f} s); score {metrics['final_score']:+.3f}, KL {metrics['final_kl']:.2f}, "
        f"{len(events)} unstable iterations undone",
        file=sys.stderr,
    )
    save_snapshot(snapshots, cfg.iterations, policy)
    # -- select: the judge's best snapshot within the KL budget, not the last iteration -------
    bench = Bench.load(settings, device, cfg.max_new_tokens, cfg.temperature, with_reference=False)
    chosen, why, curve = best_snapshot(snapshots, bench, prompts, settings.judge, settings.seed)
    print(f"ppo: policy = {why}", file=sys.stderr)
    curve.to_csv(ctx.out / "selection.csv", index=False)
    metrics |= {
        "selected_iteration": chosen,
        **{
            f"selected_{k}": float(curve.loc[curve["chosen"], k].iloc[0])
            for k in ("kl", "rm", JUDGE)
        },
    }
    lm = plain_lm(policy)
    lm.load_state_dict(torch.load(snapshots / SNAPSHOT.format(chosen), weights_only=True))
    lm.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    pd.DataFrame(
        [{k: v for k, v in h.items() if k not in TIMINGS} for h in history],
        index=pd.RangeIndex(1, len(history) + 1, name="iteration"),
    ).to_csv(ctx.out / "history.csv")
    shutil.move(snapshots, ctx.out / "snapshots")
    ctx.register(
        ctx.out / "model",
        "policy",
        parent=ctx.upstream_record("sft")["model"]["uri"],
        reward_model=ctx.upstream_record("reward")["model"]["uri"],
        selected=why,
    )
    return metrics
