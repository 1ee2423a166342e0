"""Our PPO iteration against TRL's PPOTrainer (trl==1.12.0, the last release that has it) on
the same tiny policy, reward model, prompts and PPO settings.

    python benchmarks/ppo_vs_trl.py [--iterations 5] [--rounds 3] [--device cpu|cuda] [--compile]

TRL is kept out of the project's dependencies: the first run builds its own environment in
benchmarks/.venv-trl (the project's pinned requirements plus trl==1.12.0) and re-runs itself
there. Each round runs one process per side, in alternating order; a process builds its
trainer, runs one untimed warm-up iteration, then times `--iterations`. The figures are the
median seconds per iteration over rounds and the largest peak RSS; the last line printed is
one JSON object. `--compile` runs ours with `ppo.compile` (torch.compile of the update; its
one-off compile happens in the warm-up iteration and is reported as ours_warmup_s).

Equal settings: 64 prompts per iteration, 2 minibatches of 32, 4 PPO epochs, 24 response
tokens at temperature 1, fixed KL coefficient 0.1, no reward whitening, AdamW at the same lr.
Architectural difference, by design of each library: TRL's value model is a separate network
(here a copy of the reward model, as TRL's examples do); ours is a head on the policy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VENV = ROOT / "benchmarks" / ".venv-trl"
TRL = "trl==1.12.0"
BATCH, MINIBATCHES, EPOCHS, RESPONSE, LR, KL = 64, 2, 4, 24, 3e-4, 0.1
PRESET = "tiny"  # the demo's model


def ensure_trl() -> None:
    """Re-run in an environment that has TRL, building it the first time."""
    try:
        import trl  # noqa: F401

        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"building {VENV} ({TRL} beside the project's pinned requirements)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements.lock"), TRL],
            check=True,
        )
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True
        )
    os.execv(str(python), [str(python), *sys.argv])


def build_fixture(folder: Path) -> None:
    """Tokenizer, policy (SFT stand-in), reward model and prompts, all from the demo's task."""
    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification

    from rlhf.demo import task as demo
    from rlhf.models.config import PRESETS
    from rlhf.models.lm import build_causal_lm
    from rlhf.models.tokenizer import train_tokenizer

    rng = random.Random(0)
    tok = train_tokenizer([demo.corpus_document(rng) for _ in range(2000)], vocab_size=512)
    torch.manual_seed(0)
    lm = build_causal_lm(tok, PRESETS[PRESET])
    lm.save_pretrained(folder / "policy")
    tok.save_pretrained(folder / "policy")
    rm = AutoModelForSequenceClassification.from_pretrained(folder / "policy", num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(folder / "reward")
    prompts = [spec.prompt for spec in demo.split_specs(rng, 0)[0]]
    pd.DataFrame({"prompt": prompts}).to_parquet(folder / "prompts.parquet")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_ours(folder: Path, iterations: int, device, compiled: bool = False) -> dict:
    from functools import partial

    import pandas as pd
    import torch
    from transformers import AutoModelForSequenceClassification

    from rlhf.core.policy.online import LastGood
    from rlhf.models.config import PPO, Lora
    from rlhf.models.distributed import Dist
    from rlhf.models.ppo import KLController
    from rlhf.models.ppo_step import Actors, collect, update
    from rlhf.models.reward import sample_scores
    from rlhf.models.tokenizer import load_tokenizer
    from rlhf.tasks.policy.ppo import build_policy

    cfg = PPO(
        rollout_batch_size=BATCH,
        minibatch_size=BATCH // MINIBATCHES,
        ppo_epochs=EPOCHS,
        max_new_tokens=RESPONSE,
        lr=LR,
        kl_coef=KL,
        kl_target=None,
        temperature=1.0,
        compile=compiled,
    )
    tok = load_tokenizer(folder / "policy")
    policy, ref = build_policy(str(folder / "policy"), tok, cfg, Lora(), Dist(device=device))
    rm = AutoModelForSequenceClassification.from_pretrained(folder / "reward").to(device).eval()
    score_fn = partial(sample_scores, rm, pad_id=tok.pad_token_id)
    prompts = pd.read_parquet(folder / "prompts.parquet")["prompt"].tolist()
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=LR, eps=1e-5)
    kl_ctl = KLController(KL)
    last_good = LastGood(policy, opt, kl_ctl)  # the guard's per-iteration copy, as in the stage
    trained = (
        torch.compile(policy, dynamic=True) if cfg.compile else policy
    )  # as tasks/policy/ppo.py
    rollout_s = update_s = 0.0
    begun = time.perf_counter()
    for it in range(iterations + 1):  # the first is the warm-up
        batch = random.Random(it).sample(prompts, BATCH)
        t0 = time.perf_counter()
        ro = collect(
            Actors(policy, ref, score_fn, tok),
            batch,
            cfg,
            beta=kl_ctl.beta,
            norm=(0.0, 1.0),
            device=device,
        )
        t1 = time.perf_counter()
        last_good.keep()
        update(trained, opt, ro, cfg, device=device)
        t2 = time.perf_counter()
        if it == 0:
            started = t2
        else:
            rollout_s, update_s = rollout_s + t1 - t0, update_s + t2 - t1
    total = time.perf_counter() - started
    return {
        "s_per_iter": total / iterations,
        "warmup_s": started - begun,
        "rollout_s_per_iter": rollout_s / iterations,
        "update_s_per_iter": update_s / iterations,
        "peak_rss_mb": peak_rss_mb(),
    }


def time_trl(folder: Path, iterations: int, device) -> dict:
    import copy

    import pandas as pd
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from rlhf.models.tokenizer import format_prompt, load_tokenizer

    tok = load_tokenizer(folder / "policy")
    policy = AutoModelForCausalLM.from_pretrained(folder / "policy")
    ref = AutoModelForCausalLM.from_pretrained(folder / "policy")
    rm = AutoModelForSequenceClassification.from_pretrained(folder / "reward")
    prompts = pd.read_parquet(folder / "prompts.parquet")["prompt"].tolist()
    ids = [tok(format_prompt(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    args = PPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=BATCH // MINIBATCHES,
        gradient_accumulation_steps=MINIBATCHES,
        num_mini_batches=MINIBATCHES,
        num_ppo_epochs=EPOCHS,
        response_length=RESPONSE,
        temperature=1.0,
        learning_rate=LR,
        kl_coef=KL,
        missing_eos_penalty=1.0,
        stop_token="eos",
        total_episodes=BATCH * (iterations + 1),
        local_rollout_forward_batch_size=BATCH,
        num_sample_generations=0,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        use_cpu=device.type == "cpu",
        bf16=device.type == "cuda",
    )
    clock = Clock()
    trainer = PPOTrainer(
        args=args,
        processing_class=tok,
        model=policy,
        ref_model=ref,
        reward_model=rm,
        value_model=copy.deepcopy(rm),
        train_dataset=Dataset.from_dict({"input_ids": ids}),
        callbacks=[clock],
    )
    trainer.train()
    warm, *_, last = clock.marks
    return {"s_per_iter": (last - warm) / iterations, "peak_rss_mb": peak_rss_mb()}


def child(args) -> None:
    import torch

    from rlhf.models.lm import set_threads

    set_threads()
    torch.manual_seed(0)
    device = torch.device(args.device)
    if args.side == "ours":
        result = time_ours(Path(args.fixture), args.iterations, device, args.compile)
    else:
        result = time_trl(Path(args.fixture), args.iterations, device)
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per process")
    p.add_argument("--rounds", type=int, default=3, help="processes per side, alternating")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--compile", action="store_true", help="ours with ppo.compile")
    p.add_argument("--side", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--fixture", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        return child(args)
    ensure_trl()
    results = {"ours": [], "trl": []}
    with tempfile.TemporaryDirectory() as tmp:
        build_fixture(Path(tmp))
        for r in range(args.rounds):
            for side in ("ours", "trl") if r % 2 == 0 else ("trl", "ours"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--side",
                        side,
                        "--fixture",
                        tmp,
                        "--iterations",
                        str(args.iterations),
                        "--device",
                        args.device,
                        *(["--compile"] if args.compile else []),
                    ],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                )
                if out.returncode != 0:
                    sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
                results[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(side, results[side][-1], file=sys.stderr)
    ours, trl = (statistics.median(r["s_per_iter"] for r in results[s]) for s in ("ours", "trl"))
    print(
        json.dumps(
            {
                "device": args.device,
                "compile": args.compile,
                "iterations": args.iterations,
                "rounds": args.rounds,
                "ours_s_per_iter": round(ours, 4),
                "trl_s_per_iter": round(trl, 4),
                "ratio": round(ours / trl, 3),
                "ours_rollout_s_per_iter": round(
                    statistics.median(r["rollout_s_per_iter"] for r in results["ours"]), 4
                ),
                "ours_update_s_per_iter": round(
                    statistics.median(r["update_s_per_iter"] for r in results["ours"]), 4
                ),
                "ours_warmup_s": round(
                    statistics.median(r["warmup_s"] for r in results["ours"]), 1
                ),
                "ours_peak_rss_mb": round(max(r["peak_rss_mb"] for r in results["ours"])),
                "trl_peak_rss_mb": round(max(r["peak_rss_mb"] for r in results["trl"])),
            }
        )
    )


if __name__ == "__main__":
    main()
