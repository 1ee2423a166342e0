"""Stage 7, ppo: PPO against the reward model with the SFT model as reference.

The iteration itself is models/ppo_step.py (rollout, score, no-grad passes, GAE, update); the
loop around it (resume, guard, snapshots, the judge's choice of snapshot, registration) is the
one every online method shares, rlhf.core.online. This stage sets PPO up for it: seeds
(sampling per process, prompt batches shared), policy + value head, the reference (frozen
copy or LoRA adapter off), the reward model and its normalisation (saved by the reward stage),
and the adaptive KL controller. Run under `torchrun --nproc_per_node N -m rlhf.flows.cli stage
ppo` it trains with DDP: each process samples rollout_batch_size / N prompts.
"""

from __future__ import annotations

from functools import partial

import pandas as pd
import torch
from peft import LoraConfig, get_peft_model
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoModelForSequenceClassification

from rlhf.core.context import StageContext
from rlhf.core.online import Learner, train_online
from rlhf.core.settings import PPO, UserError
from rlhf.models.distributed import from_env
from rlhf.models.lm import load_causal_lm, start_run
from rlhf.models.ppo import KLController, PolicyWithValue
from rlhf.models.ppo_step import Actors, collect, update
from rlhf.models.reward import read_score_stats, sample_scores
from rlhf.models.tokenizer import load_tokenizer


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


def run(ctx: StageContext) -> dict:
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
    actors = Actors(policy=policy, ref=ref, score=score_fn, tok=tok)

    def kl_step(rollout: dict) -> dict:
        """The controller moves beta after each iteration; the stats keep the beta it used."""
        beta = kl_ctl.beta
        kl_ctl.update(rollout["kl"], cfg.rollout_batch_size)
        return {"beta": beta}

    learner = Learner(
        method="ppo",
        lm=policy.lm,
        parts={"policy": policy, "optimizer": opt, "kl": kl_ctl},
        collect=lambda batch: collect(
            actors, batch, cfg, beta=kl_ctl.beta, norm=norm, device=device, dist=dist
        ),
        update=lambda ro: update(trained, opt, ro, cfg, device=device, dist=dist),
        after=kl_step,
    )
    metrics = train_online(
        ctx,
        learner,
        cfg,
        prompts,
        tok=tok,
        dist=dist,
        batches=batches,
        prompts_per_iteration=cfg.rollout_batch_size,
    )
    return {**metrics, "reference_score_mean": norm[0], "reference_score_std": norm[1]}
