"""`rlhf init | check`: a project of one's own, and its checks before anything trains."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_init(args) -> int:
    """Scaffold a project of one's own in DIR: params.yaml, data/, .gitignore, dvc.yaml and a
    README; feedback imported, and SFT data, prompts and a corpus derived from it by split
    when not given."""
    from rlhf.flows.init import Request, init_project  # noqa: PLC0415

    req = Request(
        args.dir,
        feedback=args.feedback,
        sft=args.sft,
        corpus=args.corpus,
        prompts=args.prompts,
        eval_prompts=args.eval_prompts,
        base=args.base,
        preset=args.preset,
        minutes=args.minutes,
    )
    for line in init_project(req):
        print(line, file=sys.stderr)
    return 0


def cmd_check(args) -> int:
    """Check settings and data before training: records per stage, what each drops in tokens,
    the splits, leakage, and a time and memory estimate from timed steps."""
    from rlhf.flows.check import check, print_report  # noqa: PLC0415

    report = check(args.settings, args.allow_leakage, estimate=not args.no_estimate)
    print_report(report, sys.stderr)
    return 1 if report.errors else 0


def add_commands(sub) -> None:
    i = sub.add_parser("init", help=cmd_init.__doc__)
    i.add_argument("dir", type=Path, metavar="DIR", help="the project folder (new or empty)")
    files = {
        "--feedback": "preference exports of any supported format, imported",
        "--sft": "demonstrations (prompt/response, Alpaca or chat records)",
        "--corpus": "pretraining text (.txt or text records)",
        "--prompts": "the policy's training prompts",
        "--eval-prompts": "held-out evaluation prompts",
    }
    for flag, what in files.items():
        i.add_argument(flag, nargs="+", type=Path, default=[], metavar="FILE", help=what)
    model = i.add_mutually_exclusive_group()
    model.add_argument("--base", type=Path, help="a local Hugging Face checkpoint to start from")
    model.add_argument(
        "--preset", help="a built-in model size trained from scratch (tiny, small, base)"
    )
    i.add_argument(
        "--minutes", type=positive, help="the whole run's wall-clock budget, spread over stages"
    )
    i.set_defaults(func=cmd_init, settings_needed=False)
    c = sub.add_parser("check", help=cmd_check.__doc__)
    c.add_argument("--allow-leakage", action="store_true", help="report leakage, not fail on it")
    c.add_argument("--no-estimate", action="store_true", help="skip the timed steps")
    c.set_defaults(func=cmd_check)


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value
