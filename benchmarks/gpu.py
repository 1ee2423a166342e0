"""PPO at GPU sizes: rollout and update throughput, model FLOPs utilisation, peak memory.

    python benchmarks/gpu.py [--models base,qwen2-0.5b] [--iterations 3] [--batch 64]
                             [--prompt-tokens 64] [--response 128] [--device cuda]

Each model is built from its config (random weights, nothing downloaded) and trained with
the stage's own PPO code (rlhf.models.ppo_step: collect, then update) under bf16 autocast,
policy, frozen reference and reward model each a copy of it:
- `base`: the built-in preset (hidden 768, 12 layers, 2048 intermediate) at a 16k vocabulary;
- `qwen2-0.5b`: Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads with 2 key-value heads,
  4864 intermediate, 151,936-token vocabulary, tied embeddings): 494M parameters.

Prompts are `--prompt-tokens` random token ids; a random model almost never samples EOS, so
every response runs the full `--response` tokens. One untimed warm-up iteration, then the
median of `--iterations`. Generation is timed twice per rollout batch on CUDA, with the
dynamic KV cache and with the static cache (compiled decoding), outside the PPO loop.

FLOPs: 2N per token per forward, 6N per token trained (N parameters, embeddings included
when tied, as the output layer uses them); a rollout is generation (2N per generated
token) plus three forwards over prompt + response (policy with value head, reference,
reward model); an update is ppo_epochs x 6N per token. MFU is that rate over a bf16
8192x8192 matrix product timed in the same process. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, Qwen2Config, Qwen2ForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlhf.demo import task as demo  # noqa: E402  (its text trains the prompts' tokenizer)
from rlhf.models.config import PPO, PRESETS  # noqa: E402
from rlhf.models.generation import sample  # noqa: E402
from rlhf.models.lm import build_causal_lm, load_causal_lm  # noqa: E402
from rlhf.models.ppo import KLController, PolicyWithValue  # noqa: E402
from rlhf.models.ppo_step import Actors, collect, update  # noqa: E402
from rlhf.models.reward import sample_scores  # noqa: E402
from rlhf.models.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402


def build(name: str, tok):
    """The causal LM `name` from its config, random weights."""
    if name in ("base", "tiny"):  # tiny: a smoke test on CPU
        return build_causal_lm(tok, PRESETS[name], vocab_size=16384 if name == "base" else None)
    if name == "qwen2-0.5b":
        return Qwen2ForCausalLM(
            Qwen2Config(
                vocab_size=151936,
                hidden_size=896,
                num_hidden_layers=24,
                num_attention_heads=14,
                num_key_value_heads=2,
                intermediate_size=4864,
                max_position_embeddings=32768,
                rope_theta=1000000.0,
                tie_word_embeddings=True,
                bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        )
    raise SystemExit(f"unknown model {name}: base, qwen2-0.5b or tiny")


def matmul_peak(device: torch.device) -> float:
    """FLOP/s of a large matrix product in the precision the models compute in."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ a
    sync(device)
    t, reps = time.perf_counter(), 0
    while time.perf_counter() - t < 2.0:
        a @ a
        reps += 1
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def prompts_of(tok, batch: int, length: int, seed: int) -> list[str]:
    """Prompts of about `length` tokens: random ids of the tokenizer, decoded."""
    g = torch.Generator().manual_seed(seed)
    low = len(tok.all_special_ids) + 3
    ids = torch.randint(low, len(tok), (batch, length), generator=g)
    return [tok.decode(row) for row in ids]


def generation_seconds(lm, tok, prompts, cfg: PPO, device, static: bool) -> float:
    sync(device)
    t = time.perf_counter()
    sample(lm, tok, prompts, cfg.max_new_tokens, cfg.temperature, device, static_cache=static)
    sync(device)
    return time.perf_counter() - t


def bench(name: str, folder: Path, tok, args, device, peak: float) -> dict:
    torch.manual_seed(0)
    lm = build(name, tok)
    n_params = sum(p.numel() for p in lm.parameters())
    lm.save_pretrained(folder / name)
    tok.save_pretrained(folder / name)
    tok = load_tokenizer(folder / name)
    del lm
    cfg = PPO(
        rollout_batch_size=args.batch,
        minibatch_size=args.batch // 2,
        ppo_epochs=4,
        max_new_tokens=args.response,
        kl_target=None,
        no_eos_penalty=None,
    )
    # as the policy stage builds them with `ppo.reference: copy`
    policy = PolicyWithValue(load_causal_lm(folder / name, tok)).to(device)
    ref = load_causal_lm(folder / name, tok).to(device).eval().requires_grad_(False)
    rm = AutoModelForSequenceClassification.from_pretrained(folder / name, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm = rm.to(device).eval()
    score = partial(sample_scores, rm, pad_id=tok.pad_token_id)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr)
    kl = KLController(cfg.kl_coef)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rollout, updates, generated, seen = [], [], [], []
    for it in range(args.iterations + 1):  # the first is the warm-up
        batch = prompts_of(tok, args.batch, args.prompt_tokens, it)
        sync(device)
        t0 = time.perf_counter()
        ro = collect(
            Actors(policy, ref, score, tok),
            batch,
            cfg,
            beta=kl.beta,
            norm=(0.0, 1.0),
            device=device,
        )
        sync(device)
        t1 = time.perf_counter()
        update(policy, opt, ro, cfg, device=device)
        sync(device)
        t2 = time.perf_counter()
        if it:
            rollout.append(t1 - t0)
            updates.append(t2 - t1)
            generated.append(int(ro.samples.response_mask.sum()))
            seen.append(int(ro.samples.model_inputs()["attention_mask"].sum()))
    r_s, u_s = statistics.median(rollout), statistics.median(updates)
    gen, tokens = statistics.median(generated), statistics.median(seen)
    rollout_flops = 2 * n_params * gen + 3 * 2 * n_params * tokens
    update_flops = cfg.ppo_epochs * 6 * n_params * tokens
    row = {
        "model": name,
        "parameters": n_params,
        "rollout_tokens_per_s": round(gen / r_s),
        "update_tokens_per_s": round(cfg.ppo_epochs * tokens / u_s),
        "s_per_iteration": round(r_s + u_s, 3),
        "rollout_mfu": round(rollout_flops / r_s / peak, 4),
        "update_mfu": round(update_flops / u_s / peak, 4),
        "mfu": round((rollout_flops + update_flops) / (r_s + u_s) / peak, 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    if device.type == "cuda":
        batch = prompts_of(tok, args.batch, args.prompt_tokens, 99)
        for static in (False, True):
            generation_seconds(policy.lm, tok, batch, cfg, device, static)  # compiles, warms
            seconds = statistics.median(
                generation_seconds(policy.lm, tok, batch, cfg, device, static) for _ in range(3)
            )
            key = "static_compiled" if static else "dynamic"
            row[f"generation_tokens_per_s_{key}"] = round(args.batch * args.response / seconds)
    print(json.dumps(row), file=sys.stderr)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="base,qwen2-0.5b")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--response", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    peak = matmul_peak(device)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer([demo.corpus_document(rng) for _ in range(500)], 512)
        rows = [bench(m, Path(tmp), tok, args, device, peak) for m in args.models.split(",")]
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32",
                "matmul_peak_tflops": round(peak / 1e12, 1),
                "batch": args.batch,
                "prompt_tokens": args.prompt_tokens,
                "response_tokens": args.response,
                "models": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
