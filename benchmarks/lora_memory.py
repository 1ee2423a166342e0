"""Peak memory and step time of fine-tuning every weight side by side with a LoRA adapter
(rlhf.models.lora), each in its own process, on the same model and batches:

  full            every weight trains (AdamW keeps two moments per weight)
  full+reference  every weight trains beside a frozen copy: what ppo/grpo/rloo hold with
                  reference copy
  lora            only the adapter trains and the reference is the same weights with the
                  adapter off: what reference lora holds

    python benchmarks/lora_memory.py [--preset base] [--steps 4] [--batch 4] [--length 128]

Prints one JSON line: parameters, trainable parameters, peak RSS (MiB) and seconds per step of
each mode, and the ratios to full. CPU by default; on a GPU the peak is the device's.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time

MODES = ("full", "full+reference", "lora")


def measure(mode: str, preset: str, steps: int, batch: int, length: int) -> dict:
    """One mode in this process: build, train `steps` steps, report."""
    import torch  # noqa: PLC0415 (each mode's process pays its own imports)

    from rlhf.demo import task as demo  # noqa: PLC0415
    from rlhf.models.config import PRESETS, Lora  # noqa: PLC0415
    from rlhf.models.lm import build_causal_lm  # noqa: PLC0415
    from rlhf.models.lora import with_adapter  # noqa: PLC0415
    from rlhf.models.tokenizer import train_tokenizer  # noqa: PLC0415

    rng = random.Random(0)
    tok = train_tokenizer([demo.corpus_document(rng) for _ in range(200)], vocab_size=512)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_causal_lm(tok, PRESETS[preset], vocab_size=16384).to(device)
    total = sum(p.numel() for p in model.parameters())
    if mode == "full+reference":
        ref = build_causal_lm(tok, PRESETS[preset], vocab_size=16384).to(device)
        ref.requires_grad_(False)
    if mode == "lora":
        model = with_adapter(model, Lora())
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(0, 16384, (batch, length), device=device)
    model.train()
    seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "parameters": total,
        "trainable": sum(p.numel() for p in trainable),
        "peak_mib": round(peak, 1),
        "s_per_step": round(sorted(seconds[1:] or seconds)[len(seconds[1:] or seconds) // 2], 3),
        "device": device.type,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # a child's
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.preset, args.steps, args.batch, args.length)))
        return
    shape = ["--preset", args.preset, "--steps", str(args.steps)]
    shape += ["--batch", str(args.batch), "--length", str(args.length)]
    results = {}
    for mode in MODES:
        out = subprocess.run(
            [sys.executable, __file__, "--mode", mode, *shape],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    full = results["full"]
    print(
        json.dumps(
            {
                "benchmark": "lora_memory",
                "preset": args.preset,
                "batch": args.batch,
                "length": args.length,
                **{m.replace("+", "_"): r for m, r in results.items()},
                "peak_ratio_lora_to_full": round(results["lora"]["peak_mib"] / full["peak_mib"], 3),
                "peak_ratio_lora_to_full_reference": round(
                    results["lora"]["peak_mib"] / results["full+reference"]["peak_mib"], 3
                ),
                "trainable_fraction_lora": round(
                    results["lora"]["trainable"] / full["trainable"], 4
                ),
                "step_ratio_lora_to_full": round(
                    results["lora"]["s_per_step"] / full["s_per_step"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
