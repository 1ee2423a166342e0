"""The loop every online policy method trains in, in the order it runs. A method (PPO, a group
baseline) brings what is its own through OnlineMethod; everything else is here, once.

  setup       seeds (each process samples its own responses, the prompt batches are the same
              on every process), the SFT model's tokenizer, the reward model (none with
              rewards.model_weight 0), the training prompts, the reward's mean and std on the
              SFT model's own samples, the reward functions (in a worker process while the
              stage runs)
  resume      from the checkpoint a crashed run with the same cache key and process count left
  iterate     prompts   this process's share of the iteration's batch
              sample    method.sample: one response per prompt, or a group each
              score     the reward model at EOS, normalised, weighted with the reward
                        functions, the no-EOS penalty (every method's)
              advantage method.advantages: log-probabilities, KL to the reference, advantages
              guard     a rollout that is non-finite or above max_kl is not trained on
              update    method.update (a non-finite gradient is refused), then method.after
              undo      a refused rollout or update restores the last good state and the
                        iteration is sampled again; max_unstable in a row stop the run
              log       MLflow, a progress line, a table of samples every samples_every
              snapshot  the LM's plain weights every snapshot_every; a checkpoint every
                        checkpoint_every
  publish     the judge's best snapshot within the KL budget (rlhf.core.policy.publish); with
              no reward model, the reward functions' best
Under torchrun each process samples prompts_per_iteration / N prompts; rank 0 logs, saves and
registers. With parallel.strategy fsdp the policy, reference and reward model are sharded over
the processes; checkpoints and snapshots gather the whole state first.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pandas as pd
import torch
from tqdm import tqdm
from transformers import AutoModelForSequenceClassification

from rlhf.core.pipeline.context import StageContext
from rlhf.core.policy.publish import publish, save_snapshot
from rlhf.core.rewards.functions import (
    RewardFunctions,
    fields_of,
    prompt_fields,
    reward_functions,
    weighted_sum,
)
from rlhf.core.settings import Method, UserError
from rlhf.models.config import Lora, Online
from rlhf.models.distributed import Dist, from_env
from rlhf.models.generation import Samples, decode_responses, prompt_budget, prompts_cut
from rlhf.models.lm import load_causal_lm, start_run
from rlhf.models.lora import with_adapter
from rlhf.models.ppo_step import Unstable
from rlhf.models.reward import read_score_stats, sample_scores
from rlhf.models.rollout import FunctionScores, Scored, ScoreFn, score_responses
from rlhf.models.tokenizer import load_tokenizer
from rlhf.models.train import eta

TIMINGS = ("rollout_s", "update_s", "generated_tokens_per_s", "samples_per_s")  # not in history.csv
SAMPLE_ROWS = 4  # responses per table of samples


class Rollout(Protocol):
    """What a method's advantages step returns: its samples, their raw scores and KL, and the
    rollout's statistics (score, kl, entropy, response_length, no_eos_fraction, ...)."""

    samples: Samples
    raw_scores: torch.Tensor  # [B]
    kl: torch.Tensor  # [B]
    stats: dict[str, float]


R = TypeVar("R", bound=Rollout)


class OnlineMethod(Protocol[R]):
    """What one online method brings to the loop; R: its rollout."""

    lm: torch.nn.Module  # the language model that trains (a LoRA adapter merged when saved)
    # everything with a state_dict that checkpoints and undo keep; "policy" is the module the
    # optimizer's parameters belong to
    parts: dict[str, Any]
    prompts_per_iteration: int  # over all processes

    def sample(self, prompts: list[str]) -> tuple[list[str], Samples]:
        """Responses to this process's prompts, and the prompt of each response."""
        ...

    def advantages(self, scored: Scored) -> R: ...

    def update(self, rollout: R) -> dict[str, float]:
        """Learn from a rollout; raises Unstable on a non-finite gradient (no step taken)."""
        ...

    def after(self, stats: dict[str, float]) -> dict[str, float]:
        """What follows an update (the KL controller's step), with the figures to log."""
        ...


@dataclass
class Setup:
    """What every online method starts from."""

    dist: Dist
    batches: torch.Generator  # draws the prompt batches: the same on every process
    sft_dir: str  # the start and the reference
    tok: Any
    reward: ScoreFn  # the reward model on a batch of samples
    norm: tuple[float, float]  # its mean and std on the SFT model's own samples
    prompts: list[str]  # the training prompts
    fields: dict[str, dict]  # prompt -> its record's other columns, for the reward functions
    functions: RewardFunctions | None
    model_weight: float  # the reward model's share beside the functions

    def function_scores(self, asked: list[str], s: Samples) -> FunctionScores:
        """The reward functions' scores of responses s to prompts asked."""
        if self.functions is None:
            return FunctionScores({}, {}, self.model_weight)
        found = self.functions.scores(
            asked, decode_responses(self.tok, s), fields_of(asked, self.fields)
        )
        device = s.response_ids.device
        return FunctionScores(
            {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in found.items()},
            self.functions.weights,
            self.model_weight,
        )


@contextlib.contextmanager
def setup(ctx: StageContext) -> Iterator[Setup]:
    """What every online method starts from, the reward functions running while the block runs."""
    settings = ctx.settings
    dist = from_env(start_run(settings.seed, settings.device), settings.parallel.strategy)
    torch.manual_seed(settings.seed + dist.rank)
    batches = torch.Generator().manual_seed(settings.seed)
    sft_dir = str(ctx.input("sft", "model"))
    tok = load_tokenizer(sft_dir)
    table = pd.read_parquet(ctx.input("ingest", "prompts_train.parquet"))
    reward, norm = reward_model(ctx, dist, tok.pad_token_id)
    fields, weight = prompt_fields(table), settings.rewards.model_weight
    with reward_functions(settings) as functions:
        yield Setup(
            dist, batches, sft_dir, tok, reward, norm, table["prompt"].tolist(), fields,
            functions, weight,
        )  # fmt: skip


def reward_model(ctx: StageContext, dist: Dist, pad_id: int) -> tuple[ScoreFn, tuple[float, float]]:
    """The reward model on a batch of samples, and its (mean, std) on the SFT model's own samples
    (saved by the reward stage: beta and the no-EOS penalty then mean the same for any RM);
    without one (rewards.model_weight 0), a score of 0 that the functions' weighted sum replaces."""
    settings = ctx.settings
    if not settings.rewards.uses_reward_model:
        return lambda s: torch.zeros(len(s.response_ids), device=s.response_ids.device), (0.0, 1.0)
    rm = AutoModelForSequenceClassification.from_pretrained(ctx.input("reward", "model"))
    rm = dist.shard(
        rm.to(dist.device).eval().requires_grad_(False), offload=settings.parallel.offload_frozen
    )
    return partial(sample_scores, rm, pad_id=pad_id), read_score_stats(ctx.input("reward", "model"))


def trained_and_reference(
    sft_dir: str, tok, cfg: Online, lora: Lora, dist: Dist, offload_frozen: bool = False
):
    """(the LM that trains, its reference), both from the SFT model. Reference copy: every weight
    trains against a frozen copy; lora: an adapter trains and the reference is None (the same
    weights with the adapter off, rlhf.models.rollout.reference_logits)."""
    lm = load_causal_lm(sft_dir, tok)
    if cfg.reference == "lora":
        if dist.sharded:
            raise UserError(
                "reference lora cannot be sharded (parallel.strategy fsdp): the adapter already "
                "keeps a single copy of the weights; use reference copy or strategy ddp"
            )
        return with_adapter(lm, lora), None
    ref = load_causal_lm(sft_dir, tok).to(dist.device).eval().requires_grad_(False)
    return lm, dist.shard(ref, offload=offload_frozen)


def out_of_time(cfg: Online, started: float, dist: Dist) -> bool:
    """Past max_minutes on any process's clock (every process stops at the same iteration)."""
    if cfg.max_minutes is None:
        return False
    late = torch.tensor([float(time.perf_counter() - started > 60 * cfg.max_minutes)])
    return bool(dist.sum(late.to(dist.device)).item() > 0)


@dataclass
class Progress:
    """Where training stands: what checkpoints keep besides the parts' states."""

    iteration: int = 0
    history: list[dict] = field(default_factory=list)  # each iteration's figures
    events: list[dict] = field(default_factory=list)  # the refused rollouts and updates


def train_online(
    ctx: StageContext, method: Method, cfg: Online, run: Setup, learner: OnlineMethod[Any]
) -> dict:
    """Train, select and register the policy; the stage's metrics."""
    dist, name = run.dist, method.name
    work = ctx.checkpoints
    progress = resume(work / "checkpoint.pt", learner, run, name)
    if progress.iteration == 0 and dist.main:
        shutil.rmtree(work / "snapshots", ignore_errors=True)  # of a run with another world
    start, started = progress.iteration, time.perf_counter()
    budget = prompt_budget(learner.lm, cfg.max_new_tokens)
    cut = prompts_cut(run.tok, run.prompts, budget) if dist.main else 0
    last_good, unstable = LastGood(*learner.parts.values()), 0
    bar = progress_bar(name, cfg.iterations, start, dist)
    stopped_by_time = False
    while progress.iteration < cfg.iterations:
        if out_of_time(cfg, started, dist):
            stopped_by_time = True
            break
        it = progress.iteration + 1
        t0 = time.perf_counter()
        batch = next_prompts(run, learner.prompts_per_iteration)
        asked, samples = learner.sample(batch)
        functions = run.function_scores(asked, samples)
        scored = score_responses(samples, run.reward, run.norm, cfg.no_eos_penalty, functions)
        rollout = learner.advantages(scored)
        t1 = time.perf_counter()
        generated = float(samples.response_mask.sum())
        stats = dist.mean({**rollout.stats, "generated_tokens": generated})
        problem = guard(stats, cfg, method)
        if problem is None:
            last_good.keep()
            try:
                learned = dist.mean(learner.update(rollout))
            except Unstable as e:
                problem = str(e)
        if problem is not None:
            last_good.restore()
            unstable += 1
            undo(ctx, progress, it, problem, unstable, cfg, method)
            continue
        unstable = 0
        t2 = time.perf_counter()
        stats = timed(
            {**stats, **learned, **learner.after(stats)},
            len(samples.response_ids),
            dist,
            t0,
            t1,
            t2,
        )
        progress.history.append(stats)
        progress.iteration = it
        log_iteration(ctx, run, stats, it, cfg, name, asked, rollout, bar)
        if it % cfg.snapshot_every == 0 and it < cfg.iterations:
            save_snapshot(work / "snapshots", it, learner.lm, dist)
        if it % cfg.checkpoint_every == 0 and it < cfg.iterations:
            save_checkpoint(work / "checkpoint.pt", learner, run, progress)
    bar.close()
    check_replicas(learner, dist, name)
    save_snapshot(work / "snapshots", progress.iteration, learner.lm, dist)
    metrics = training_metrics(progress, cfg, run, start, time.perf_counter() - started)
    metrics["stopped_by_time_limit"] = int(stopped_by_time)
    metrics["prompts_cut"] = cut  # to leave max_new_tokens within the model's positions
    if not dist.main:
        return metrics
    print(report_line(name, progress, start, metrics), file=sys.stderr)
    history = pd.DataFrame(
        [{k: v for k, v in h.items() if k not in TIMINGS} for h in progress.history],
        index=pd.RangeIndex(1, len(progress.history) + 1, name="iteration"),
    )
    # the start, unsharded and without an adapter: the snapshots load into it
    start_lm = load_causal_lm(run.sft_dir, run.tok)
    snapshots = work / "snapshots"
    scorer = weighted_sum(run.functions, run.fields) if run.functions else None
    return metrics | publish(
        ctx, method, start_lm, run.tok, snapshots, history, cfg, dist.device, scorer
    )


# -- the steps, in the order they run -------------------------------------------------------


def resume(path: Path, learner: OnlineMethod[Any], run: Setup, name: str) -> Progress:
    """The progress (and the parts' states) of a crashed run's checkpoint, or a fresh start."""
    dist = run.dist
    state = read_checkpoint(path, name) if path.exists() else None
    if state is None or len(state["rng"]) != dist.world:
        return Progress()
    for part_name, part in learner.parts.items():
        dist.load_state_dict(part, state["parts"][part_name], learner.parts["policy"])
    set_rng_state(state["rng"][dist.rank], dist.device)
    run.batches.set_state(state["batches"])
    if dist.main:
        print(f"{name}: resuming from iteration {state['iteration']}", file=sys.stderr)
    return Progress(state["iteration"], state["history"], state["events"])


def next_prompts(run: Setup, n: int) -> list[str]:
    """This process's share of the next batch of n prompts."""
    order = torch.randperm(len(run.prompts), generator=run.batches)[:n]
    return [run.prompts[i] for i in order[run.dist.rank :: run.dist.world]]


def guard(stats: dict, cfg: Online, method: Method) -> str | None:
    """Why a rollout (stats averaged over processes, so every process agrees) must not train."""
    bad = [k for k in ("score", "kl", "entropy") if not torch.isfinite(torch.tensor(stats[k]))]
    if bad:
        return f"non-finite {', '.join(bad)} in the rollout"
    if stats["kl"] > cfg.max_kl:
        return f"KL {stats['kl']:.2f} above {method.section}.max_kl {cfg.max_kl}"
    return None


def undo(
    ctx: StageContext,
    progress: Progress,
    it: int,
    problem: str,
    unstable: int,
    cfg: Online,
    method: Method,
) -> None:
    """Record a refused iteration (its state is restored); stop after max_unstable in a row."""
    progress.events.append({"iteration": it, "problem": problem})
    ctx.log_metrics({"unstable_events": len(progress.events)}, it - 1)
    print(
        f"{method.name}: iteration {it}: {problem}; restored the state before the last update "
        f"({unstable} in a row)",
        file=sys.stderr,
    )
    if unstable >= cfg.max_unstable:
        raise UserError(
            f"{method.name}: stopped after {unstable} unstable iterations in a row at iteration "
            f"{it} (last: {problem}); lower {method.section}.lr or raise {method.section}.kl_coef"
        )


def timed(
    stats: dict, responses: int, dist: Dist, t0: float, t1: float, t2: float
) -> dict[str, float]:
    """An iteration's figures with its tokens over all processes and its timings."""
    tokens = stats.pop("generated_tokens") * dist.world
    return stats | {
        "generated_tokens": tokens,
        "rollout_s": t1 - t0,
        "update_s": t2 - t1,
        "generated_tokens_per_s": tokens / (t1 - t0),
        "samples_per_s": responses * dist.world / (t2 - t0),
    }


def log_iteration(
    ctx: StageContext,
    run: Setup,
    stats: dict,
    it: int,
    cfg: Online,
    name: str,
    asked: list[str],
    rollout: Rollout,
    bar,
) -> None:
    ctx.log_metrics(stats, it - 1)
    bar.update()
    bar.set_postfix(
        score=f"{stats['score']:+.3f}",
        kl=f"{stats['kl']:.2f}",
        tok_s=f"{stats['generated_tokens_per_s']:.0f}",
    )
    main = run.dist.main
    if main and bar.disable and it % max(1, cfg.iterations // 10) == 0:
        print(progress_line(name, it, cfg, stats), file=sys.stderr)
    if main and it % cfg.samples_every == 0:
        ctx.log_table(sample_table(run.tok, asked, rollout, it), f"{name}_samples.json")


def save_checkpoint(path: Path, learner: OnlineMethod[Any], run: Setup, progress: Progress) -> None:
    """Everything a resumed run needs, every process's random state included (each resumes
    its own); written by rank 0 (every process calls: a sharded state is gathered)."""
    dist = run.dist
    rngs = dist.gather(rng_state(dist.device))
    policy = learner.parts["policy"]
    parts = {name: dist.state_dict(p, policy) for name, p in learner.parts.items()}
    if not dist.main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "parts": parts,
            "rng": rngs,
            "batches": run.batches.get_state(),
            "iteration": progress.iteration,
            "history": progress.history,
            "events": progress.events,
        },
        tmp,
    )
    tmp.replace(path)


def check_replicas(learner: OnlineMethod[Any], dist: Dist, name: str) -> None:
    """Replicas must end equal (shards differ by construction)."""
    if dist.sharded:
        return
    policy = learner.parts["policy"]
    checksums = dist.gather(sum(p.double().sum().item() for p in policy.parameters()))
    if len(set(checksums)) > 1:
        raise RuntimeError(f"{name}: processes ended with different weights: {checksums}")


def training_metrics(
    progress: Progress, cfg: Online, run: Setup, start: int, seconds: float
) -> dict:
    history = progress.history
    last = history[-max(1, len(history) // 10) :]
    return {
        "reference_score_mean": run.norm[0],
        "reference_score_std": run.norm[1],
        "iterations": progress.iteration,  # fewer than cfg.iterations when time ran out
        "resumed_from": start,
        "processes": run.dist.world,
        "unstable_events": len(progress.events),
        "seconds": seconds,  # the loop of this run (after a resume: since the resume)
        "generated_tokens": sum(h["generated_tokens"] for h in history),
        **{
            f"final_{k}": sum(h[k] for h in last) / len(last)
            for k in ("score", "kl", "response_length", "no_eos_fraction")
            + tuple(f"reward_{name}" for name in (run.functions.weights if run.functions else ()))
        },
    }


# -- helpers --------------------------------------------------------------------------------


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


def read_checkpoint(path: Path, name: str) -> dict | None:
    """The checkpoint a crashed run left, loaded as tensors and plain values only (no pickled
    code runs); None, and a fresh start, when it is not one this loop wrote."""
    try:
        return torch.load(path, weights_only=True, map_location="cpu")  # RNG states stay CPU
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        print(
            f"{name}: {path}: not a usable checkpoint ({type(e).__name__}); starting over",
            file=sys.stderr,
        )
        return None


def rng_state(device) -> dict:
    return {
        "cpu": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }


def set_rng_state(state: dict, device) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def progress_bar(name: str, total: int, start: int, dist: Dist):
    return tqdm(
        total=total,
        initial=start,
        desc=name,
        unit="it",
        dynamic_ncols=True,
        disable=not (dist.main and sys.stderr.isatty()),
    )


def progress_line(name: str, it: int, cfg: Online, stats: dict) -> str:
    left = (stats["rollout_s"] + stats["update_s"]) * (cfg.iterations - it)
    return (
        f"{name} {it:>4}/{cfg.iterations}  score {stats['score']:+.3f}  kl {stats['kl']:.2f}  "
        f"beta {stats['beta']:.3f}  len {stats['response_length']:.1f}  "
        f"{stats['generated_tokens_per_s']:.0f} tok/s  {eta(left)}"
    )


def report_line(name: str, progress: Progress, start: int, metrics: dict) -> str:
    done = progress.history[start:]
    rollout_s, update_s = (sum(h[k] for h in done) for k in ("rollout_s", "update_s"))
    return (
        f"{name}: {len(done)} iterations in {metrics['seconds']:.0f} s (rollout {rollout_s:.0f} "
        f"s, update {update_s:.0f} s); score {metrics['final_score']:+.3f}, KL "
        f"{metrics['final_kl']:.2f}, {len(progress.events)} unstable iterations undone, "
        f"{metrics['prompts_cut']} prompts cut to fit the model"
    )


def sample_table(tok, asked: list[str], ro: Rollout, iteration: int) -> pd.DataFrame:
    """The first responses of a rollout with their prompts, scores and KL."""
    n = min(SAMPLE_ROWS, len(asked))
    responses = decode_responses(tok, ro.samples.select(torch.arange(n, device=ro.kl.device)))
    return pd.DataFrame(
        {
            "iteration": iteration,
            "prompt": asked[:n],
            "response": responses,
            "rm_score": ro.raw_scores[:n].tolist(),
            "kl": ro.kl[:n].tolist(),
            "ended": ro.samples.has_eos[:n].tolist(),
        }
    )
