"""The demo's stages timed one by one, at this revision and optionally at another, in one run.

    python benchmarks/pipeline.py [--against REV] [--fraction 0.25] [--work DIR]

Each revision runs `rlhf run` in a project of its own (params.yaml and the demo data that
revision's generator writes) with its own environment: this revision uses the working tree
and ./.venv; REV is extracted from git into DIR/REV and installed by its own Makefile
(`make setup`, about 3 minutes the first time; kept in DIR for the next run).

Like with like: both run the same settings, this revision's params.yaml overlaid with REV's
value for every key both revisions have (so REV's demo settings decide, and the ratio
measures code), and every count of steps or iterations (with the intervals counted in them:
warm-up, evaluation, checkpoint, snapshot, sample intervals) scaled by --fraction. Batch
sizes, lengths and the model stay as they are, so each step costs what it costs in the demo.

Figures (the last line printed is one JSON object):
- per stage: `seconds` (its MLflow run, start to end: what either revision can report),
  and at this revision `function_seconds` (inside the stage's `run`), `tokens` (non-padding
  tokens the training loop saw, where the stage reports them), `tokens_per_s`, `gflops`
  (matrix products in linear layers, forward and backward, counted as they execute, padding
  included) and `matmul_fraction` (that rate over the machine's own: a 1024x1024 float32
  matrix product timed in the same process before the run, at the same thread count);
- `wall_seconds` (the whole `rlhf run` process) and `overhead_fraction`: the share of it
  spent outside the stage functions (imports, Prefect, MLflow runs and inputs, cache keys,
  atomic writes);
- with --against: REV's stage seconds and wall time, `ratio_vs_against` (this revision's
  total stage seconds over REV's), `ratio_common_stages` (over the stages both have; REV's
  `ppo` is this revision's `policy`) and whether both generators wrote the same data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml
from pydantic import ValidationError

from rlhf.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

# counts scaled by --fraction, wherever they appear in a settings section
COUNTS = ("steps", "iterations")
INTERVALS = (
    "warmup_steps",
    "eval_every",
    "checkpoint_every",
    "snapshot_every",
    "samples_every",
    "log_every",
)
RENAMED = {"ppo": "policy"}  # REV's stage name -> this revision's

# Run by each revision's own python: count linear-layer FLOPs and time each stage function,
# then hand over to that revision's `rlhf run`. Only the standard library and torch.
DRIVER = r"""
import json, sys, time, threading
from importlib.metadata import entry_points
import torch

out = sys.argv[1]
flops = [0.0]

def count(module, args, output):
    if isinstance(module, torch.nn.Linear) and args:
        x = args[0]
        n = 2.0 * x.numel() * module.out_features
        trains = torch.is_grad_enabled() and module.weight.requires_grad
        flops[0] += 3 * n if trains else n  # backward: twice the forward's products

a = torch.randn(1024, 1024)
a @ a
t, reps = time.perf_counter(), 0
while time.perf_counter() - t < 2.0:
    a @ a
    reps += 1
peak = 2 * 1024**3 * reps / (time.perf_counter() - t)
torch.nn.modules.module.register_module_forward_hook(count)

stages = {}
try:
    import rlhf.flows.runner as runner
except ImportError:
    runner = None
if runner is not None and hasattr(runner, "_run_module"):
    inner = runner._run_module

    def timed(stage, ctx):
        f0, t0 = flops[0], time.perf_counter()
        try:
            return inner(stage, ctx)
        finally:
            stages[stage.name] = {
                "function_seconds": time.perf_counter() - t0,
                "gflops": (flops[0] - f0) / 1e9,
            }

    runner._run_module = timed

(main,) = [e for e in entry_points(group="console_scripts") if e.name == "rlhf"]
t0 = time.perf_counter()
try:
    code = main.load()(["run"])
finally:
    wall = time.perf_counter() - t0
    with open(out, "w") as f:
        json.dump({"wall_seconds": wall, "peak_gflops": peak / 1e9, "stages": stages,
                   "threads": torch.get_num_threads()}, f)
sys.exit(code or 0)
"""


def scaled(params: dict, fraction: float) -> dict:
    """params with every step or iteration count, and the intervals counted in them, scaled."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            value = scaled(value, fraction)
            if any(k in value for k in COUNTS):
                for k in (*COUNTS, *INTERVALS):
                    if isinstance(value.get(k), int):
                        value[k] = max(1, round(value[k] * fraction))
        out[key] = value
    return out


def overlaid(mine: dict, theirs: dict) -> dict:
    """mine with theirs' value for every key both have (recursively), as mine's number type
    (settings are strict: 32.0 is no integer)."""
    out = dict(mine)
    for key, value in theirs.items():
        if key not in mine:
            continue
        if isinstance(value, dict) and isinstance(mine[key], dict):
            value = overlaid(mine[key], value)
        elif isinstance(value, float) and type(mine[key]) is int and value.is_integer():
            value = int(value)
        elif isinstance(value, int) and type(mine[key]) is float:
            value = float(value)
        out[key] = value
    return out


def accepted(mine: dict, theirs: dict) -> tuple[dict, list[str]]:
    """overlaid(mine, theirs), except where this revision's settings refuse theirs' value (a
    key whose meaning changed since): those keep this revision's value and are named."""
    params, kept = overlaid(mine, theirs), []
    while True:
        try:
            Settings(**params, root=str(ROOT))
            return params, kept
        except ValidationError as e:
            for error in e.errors():
                *path, key = [str(p) for p in error["loc"]]
                mine_at, params_at = mine, params
                for part in path:
                    if part not in mine_at:
                        break
                    mine_at, params_at = mine_at[part], params_at[part]
                else:
                    params_at[key] = mine_at[key]
                    kept.append(".".join([*path, key]))
                    continue
                raise


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()


def extract(rev: str, dest: Path) -> None:
    """REV's tracked files into dest (kept when already there: its .venv is reused)."""
    if (dest / "pyproject.toml").exists():
        return
    dest.mkdir(parents=True)
    archive = dest.parent / f"{dest.name}.tar"
    subprocess.run(["git", "archive", "-o", str(archive), rev], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()


def prepare(project: Path, params: dict) -> None:
    """A clean project: these params, no outputs, no stores, and no data (regenerated)."""
    for name in ("artifacts", "data", "mlflow.db", "mlartifacts", ".prefect", "dvc.lock"):
        subprocess.run(["rm", "-rf", str(project / name)], check=True)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)


def data_digest(data: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in data.rglob("*") if p.is_file()):
        h.update(f.relative_to(data).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def stage_spans(db: Path) -> dict[str, float]:
    """Seconds of each finished stage run (MLflow's own start and end times)."""
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT r.name, r.start_time, r.end_time FROM runs r JOIN tags t "
            "ON t.run_uuid = r.run_uuid AND t.key = 'stage' WHERE r.status = 'FINISHED'"
        ).fetchall()
    return {RENAMED.get(n, n): (end - start) / 1000 for n, start, end in rows}


def stage_tokens(artifacts: Path, stage: str) -> int | None:
    metrics = artifacts / stage / "metrics.json"
    if not metrics.exists():
        return None
    m = json.loads(metrics.read_text())
    tokens = m.get("tokens_seen", m.get("generated_tokens"))
    return None if tokens is None else int(tokens)


def run_revision(project: Path, python: Path, label: str) -> dict:
    """`rlhf data` then the timed `rlhf run` in project, with that revision's python."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "PREFECT_HOME": str(project / ".prefect"),
        "HF_HUB_OFFLINE": "1",
    }
    rlhf = python.parent / "rlhf"
    subprocess.run([str(rlhf), "--params", "params.yaml", "data"], cwd=project, env=env, check=True)
    print(f"{label}: rlhf run in {project}", file=sys.stderr)
    out = project / "bench.json"
    subprocess.run([str(python), "-c", DRIVER, str(out)], cwd=project, env=env, check=True)
    found = json.loads(out.read_text())
    spans = stage_spans(project / "mlflow.db")
    stages = {}
    for name, seconds in spans.items():
        row = {"seconds": round(seconds, 2)}
        inside = found["stages"].get(name)
        if inside:
            tokens = stage_tokens(project / "artifacts", name)
            rate = inside["gflops"] / inside["function_seconds"]
            row |= {
                "function_seconds": round(inside["function_seconds"], 2),
                "tokens": tokens,
                "tokens_per_s": None if tokens is None else round(tokens / seconds),
                "gflops": round(inside["gflops"], 1),
                "matmul_fraction": round(rate / found["peak_gflops"], 3),
            }
        stages[name] = row
    inside_total = sum(s["function_seconds"] for s in found["stages"].values())
    return {
        "wall_seconds": round(found["wall_seconds"], 1),
        "stage_seconds": round(sum(spans.values()), 1),
        "overhead_fraction": round(1 - inside_total / found["wall_seconds"], 3)
        if found["stages"]
        else None,
        "peak_gflops": round(found["peak_gflops"], 1),
        "threads": found["threads"],
        "data": data_digest(project / "data"),
        "stages": stages,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", help="a git revision to time beside this one")
    p.add_argument("--fraction", type=float, default=1.0, help="scale of steps and iterations")
    p.add_argument("--work", type=Path, default=ROOT / ".venv" / "bench")
    a = p.parse_args()

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if a.against:
        rev = git("rev-parse", "--short", a.against)
        theirs = yaml.safe_load(git("show", f"{rev}:params.yaml"))
        params, kept = accepted(params, theirs)
    params = scaled(params, a.fraction)

    here = a.work / "this"
    here.mkdir(parents=True, exist_ok=True)
    prepare(here, params)
    result: dict = {"fraction": a.fraction, "revision": git("rev-parse", "--short", "HEAD")}
    result["this"] = run_revision(here, ROOT / ".venv" / "bin" / "python", "this revision")

    if a.against:
        there = a.work / rev
        extract(rev, there)
        prepare(there, scaled(theirs, a.fraction))
        subprocess.run(["make", "-C", str(there), "-s", ".venv/.installed"], check=True)
        result["against"] = {
            "revision": rev,
            "settings_kept_from_this_revision": kept,
        } | run_revision(there, there / ".venv" / "bin" / "python", rev)
        mine, theirs_ = result["this"], result["against"]
        common = sorted(set(mine["stages"]) & set(theirs_["stages"]))
        mine_common, theirs_common = (
            sum(r["stages"][s]["seconds"] for s in common) for r in (mine, theirs_)
        )
        result |= {
            "ratio_vs_against": round(mine["stage_seconds"] / theirs_["stage_seconds"], 3),
            "ratio_common_stages": round(mine_common / theirs_common, 3),
            "common_stages": common,
            "stage_ratios": {
                s: round(mine["stages"][s]["seconds"] / theirs_["stages"][s]["seconds"], 3)
                for s in common
            },
            "same_data": mine["data"] == theirs_["data"],
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
