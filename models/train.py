"""The optimiser and schedule shared by the supervised stages, and a step loop with logging."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch


def make_optimizer(model: torch.nn.Module, lr: float, steps: int, warmup: int,
                   weight_decay: float = 0.01):
    """AdamW with linear warm-up then cosine decay to 10% of lr."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def run_steps(model: torch.nn.Module, loss_fn: Callable[[int], tuple[torch.Tensor, int]],
              steps: int, lr: float, warmup: int, log: Callable[[int, dict], None],
              log_every: int = 10, max_grad_norm: float = 1.0) -> dict:
    """Train for `steps`; loss_fn(step) returns (loss, tokens in the batch).

    Calls log(step, metrics) every log_every steps with the mean loss and throughput since
    the last call, and returns the final figures.
    """
    opt, sched = make_optimizer(model, lr, steps, warmup)
    model.train()
    total, n, tokens, t0 = 0.0, 0, 0, time.perf_counter()
    last: dict = {}
    for step in range(steps):
        loss, ntok = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        sched.step()
        total, n, tokens = total + loss.item(), n + 1, tokens + ntok
        if (step + 1) % log_every == 0 or step + 1 == steps:
            dt = time.perf_counter() - t0
            last = {"train_loss": total / n, "tokens_per_s": tokens / dt, "lr": sched.get_last_lr()[0]}
            log(step + 1, last)
            total, n, tokens, t0 = 0.0, 0, 0, time.perf_counter()
    model.eval()
    return last
