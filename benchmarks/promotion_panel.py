"""The promotion gate against a panel of challengers, with the demo's gold judge as referee.

Run in a project where `make demo` has finished (it needs the stages' outputs and a champion):

    .venv/bin/python benchmarks/promotion_panel.py [--params params.yaml] [--only NAME ...]
        [--record panel.json]

The project is copied to a scratch folder (--work), so its artifacts and registry are left as
they are. There the panel's champion is trained first (the demo's settings stopped at
iteration 3, so that a challenger can truly be better) and made champion by hand. Each
challenger is then PPO from the same SFT model against the same reward model, with the
settings below, evaluated on the held-out prompts like any policy, and judged against that
champion by `rlhf promote --auto --dry-run`: the gate's verdict, with nothing recorded. Gold's
win rate against the champion, with its 95% interval, is the referee's view; the gate agrees
with it when it promotes exactly the challengers gold finds better (lower bound above 0.5).
The goals: no promotion of a challenger gold finds worse (upper bound below 0.5), and at least
one of those gold finds better promoted. The challengers that go past the KL budget run with it
lifted far above their KL (`judge.kl_budget`, the user's hard bound, would reject them by
itself), so only the gate's own signals and the held-out curve's budget can stop them.

Prints a markdown table, then one JSON line: challengers (judged), not_trained (challengers whose
training or evaluation failed, each a row with its error), agreement, gold_worse_promoted,
gold_better_promoted, and each challenger's verdict, win rates and the reasons that held it.
--record writes each challenger's evaluation against the champion (the decision's metrics), the
evidence `tests/core/evaluation/promotion_panel.json` keeps for the rules' test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

CHAMPION = ("the demo's settings stopped at iteration 3", {"ppo": {"iterations": 3}})
LIFTED = {"judge": {"kl_budget": 1000.0}}  # far above any KL these runs reach
# name -> (what it is, params overrides for its PPO stage)
PANEL = {
    "default": ("the demo's settings (50 iterations)", {}),
    "rerun-seed-1": ("the demo's settings, another seed", {"seed": 1}),
    "kl-0.3": (
        "a fixed, strong KL penalty (beta 0.3)",
        {"ppo": {"kl_coef": 0.3, "kl_target": None}},
    ),
    # the last iteration passes judge.kl_budget (4), which would reject it by the user's rule
    # alone; lifted, the gate's own judgement is what the panel measures
    "kl-0.05-target-4": (
        "a weak KL penalty aiming at 4 nats, the last iteration, the KL budget lifted",
        {
            "ppo": {"kl_coef": 0.05, "kl_target": 4.0},
            "judge": {"select": "last", **LIFTED["judge"]},
        },
    ),
    # PPO's guard stops a run whose KL passes ppo.max_kl; lifted here so these can drift as
    # far as an unguarded run would, which is the over-optimisation the gate must refuse
    "no-kl": (
        "no KL penalty, the KL guard lifted, the last iteration, the KL budget lifted",
        {
            "ppo": {"kl_coef": 0.0, "kl_target": None, "max_kl": 1e6},
            "judge": {"select": "last", **LIFTED["judge"]},
        },
    ),
    "over-0.03-lifted": (
        "a weak fixed KL penalty (0.03), 150 iterations, the KL budget lifted",
        {
            "ppo": {"kl_coef": 0.03, "kl_target": None, "max_kl": 1e6, "iterations": 150},
            **LIFTED,
        },
    ),
    "over-0.01-lifted": (
        "a weaker fixed KL penalty (0.01), 300 iterations, the KL budget lifted",
        {
            "ppo": {
                "kl_coef": 0.01,
                "kl_target": None,
                "max_kl": 1e6,
                "iterations": 300,
                "snapshot_every": 30,
            },
            **LIFTED,
        },
    ),
    "over-0.02-lifted": (
        "a weak fixed KL penalty (0.02), 200 iterations, the KL budget lifted",
        {
            "ppo": {
                "kl_coef": 0.02,
                "kl_target": None,
                "max_kl": 1e6,
                "iterations": 200,
                "snapshot_every": 20,
            },
            **LIFTED,
        },
    ),
    "lr-5x-lifted": (
        "five times the learning rate, a fixed KL penalty (0.05), 100 iterations, the KL budget "
        "lifted",
        {
            "ppo": {
                "lr": 0.0015,
                "kl_coef": 0.05,
                "kl_target": None,
                "max_kl": 1e6,
                "iterations": 100,
            },
            **LIFTED,
        },
    ),
}
COPIED = ("params.yaml", "mlflow.db", "artifacts")


def scratch_copy(project: Path, work: Path) -> Path:
    """The project's params, stage outputs and MLflow store in work (checkpoints left out).
    The registered models' files stay where they are, read from there."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in COPIED:
        src = project / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns(".work"))
        elif src.exists():
            shutil.copy2(src, work / name)
    return work


def with_overrides(base: dict, overrides: dict) -> dict:
    params = json.loads(json.dumps(base))
    for key, value in overrides.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    return params


class CommandFailed(Exception):
    """An `rlhf` command of the panel exited non-zero; the message is its last stderr line."""


def rlhf(work: Path, params: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "rlhf.flows.cli", "--params", str(params), *args]
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if out.returncode:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CommandFailed(f"rlhf {' '.join(args)}: {last}")
    return out.stdout


def view(m: dict, judge: str) -> str:
    key = f"{judge}_win_rate_policy_vs_champion"
    if m.get(key) is None:
        return "n/a"
    return f"{m[key]:.3f} ({m[key + '_lower']:.3f}-{m[key + '_upper']:.3f})"


def gold_says(m: dict) -> str:
    lo, hi = (
        m["gold_win_rate_policy_vs_champion_lower"],
        m["gold_win_rate_policy_vs_champion_upper"],
    )
    return "better" if lo > 0.5 else "worse" if hi < 0.5 else "no difference"


def trained(work: Path, base: dict, name: str, overrides: dict) -> Path:
    """Train and evaluate a policy with the overrides; the params file it ran with."""
    params = work / f"params.{name}.yaml"
    params.write_text(yaml.safe_dump(with_overrides(base, overrides), sort_keys=False))
    rlhf(work, params, "stage", "policy")
    rlhf(work, params, "stage", "evaluate")
    return params


def crown(work: Path, base: dict) -> str:
    """Train the panel's champion and give it the alias by hand; its version."""
    params = trained(work, base, "champion", CHAMPION[1])
    version = json.loads((work / "artifacts/policy/stage.json").read_text())["model"]["version"]
    rlhf(work, params, "promote", "policy", str(version), "--reason", "the panel's champion")
    return str(version)


def judged(work: Path, base: dict, name: str) -> dict:
    """Train challenger `name`, evaluate it and ask the gate, recording nothing."""
    what, overrides = PANEL[name]
    params = trained(work, base, name, overrides)
    record = json.loads(
        rlhf(work, params, "promote", "--auto", "--dry-run", "--json").splitlines()[-1]
    )
    m = record["metrics"]
    return {
        "challenger": name,
        "what": what,
        "version": record["policy"]["version"],
        "kl_budget": yaml.safe_load(params.read_text())["judge"]["kl_budget"],
        "metrics": m,
        "verdict": record["verdict"],
        "promoted": record["promoted"],
        "reasons": record["reasons"],
        "held_by": [r for r in record["reasons"] if r.startswith("over-optimisation: ")],
        "kl": m["kl_policy_vs_ref"],
        "gold": gold_says(m),
        **{
            f"{j}_win_rate": m.get(f"{j}_win_rate_policy_vs_champion")
            for j in ("judge", "rm", "gold")
        },
        **{f"{j}_view": view(m, j) for j in ("judge", "rm", "gold")},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--work", default="/tmp/rlhf-promotion-panel")
    ap.add_argument("--only", nargs="*", choices=sorted(PANEL), default=sorted(PANEL))
    ap.add_argument(
        "--record",
        type=Path,
        help="also write each challenger's evaluation against the champion here (JSON), "
        "so that the rules can be read again on the same evidence",
    )
    args = ap.parse_args()
    project = Path(args.params).resolve().parent
    work = scratch_copy(project, Path(args.work))
    base_path = work / "params.yaml"
    base = yaml.safe_load(base_path.read_text())
    # an experiment of its own, so the copied store writes its runs' files under work/
    base["mlflow"]["experiment"] = "promotion-panel"
    base_path.write_text(yaml.safe_dump(base, sort_keys=False))
    champion = crown(work, base)
    print(f"champion: v{champion}, {CHAMPION[0]}", file=sys.stderr)
    rows = []
    for name in [n for n in PANEL if n in args.only]:
        started = time.perf_counter()
        try:
            row = judged(work, base, name)
        except CommandFailed as err:
            # a challenger that cannot be trained is a row, not the end of the panel
            what = PANEL[name][0]
            row = {"challenger": name, "what": what, "verdict": "not trained", "error": str(err)}
        row["seconds"] = round(time.perf_counter() - started)
        rows.append(row)
        print(
            f"{name}: {row['verdict']} ({row.get('gold_view', row.get('error'))}) "
            f"in {row['seconds']} s; " + "; ".join(row.get("reasons", [])),
            file=sys.stderr,
        )
    print(
        "| challenger | KL | judge win rate vs champion | optimised RM's | gold's (referee) | "
        "gate | gold says |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['challenger']}: {r['what']} | | | | | not trained: {r['error']} | |")
            continue
        print(
            f"| {r['challenger']}: {r['what']} | {r['kl']:.2f} | {r['judge_view']} | "
            f"{r['rm_view']} | {r['gold_view']} | {r['verdict']} | {r['gold']} |"
        )
    judged_rows = [r for r in rows if "error" not in r]
    summary = {
        "challengers": len(judged_rows),
        "not_trained": [r["challenger"] for r in rows if "error" in r],
        "agreement": sum(r["promoted"] == (r["gold"] == "better") for r in judged_rows),
        "gold_worse_promoted": sum(r["promoted"] and r["gold"] == "worse" for r in judged_rows),
        "gold_better_promoted": sum(r["promoted"] and r["gold"] == "better" for r in judged_rows),
        "champion": CHAMPION[0],
        "promoted": sum(r["promoted"] for r in judged_rows),
        "panel": [
            {
                k: r.get(k)
                for k in (
                    "challenger",
                    "verdict",
                    "kl",
                    "judge_win_rate",
                    "rm_win_rate",
                    "gold_win_rate",
                    "gold",
                    "held_by",
                    "seconds",
                    "error",
                )
            }
            for r in rows
        ],
    }
    print(json.dumps(summary))
    if args.record:
        keep = ("challenger", "what", "version", "kl_budget", "gold", "verdict", "metrics")
        panel = {
            "champion": champion,
            "challengers": [{k: r[k] for k in keep} for r in judged_rows],
        }
        args.record.write_text(json.dumps(panel, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
