"""The loop every online policy method shares, in the order it runs; the method (PPO, a group
baseline) brings its rollout and its update as a Learner.

  resume    from the last checkpoint of a run with the same cache key and process count
  loop      collect -> guard -> update -> after (e.g. the KL controller) -> log (MLflow,
            progress, samples) -> snapshot -> checkpoint
  guard     a bad rollout (non-finite, KL above max_kl) or a non-finite gradient restores
            the last good state and retries; max_unstable in a row stop the run
  select    the snapshot the judge (the evaluation reward models) scores best within the
            KL budget (rlhf.core.evaluation.selection): early stopping by a judge the policy
            was not trained to please
  save      that snapshot as a plain transformers checkpoint, all of them for the evaluation,
            registered as the policy with its method
Under torchrun each process samples prompts_per_iteration / N prompts; rank 0 logs, saves
and registers. With parallel.strategy fsdp the policy, reference and reward model are sharded
over the processes; checkpoints and snapshots gather the whole state first.
"""

from __future__ import annotations

import copy
import pickle
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm
from transformers import AutoModelForSequenceClassification

from rlhf.core.evaluation.sampling import JUDGE, Bench
from rlhf.core.evaluation.selection import SNAPSHOT, best_snapshot
from rlhf.core.pipeline.context import StageContext
from rlhf.core.settings import Settings, UserError
from rlhf.models.config import DPO, Online
from rlhf.models.distributed import Dist, from_env
from rlhf.models.generation import decode_responses
from rlhf.models.lm import load_causal_lm, start_run
from rlhf.models.ppo_step import ONE_PROCESS, ScoreFn, Unstable
from rlhf.models.reward import read_score_stats, sample_scores
from rlhf.models.tokenizer import load_tokenizer

TIMINGS = ("rollout_s", "update_s", "generated_tokens_per_s", "samples_per_s")  # not in history.csv
SAMPLE_ROWS = 4  # responses per table of samples


@dataclass
class Learner:
    """What one online method brings to the loop. A rollout has samples, raw_scores, kl and
    stats (score, kl, entropy, response_length, no_eos_fraction, ...)."""

    method: str  # its params.yaml section: progress lines, errors, the registered version's tag
    lm: torch.nn.Module  # the language model that trains (a LoRA adapter merged when saved)
    parts: dict[str, Any]  # everything with a state_dict that checkpoints and undo keep
    collect: Callable[[list[str]], Any]  # this process's prompts -> rollout
    update: Callable[[Any], dict]  # rollout -> learning stats; raises Unstable
    after: Callable[[dict], dict] = lambda rollout_stats: {}  # e.g. the KL controller's step


@dataclass
class Inputs:
    """What every online method starts from."""

    sft_dir: str  # the start and the reference
    tok: Any
    score: ScoreFn  # the reward model on a batch of samples
    norm: tuple[float, float]  # its mean and std on the SFT model's own samples
    prompts: list[str]  # the training prompts


def seed_processes(settings: Settings) -> tuple[Dist, torch.Generator]:
    """Seeds: each process samples its own responses; the prompt batches (the generator) are
    the same on every process."""
    dist = from_env(start_run(settings.seed, settings.device), settings.parallel.strategy)
    torch.manual_seed(settings.seed + dist.rank)
    return dist, torch.Generator().manual_seed(settings.seed)


def load_inputs(ctx: StageContext, dist: Dist) -> Inputs:
    sft_dir = str(ctx.input("sft", "model"))
    tok = load_tokenizer(sft_dir)
    rm = AutoModelForSequenceClassification.from_pretrained(ctx.input("reward", "model"))
    rm = dist.shard(
        rm.to(dist.device).eval().requires_grad_(False),
        offload=ctx.settings.parallel.offload_frozen,
    )
    score = partial(sample_scores, rm, pad_id=tok.pad_token_id)
    prompts = pd.read_parquet(ctx.input("ingest", "prompts_train.parquet"))["prompt"].tolist()
    # saved by the reward stage: beta and the no-EOS penalty then mean the same for any RM
    norm = read_score_stats(ctx.input("reward", "model"))
    return Inputs(sft_dir, tok, score, norm, prompts)


def plain_lm(lm):
    """The language model as plain transformers weights (a LoRA adapter merged in, on a copy:
    training goes on with the adapter)."""
    if not hasattr(lm, "merge_and_unload"):
        return lm
    return copy.deepcopy(lm).merge_and_unload()


class LastGood:
    """The training state before the latest update, kept in memory to undo it."""

    def __init__(self, *parts):
        self.parts = parts
        self.keep()

    def keep(self) -> None:
        self.states = [copy.deepcopy(p.state_dict()) for p in self.parts]

    def restore(self) -> None:
        for part, state in zip(self.parts, self.states):
            part.load_state_dict(copy.deepcopy(state))


def rollout_problem(stats: dict, cfg: Online, method: str) -> str | None:
    """Why a rollout (stats averaged over processes, so every process agrees) must not train."""
    bad = [k for k in ("score", "kl", "entropy") if not torch.isfinite(torch.tensor(stats[k]))]
    if bad:
        return f"non-finite {', '.join(bad)} in the rollout"
    if stats["kl"] > cfg.max_kl:
        return f"KL {stats['kl']:.2f} above {method}.max_kl {cfg.max_kl}"
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


def save_checkpoint(path, **state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def read_checkpoint(path, method: str) -> dict | None:
    """The checkpoint a crashed run left, loaded as tensors and plain values only (no pickled
    code runs); None, and a fresh start, when it is not one this loop wrote."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")  # RNG states stay CPU
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        print(
            f"{method}: {path}: not a usable checkpoint ({type(e).__name__}); starting over",
            file=sys.stderr,
        )
        return None


def save_snapshot(folder, iteration: int, lm, dist: Dist = ONE_PROCESS) -> None:
    """The LM's plain weights as snapshot `iteration`, written by the main process (every
    process calls: a sharded LM is gathered)."""
    if not (dist.main or dist.sharded):
        return
    weights = dist.state_dict(plain_lm(lm))
    if not dist.main:
        return
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".iter-{iteration:05d}.tmp"
    torch.save(weights, tmp)
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


def progress_line(method: str, it: int, cfg: Online, stats: dict) -> str:
    return (
        f"{method} {it:>4}/{cfg.iterations}  score {stats['score']:+.3f}  kl {stats['kl']:.2f}  "
        f"beta {stats['beta']:.3f}  len {stats['response_length']:.1f}  "
        f"{stats['generated_tokens_per_s']:.0f} tok/s"
    )


def train_online(
    ctx: StageContext,
    learner: Learner,
    cfg: Online,
    inputs: Inputs,
    *,
    dist: Dist,
    batches: torch.Generator,
    prompts_per_iteration: int,
) -> dict:
    """Train, select and register the policy; returns the stage's metrics. batches draws the
    prompt batches (the same on every process)."""
    method, device = learner.method, dist.device
    prompts, tok = inputs.prompts, inputs.tok
    trained = learner.parts["policy"]  # the module the optimizer's parameters belong to
    # -- resume: a crashed run leaves its checkpoint; a rerun with the same key continues ----
    ckpt_path, snapshots = ctx.checkpoints / "checkpoint.pt", ctx.checkpoints / "snapshots"
    start, history, events = 0, [], []
    state = read_checkpoint(ckpt_path, method) if ckpt_path.exists() else None
    if state is not None and len(state["rng"]) == dist.world:
        for name, part in learner.parts.items():
            dist.load_state_dict(part, state["parts"][name], trained)
        set_rng_state(state["rng"][dist.rank], device)
        batches.set_state(state["batches"])
        start, history, events = state["iteration"], state["history"], state["events"]
        if dist.main:
            print(f"{method}: resuming from iteration {start}", file=sys.stderr)
    if start == 0 and dist.main:
        shutil.rmtree(snapshots, ignore_errors=True)  # of a run with another process count

    # -- loop --------------------------------------------------------------------------------
    last_good, unstable = LastGood(*learner.parts.values()), 0
    bar = tqdm(
        total=cfg.iterations,
        initial=start,
        desc=method,
        unit="it",
        dynamic_ncols=True,
        disable=not (dist.main and sys.stderr.isatty()),
    )
    it, started = start, time.perf_counter()
    while it < cfg.iterations:
        t0 = time.perf_counter()
        order = torch.randperm(len(prompts), generator=batches)[:prompts_per_iteration]
        batch = [prompts[i] for i in order[dist.rank :: dist.world]]
        ro = learner.collect(batch)
        t1 = time.perf_counter()
        rollout = dist.mean({**ro.stats, "generated_tokens": float(ro.samples.response_mask.sum())})
        problem = rollout_problem(rollout, cfg, method)
        if problem is None:
            last_good.keep()
            try:
                learned = dist.mean(learner.update(ro))
            except Unstable as e:
                problem = str(e)
        if problem is not None:  # undo, record, and try the iteration again with new samples
            last_good.restore()
            unstable += 1
            events.append({"iteration": it + 1, "problem": problem})
            ctx.log_metrics({"unstable_events": len(events)}, it)
            print(
                f"{method}: iteration {it + 1}: {problem}; restored the state before the last "
                f"update ({unstable} in a row)",
                file=sys.stderr,
            )
            if unstable >= cfg.max_unstable:
                raise UserError(
                    f"{method}: stopped after {unstable} unstable iterations in a row at "
                    f"iteration {it + 1} (last: {problem}); lower {method}.lr or raise "
                    f"{method}.kl_coef"
                )
            continue
        unstable = 0
        t2 = time.perf_counter()
        stats = {**rollout, **learned, **learner.after(rollout)}
        tokens = stats.pop("generated_tokens") * dist.world
        stats |= {
            "generated_tokens": tokens,
            "rollout_s": t1 - t0,
            "update_s": t2 - t1,
            "generated_tokens_per_s": tokens / (t1 - t0),
            "samples_per_s": len(ro.samples.response_ids) * dist.world / (t2 - t0),
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
            print(progress_line(method, it, cfg, stats), file=sys.stderr)
        if dist.main and it % cfg.samples_every == 0:
            ctx.log_table(sample_table(tok, batch, ro, it), f"{method}_samples.json")
        if it % cfg.snapshot_every == 0 and it < cfg.iterations:
            save_snapshot(snapshots, it, learner.lm, dist)
        if it % cfg.checkpoint_every == 0 and it < cfg.iterations:
            rngs = dist.gather(rng_state(device))  # every process's, so each resumes its own
            parts = {name: dist.state_dict(p, trained) for name, p in learner.parts.items()}
            if dist.main:
                save_checkpoint(
                    ckpt_path,
                    parts=parts,
                    rng=rngs,
                    batches=batches.get_state(),
                    iteration=it,
                    history=history,
                    events=events,
                )
    bar.close()

    # -- save ----------------------------------------------------------------------------------
    if not dist.sharded:  # replicas must end equal (shards differ by construction)
        checksums = dist.gather(sum(p.double().sum().item() for p in trained.parameters()))
        if len(set(checksums)) > 1:
            raise RuntimeError(f"{method}: processes ended with different weights: {checksums}")
    save_snapshot(snapshots, cfg.iterations, learner.lm, dist)
    seconds = time.perf_counter() - started
    last = history[-max(1, len(history) // 10) :]
    metrics = {
        "reference_score_mean": inputs.norm[0],
        "reference_score_std": inputs.norm[1],
        "iterations": cfg.iterations,
        "resumed_from": start,
        "processes": dist.world,
        "unstable_events": len(events),
        "seconds": seconds,  # the loop of this run (after a resume: since the resume)
        "generated_tokens": sum(h["generated_tokens"] for h in history),
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
        f"{method}: {len(done)} iterations in {seconds:.0f} s (rollout {rollout_s:.0f} s, "
        f"update {update_s:.0f} s); score {metrics['final_score']:+.3f}, KL "
        f"{metrics['final_kl']:.2f}, {len(events)} unstable iterations undone",
        file=sys.stderr,
    )
    history_frame = pd.DataFrame(
        [{k: v for k, v in h.items() if k not in TIMINGS} for h in history],
        index=pd.RangeIndex(1, len(history) + 1, name="iteration"),
    )
    return metrics | publish(
        ctx,
        load_causal_lm(inputs.sft_dir, tok),  # unsharded and without an adapter, for the snapshot
        tok,
        snapshots,
        history_frame,
        cfg,
        prompts=prompts,
        method=method,
        device=device,
    )


def publish(
    ctx: StageContext,
    lm,
    tok,
    snapshots: Path,
    history: pd.DataFrame,
    sampling: Online | DPO,
    *,
    prompts: list[str],
    method: str,
    device: torch.device,
) -> dict:
    """Every method's ending: the judge's best snapshot within the KL budget (not the last
    one) becomes the policy, saved as a plain transformers checkpoint beside history.csv and
    all the snapshots, and registered with its method. Returns the selection's metrics."""
    settings = ctx.settings
    bench = Bench.load(
        settings, device, sampling.max_new_tokens, sampling.temperature, with_reference=False
    )
    chosen, why, curve = best_snapshot(snapshots, bench, prompts, settings.judge, settings.seed)
    print(f"{method}: policy = {why}", file=sys.stderr)
    curve.to_csv(ctx.out / "selection.csv", index=False)
    lm = plain_lm(lm)
    lm.load_state_dict(torch.load(snapshots / SNAPSHOT.format(chosen), weights_only=True))
    lm.save_pretrained(ctx.out / "model")
    tok.save_pretrained(ctx.out / "model")
    history.to_csv(ctx.out / "history.csv")
    shutil.move(snapshots, ctx.out / "snapshots")
    ctx.register(
        ctx.out / "model",
        "policy",
        selected=why,
        method=method,
    )
    return {
        "selected_iteration": chosen,
        **{
            f"selected_{k}": float(curve.loc[curve["chosen"], k].iloc[0])
            for k in ("kl", "rm", JUDGE)
        },
    }
