"""`rlhf models | promote | rollback | lineage | reproduce`: the registry from the terminal.

Each command reads the tracking store params.yaml names (or MLFLOW_TRACKING_URI); `--json`
prints one JSON document instead of the table or tree.
"""

from __future__ import annotations

import json
import sys


def _settings(args):
    from rlhf.core.tracking.store import open_store  # noqa: PLC0415

    open_store(args.settings)
    return args.settings


def cmd_models(args) -> int:
    """List registered models: versions, aliases, key metrics, promotion verdicts and who
    decided them, why."""
    from rlhf.core.tracking.registry import list_models  # noqa: PLC0415

    rows = list_models(_settings(args).mlflow.registry_prefix)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no registered models yet: run the pipeline (`rlhf run`)")
        return 0
    print(f"{'model':<14} {'ver':>4}  {'aliases':<20} {'created':<16}  {'verdict':<9}  metrics")
    for r in rows:
        metrics = ", ".join(f"{k} {v:.3g}" for k, v in r["metrics"].items())
        print(
            f"{r['name']:<14} {r['version']:>4}  {','.join(r['aliases']):<20} {r['created']:<16}  "
            f"{r['verdict']:<9}  {metrics}"
        )
        if r["reasons"]:  # the verdict's audit trail: who decided, on what, and why
            print(f"{'':<20}decided by {r['judge'] or '-'}: {r['reasons']}")
    return 0


def cmd_promote(args) -> int:
    """Move the champion alias: by the promotion rules on the last evaluation (--auto), or to
    VERSION by hand (recorded on the version: who, when, why)."""
    from rlhf.core.settings import UserError  # noqa: PLC0415
    from rlhf.core.tracking.registry import promote_by_hand, resolve_name  # noqa: PLC0415

    if args.auto:
        if args.name or args.version or args.reason:
            raise UserError("promote --auto takes no model, version or --reason")
        from rlhf.tasks.promote import promote  # noqa: PLC0415

        record = promote(_settings(args), dry_run=args.dry_run)
        print(
            f"{record['policy']['uri']}: {record['verdict']}"
            f"{' (dry run: nothing recorded)' if args.dry_run else ''}, decided by "
            f"{record['judge']} ({'; '.join(record['reasons'])}); "
            f"champion v{record['champion_before'] or '-'} -> v{record['champion_after'] or '-'}"
        )
        if args.json:
            print(json.dumps(record))
        return 0
    if args.dry_run or args.json:
        raise UserError("--dry-run and --json go with --auto")
    if not (args.name and args.version and args.reason):
        raise UserError("promote needs NAME VERSION --reason (or --auto)")
    name = resolve_name(args.name, _settings(args).mlflow.registry_prefix)
    before = promote_by_hand(name, args.version, args.by, args.reason)
    print(f"{name}: champion v{before or '-'} -> v{args.version}")
    return 0


def cmd_rollback(args) -> int:
    """Give the champion alias back to the version that held it before."""
    from rlhf.core.tracking.registry import resolve_name, rollback  # noqa: PLC0415

    name = resolve_name(args.name, _settings(args).mlflow.registry_prefix)
    old, new = rollback(name, args.by, args.reason)
    print(f"{name}: champion v{old} -> v{new}")
    return 0


def cmd_lineage(args) -> int:
    """The chain from a model back to the raw data: versions, runs, datasets, digests."""
    from rlhf.core.tracking.lineage import lineage, render  # noqa: PLC0415

    _settings(args)
    node = lineage(args.uri)
    sys.stdout.write(json.dumps(node, indent=2) + "\n" if args.json else render(node))
    return 0


def cmd_reproduce(args) -> int:
    """The git commit and DVC commands that rebuild a registered model."""
    from rlhf.core.tracking.lineage import reproduce  # noqa: PLC0415

    settings = _settings(args)
    plan = reproduce(args.uri, settings.path())
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0
    print(f"# {plan['uri']} was made by the {plan['stage']} stage, MLflow run {plan['run_id']}")
    for warning in plan["warnings"]:
        print(f"# warning: {warning}")
    print("\n".join(plan["commands"]))
    print(f"# then artifacts/{plan['stage']}/metrics.json should read (timings aside):")
    print("# " + json.dumps(plan["expected_metrics"], sort_keys=True))
    if plan["expected_model_digest"]:
        digest = plan["expected_model_digest"]
        print(f"# and the model folder's md5 (rlhf.core.io.digest_path) {digest}")
    return 0


def add_commands(sub) -> None:
    m = sub.add_parser("models", help=cmd_models.__doc__)
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)
    p = sub.add_parser("promote", help=cmd_promote.__doc__)
    p.add_argument("name", nargs="?", help="registered model, e.g. rlhf-policy (or just policy)")
    p.add_argument("version", nargs="?")
    p.add_argument(
        "--auto",
        action="store_true",
        help="decide on the evaluated policy by the `promotion` rules in params.yaml",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="with --auto: decide and print, but record nothing and move no alias",
    )
    p.add_argument("--json", action="store_true", help="with --auto: the decision record too")
    p.add_argument("--reason", help="why: recorded on the version")
    p.add_argument("--by", default=None, help="who (default: the current user)")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("rollback", help=cmd_rollback.__doc__)
    p.add_argument("name", help="registered model, e.g. rlhf-policy (or just policy)")
    p.add_argument("--reason", required=True, help="why: recorded on the version")
    p.add_argument("--by", default=None, help="who (default: the current user)")
    p.set_defaults(func=cmd_rollback)
    for name, func in (("lineage", cmd_lineage), ("reproduce", cmd_reproduce)):
        p = sub.add_parser(name, help=func.__doc__)
        p.add_argument("uri", help="models:/NAME/VERSION or models:/NAME@ALIAS")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
