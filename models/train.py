"""The training loop of the three supervised stages: transformers' Trainer, configured once.

Pretraining, SFT and the reward model differ only in their rows, their collator, their loss
(the reward model's is pairwise) and what they measure on held-out data. The Trainer brings
gradient accumulation, bf16 autocast on GPU, resumable checkpoints and DDP when the stage
runs under torchrun or `accelerate launch`; this module adds what the pipeline needs around
it: metrics to the stage's MLflow run, held-out evaluation every eval interval, a progress
bar with loss and throughput, a time budget, and resuming only a run with the same cache key.
"""

from __future__ import annotations

import json
import math
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler
from tqdm import tqdm
from transformers import (
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from rlhf.models.config import Training
from rlhf.models.distributed import world_size
from rlhf.models.errors import InputError

Log = Callable[[dict, int], None]  # (metrics, step) -> None; the stage's MLflow run
Evaluate = Callable[[torch.nn.Module], dict]  # model -> held-out metrics (main process only)
PairLoss = Callable[[torch.nn.Module, dict], torch.Tensor]  # (model, batch) -> loss
Snapshot = Callable[[torch.nn.Module, int], None]  # (model, step): keep its weights (main only)


class WidthGroupedSampler(Sampler[int]):
    """Rows in batches of like width, the batches in random order.

    Each megabatch of 50 random batches' worth of rows is sorted by width and cut into
    batches, so a batch pads to a width close to its rows' own; then every full batch is
    shuffled (the short one, if any, comes last, so the loader's batches stay aligned).
    transformers' LengthGroupedSampler keeps each megabatch's batches from longest to
    shortest instead, a sweep the optimiser then sees every 50 steps."""

    def __init__(self, lengths: list[int], batch_size: int, megabatch: int = 50):
        self.lengths, self.batch_size, self.megabatch = lengths, batch_size, megabatch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths)).tolist()
        size = self.batch_size * self.megabatch
        batches = []
        for start in range(0, len(order), size):
            rows = sorted(order[start : start + size], key=self.lengths.__getitem__)
            batches += [rows[i : i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        short = [b for b in batches if len(b) < self.batch_size]
        full = [b for b in batches if len(b) == self.batch_size]
        for i in torch.randperm(len(full)).tolist():
            yield from full[i]
        for b in short:
            yield from b


def trainer_class():
    """Trainer whose loss may be replaced (the reward model's pairwise loss) and whose rows
    may be drawn grouped by width."""

    class StageTrainer(Trainer):
        def __init__(
            self,
            *args,
            loss: PairLoss | None = None,
            lengths: list[int] | None = None,
            **kwargs,
        ):
            super().__init__(*args, **kwargs)
            self.loss, self.lengths = loss, lengths

        def _get_train_sampler(self, train_dataset=None):
            if self.lengths is None:
                return super()._get_train_sampler(train_dataset)
            # a batch pads to its longest row: rows of like width leave little padding
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return WidthGroupedSampler(self.lengths, batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.loss is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return self.loss(model, inputs)

    return StageTrainer


@dataclass(frozen=True)
class Target:
    """The held-out figure that says which evaluation is best."""

    metric: str  # a key of the job's evaluate()
    lower_is_better: bool

    def better(self, a: float, b: float) -> bool:
        return a < b if self.lower_is_better else a > b


class Best:
    """The best held-out evaluation so far: its figures, its step, the train loss then, and
    (keep) the trainable weights then, on the CPU; `stale` evaluations since."""

    def __init__(self, target: Target, keep: bool):
        self.target, self.keep = target, keep
        self.metrics: dict = {}
        self.step, self.train_loss, self.stale = 0, math.nan, 0
        self.weights: dict[str, torch.Tensor] = {}

    def update(self, model: torch.nn.Module, metrics: dict, step: int, train_loss: float):
        value = metrics[self.target.metric]
        if self.metrics and not self.target.better(value, self.metrics[self.target.metric]):
            self.stale += 1
            return
        self.metrics, self.step, self.train_loss, self.stale = dict(metrics), step, train_loss, 0
        if self.keep:  # the trainable weights alone: an adapter's, under LoRA
            self.weights = {
                n: p.detach().to("cpu", copy=True)
                for n, p in model.named_parameters()
                if p.requires_grad
            }

    def restore(self, model: torch.nn.Module) -> None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.weights:
                    p.copy_(self.weights[n])

    def divergence(self, final: dict) -> str | None:
        """Why the held-out figure at the end says the model fits its training rows only:
        worse than at the best evaluation while the train loss went on falling."""
        metric = self.target.metric
        end, loss = final.get(metric), final.get("train_loss", math.nan)
        if end is None or not self.metrics or not self.target.better(self.metrics[metric], end):
            return None
        if not loss < self.train_loss:
            return None
        return (
            f"held-out {metric} {end:.4g} at the end against {self.metrics[metric]:.4g} at step "
            f"{self.step}, while the train loss fell from {self.train_loss:.4g} to {loss:.4g}: "
            "the model is learning its training rows, not the task (fewer steps or epochs, or "
            "early_stopping, keep the better model)"
        )


def callbacks(job: Job, final: dict):
    """Logging, evaluation, snapshots, progress, the time budget and early stopping, as one
    Trainer callback."""
    name, cfg, log, evaluate, snapshot = job.name, job.cfg, job.log, job.evaluate, job.snapshot
    best = None if job.target is None else Best(job.target, keep=cfg.early_stopping is not None)

    class Report(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.main = state.is_world_process_zero
            self.start = self.t0 = time.perf_counter()
            self.tokens0 = self.tokens_begin = state.num_input_tokens_seen
            self.next_line = state.global_step + max(1, state.max_steps // 10)  # no-TTY lines
            final.update(resumed_from=state.global_step, processes=args.world_size)
            for entry in state.log_history:  # a resumed run's earlier steps, from its checkpoint
                if "loss" in entry:
                    log(logged(entry), entry["step"])
            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc=name,
                unit="step",
                dynamic_ncols=True,
                disable=not (self.main and sys.stderr.isatty()),
            )

        def on_log(self, args, state, control, logs=None, **kw):
            if "loss" not in (logs or {}):
                return
            now = time.perf_counter()
            tokens = state.num_input_tokens_seen - self.tokens0
            m = logged(logs) | {"tokens_per_s": tokens / max(now - self.t0, 1e-9) * args.world_size}
            self.t0, self.tokens0 = now, state.num_input_tokens_seen
            final.update(m)
            log(m, state.global_step)
            self.bar.set_postfix(loss=f"{m['train_loss']:.3f}", tok_s=f"{m['tokens_per_s']:.0f}")
            if self.main and self.bar.disable and state.global_step >= self.next_line:
                self.next_line += max(1, state.max_steps // 10)
                elapsed = now - self.start
                left = elapsed / max(1, state.global_step - final["resumed_from"])
                left *= state.max_steps - state.global_step
                if cfg.max_minutes is not None:
                    left = min(left, 60 * cfg.max_minutes - elapsed)
                print(
                    f"{name} {state.global_step:>5}/{state.max_steps}  loss {m['train_loss']:.4f}  "
                    f"{m['tokens_per_s']:.0f} tok/s  {eta(left)}",
                    file=sys.stderr,
                )

        def on_step_end(self, args, state, control, model=None, **kw):
            self.bar.update()
            out_of_time = cfg.max_minutes is not None and self.agreed(
                args, time.perf_counter() - self.start > 60 * cfg.max_minutes
            )
            if out_of_time:
                control.should_training_stop = True
                final["stopped_by_time_limit"] = 1
            last = state.global_step == state.max_steps or out_of_time
            evaluating = state.global_step % cfg.eval_every == 0 or last
            if self.main and evaluating:
                self.evaluate(model, state.global_step)
            patience = cfg.early_stopping
            if evaluating and not last and patience is not None and best is not None:
                # rank 0 alone evaluates: every process stops at its word
                last = self.agreed(args, self.main and best.stale >= patience)
                control.should_training_stop = last
                final["stopped_early"] = int(last)
            control.should_log = control.should_log or last  # the final figures
            # checkpoints every checkpoint_every steps; the last is the stage's saved model
            control.should_save = state.global_step % cfg.checkpoint_every == 0 and not last

        def evaluate(self, model, step: int) -> None:
            if snapshot is not None:
                snapshot(model, step)
            if evaluate is None:
                return
            m = evaluate(model)
            model.train()
            final.update(m)
            log(m, step)
            if best is not None:
                best.update(model, m, step, final.get("train_loss", math.nan))

        @staticmethod
        def agreed(args, decision: bool) -> bool:
            """Rank 0's decision, so every process stops at the same step."""
            if args.world_size == 1:
                return decision

            flag = torch.tensor([float(decision)], device=args.device)
            dist.broadcast(flag, 0)
            return bool(flag.item())

        def on_train_end(self, args, state, control, model=None, **kw):
            self.bar.close()
            if self.main and best is not None and best.metrics:
                warning = best.divergence(final)
                final["diverged"] = int(warning is not None)
                if warning:
                    print(f"{name}: warning: {warning}", file=sys.stderr)
                if best.keep and best.step != state.global_step:
                    best.restore(model)
                    final.update(best.metrics, best_step=best.step)
            final.update(
                steps=state.global_step,
                seconds=time.perf_counter() - self.start,
                tokens_seen=state.num_input_tokens_seen - self.tokens_begin,  # non-padding
            )

    return Report()


def logged(logs: dict) -> dict[str, float]:
    """The figures of one of the Trainer's log entries, under the stage's names."""
    return {
        "train_loss": logs["loss"],
        "lr": logs["learning_rate"],
        "grad_norm": logs.get("grad_norm", float("nan")),
    }


def planned_steps(cfg: Training, rows: int) -> int:
    """cfg.steps, or the steps of cfg.epochs passes over `rows` training rows."""
    return (
        cfg.steps if cfg.epochs is None else max(1, math.ceil(cfg.epochs * rows / cfg.batch_size))
    )


def eta(seconds: float) -> str:
    """Time left, as a progress line shows it."""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    return f"ETA {minutes}m{secs:02d}s"


def training_args(
    cfg: Training, seed: int, device: torch.device, work: Path, world: int, rows: int
):
    per_step = cfg.gradient_accumulation_steps * world
    if cfg.batch_size % per_step:
        raise InputError(
            f"batch_size {cfg.batch_size} must be a multiple of "
            f"gradient_accumulation_steps x processes ({per_step})"
        )
    return TrainingArguments(
        output_dir=str(work),
        max_steps=planned_steps(cfg, rows),
        seed=seed,
        data_seed=seed,
        per_device_train_batch_size=cfg.batch_size // per_step,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        # AdamW with betas (0.9, 0.95), linear warm-up then cosine decay to 10% of lr
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        bf16=device.type == "cuda",
        use_cpu=device.type == "cpu",
        logging_steps=cfg.log_every,
        save_strategy="steps",
        save_steps=cfg.checkpoint_every,
        save_total_limit=1,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
    )


def last_complete_checkpoint(work: Path, quiet: bool = False) -> str | None:
    """The newest checkpoint-N folder that is whole: a run killed while saving leaves one
    without its trainer_state.json (written last), and a damaged disk or copy a truncated
    file; such a checkpoint is skipped, with a line, for the one before it (or a fresh start)."""
    saved = [p for p in work.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    for folder in sorted(saved, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        damage = checkpoint_damage(folder)
        if damage is None:
            return str(folder)
        if not quiet:
            print(f"{folder}: not resumed ({damage})", file=sys.stderr)
    return None


def checkpoint_damage(folder: Path) -> str | None:
    """What makes a Trainer checkpoint unusable, or None: its state missing or unreadable, a
    safetensors file shorter or longer than its header says, a torch file whose zip archive
    is cut (its index is at the end, so a truncated one has none)."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"trainer_state.json: {type(e).__name__}"
    for path in sorted(folder.iterdir()):
        if path.suffix == ".safetensors" and not safetensors_whole(path):
            return f"{path.name}: truncated"
        if path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
            return f"{path.name}: truncated"
    return None


def safetensors_whole(path: Path) -> bool:
    """Whether a safetensors file is as long as its header's tensors say."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return False
        size = int.from_bytes(head, "little")
        if size > path.stat().st_size - 8:  # a damaged length: never read that much
            return False
        try:
            header = json.loads(f.read(size))
            ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return False
    return path.stat().st_size == 8 + size + max(ends, default=0)


@dataclass
class Job:
    """One run of the Trainer loop: what trains on what, under which section of the settings,
    and the stage's hooks."""

    name: str  # the progress lines' and errors' name for it
    model: torch.nn.Module
    rows: list  # the training rows, drawn at random (of like width, with lengths)
    collate: Callable[[list], dict]  # rows -> a batch
    cfg: Training  # steps, batch size, learning rate, intervals, time budget
    seed: int
    device: torch.device
    work: Path  # this run's checkpoint folder (named by its cache key): a checkpoint is resumed
    log: Log  # the stage's MLflow run
    evaluate: Evaluate | None = None  # held-out metrics at every evaluation (and the end)
    loss: PairLoss | None = None  # replaces the model's own loss (the pairwise losses)
    snapshot: Snapshot | None = None  # the weights at every evaluation (DPO's snapshots)
    target: Target | None = None  # which evaluation is best (early stopping, divergence)
    tokenizer: Any = None  # saved with each checkpoint
    lengths: list[int] | None = None  # each row's padded width: batches draw rows of like width


def train(job: Job) -> dict:
    """Train job.model for cfg.steps optimizer steps (or cfg.epochs passes; fewer under early
    stopping, which leaves the best evaluation's weights in job.model); a crashed or
    interrupted run continues from the last checkpoint in job.work. Returns the last logged
    and evaluated figures (the best evaluation's, when its weights were restored: best_step)
    plus steps, seconds, tokens_seen and resumed_from."""
    args = training_args(job.cfg, job.seed, job.device, job.work, world_size(), len(job.rows))
    final: dict = {"stopped_by_time_limit": 0, "stopped_early": 0}
    trainer = trainer_class()(
        model=job.model,
        args=args,
        train_dataset=job.rows,
        data_collator=job.collate,
        loss=job.loss,
        lengths=job.lengths,
        processing_class=job.tokenizer,
        callbacks=[callbacks(job, final)],
    )
    for quiet in (PrinterCallback, ProgressCallback):  # ours reports instead
        trainer.remove_callback(quiet)
    resume = last_complete_checkpoint(job.work)
    if resume and trainer.is_world_process_zero():
        print(f"{job.name}: resuming from {Path(resume).name}", file=sys.stderr)
    trainer.train(resume_from_checkpoint=resume)
    job.model.eval()
    require_finite(job.model, job.name)
    return final


def require_finite(model: torch.nn.Module, name: str) -> None:
    """Weights that became NaN or infinite (a learning rate too high for the model) are an
    error before anything is saved or registered, never a model that scores as any other."""
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise InputError(
            f"{name}: training made {len(bad)} weight tensor(s) non-finite (first: {bad[0]}): "
            "lower lr or lengthen warmup_steps; nothing was saved"
        )
