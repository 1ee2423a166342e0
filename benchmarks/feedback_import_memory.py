"""Peak memory of `rlhf feedback import` on a large HH-style JSONL file, side by side with
the usual one-liner (`pandas.read_json(path, lines=True)`), each in its own process.

    python benchmarks/feedback_import_memory.py [--gigabytes 1.0] [--keep PATH]

Prints one JSON line: file size, rows, seconds and peak RSS (MiB) for both, and the ratios.
The file is generated (HH-RLHF shaped dialogues, 1 in 1000 rows broken) in a temp folder.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = [
    "the",
    "a",
    "model",
    "answer",
    "question",
    "human",
    "assistant",
    "could",
    "would",
    "please",
    "explain",
    "why",
    "how",
    "when",
    "data",
    "train",
    "reward",
    "policy",
    "value",
    "token",
    "sample",
    "write",
    "review",
    "kettle",
    "lid",
    "great",
    "poor",
    "really",
    "quite",
    "never",
    "always",
    "maybe",
    "helpful",
    "harmless",
    "honest",
]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def write_hh(path: Path, target_bytes: int, seed: int = 0) -> int:
    """HH-style rows of 1-4 turns (about 1.5 KB each) until the file reaches target_bytes."""
    rng, rows, size = random.Random(seed), 0, 0
    with path.open("w", encoding="utf-8") as f:
        while size < target_bytes:
            turns = "".join(
                f"\n\nHuman: {sentence(rng, rng.randint(8, 40))}\n\nAssistant: "
                f"{sentence(rng, rng.randint(20, 80))}"
                for _ in range(rng.randint(0, 3))
            )
            prompt = f"{turns}\n\nHuman: {sentence(rng, rng.randint(8, 40))}\n\nAssistant:"
            row = {
                "chosen": f"{prompt} {sentence(rng, rng.randint(20, 120))}",
                "rejected": f"{prompt} {sentence(rng, rng.randint(20, 120))}",
            }
            line = json.dumps(row) + "\n" if rows % 1000 != 999 else '{"chosen": "broken\n'
            f.write(line)
            size += len(line)
            rows += 1
    return rows


def measure(code: str, *args: str) -> dict:
    """Run python -c code in a child; its wall time and peak resident memory."""
    wrapper = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:]); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
        "r.returncode)"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    *printed, last = out.stdout.strip().splitlines()
    seconds, kib, rc = last.split()
    if rc != "0":
        raise SystemExit(f"benchmark child failed: {out.stderr[-2000:]}")
    result = {"seconds": round(float(seconds), 1), "peak_rss_mib": round(int(kib) / 1024, 1)}
    return {**result, **json.loads(printed[-1])} if printed else result


IMPORT = """
import json, sys
from pathlib import Path
from rlhf.core.feedback.dataset import Splits, add_batch
from rlhf.core.settings import Limits
s = add_batch([Path(sys.argv[1])], "auto", Path(sys.argv[2]), Limits(), Splits(0.15))
print(json.dumps({k: s[k] for k in ("total", "imported", "quarantined", "reasons", "pairs")}))
"""
PANDAS = "import sys, pandas as pd; pd.read_json(sys.argv[1], lines=True)"
BASELINE = "import pandas, pyarrow.parquet, great_expectations"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gigabytes", type=float, default=1.0)
    p.add_argument("--keep", type=Path, help="write the file here and keep it")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-") as tmp:
        path = args.keep or Path(tmp) / "hh.jsonl"
        started = time.perf_counter()
        rows = write_hh(path, int(args.gigabytes * 2**30))
        generated, file_bytes = time.perf_counter() - started, path.stat().st_size
        ours = measure(IMPORT, str(path), str(Path(tmp) / "feedback"))
        # pandas has no way to report bad lines: the broken rows make it fail, so it reads
        # a copy without them (its figure is then a lower bound)
        clean = Path(tmp) / "clean.jsonl"
        with path.open() as src, clean.open("w") as dst:
            dst.writelines(line for line in src if line.endswith("}\n"))
        peer = measure(PANDAS, str(clean))
        baseline = measure(BASELINE)
    print(
        json.dumps(
            {
                "benchmark": "feedback_import_memory",
                "file_mib": round(file_bytes / 2**20, 1),
                "rows": rows,
                "generate_seconds": round(generated, 1),
                "rlhf_feedback_import": ours,
                "pandas_read_json": peer,
                "imports_only": baseline,
                "peak_rss_ratio_pandas_over_ours": round(
                    peer["peak_rss_mib"] / ours["peak_rss_mib"], 2
                ),
                "seconds_ratio_ours_over_pandas": round(ours["seconds"] / peer["seconds"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
