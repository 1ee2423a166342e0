"""The `rlhf` command line.

Each command imports what it runs inside its function (and `rlhf --help` imports none of it),
so the help and a command's start stay fast: torch, MLflow, Prefect and Great Expectations
together take over ten seconds to import.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path

from rlhf.core.io import fault_line, shown
from rlhf.core.settings import Settings
from rlhf.flows import models_cli, ops_cli, project_cli
from rlhf.flows.env import apply_defaults, quiet_logging
from rlhf.models.errors import STOPPED, InputError, Interrupted, handle_interruptions


def cmd_data(args) -> int:
    """Generate the demo's raw inputs deterministically into paths.data."""
    from rlhf.core.pipeline.plugins import load_plugin  # noqa: PLC0415
    from rlhf.core.settings import UserError  # noqa: PLC0415

    s = args.settings
    generator = load_plugin(s, "demo.generator")
    if generator is None:
        raise UserError(f"{args.params}: demo.generator is empty: no demo data to write")
    generator(s)
    print(f"demo data written to {s.data_dir}")
    return 0


def cmd_stage(args) -> int:
    """Run one stage directly (what dvc.yaml's commands call)."""
    from rlhf.core.pipeline.locks import project_lock  # noqa: PLC0415
    from rlhf.flows.dvc_yaml import commit_lock  # noqa: PLC0415
    from rlhf.flows.runner import run_stage  # noqa: PLC0415
    from rlhf.tasks import BY_NAME  # noqa: PLC0415

    settings = args.settings
    helper = os.environ.get("RANK", "0") != "0"  # a torchrun rank beside rank 0, which locks
    with contextlib.nullcontext() if helper else project_lock(settings):
        record = run_stage(BY_NAME[args.name], settings)
        if record["run_id"] is None:
            return 0  # a helper process of a multi-process stage: rank 0 reports
        said = commit_lock(settings, str(args.params), [args.name])
    if said:
        print(said, file=sys.stderr)
    print(
        json.dumps(
            {"stage": args.name, "metrics": record["metrics"], "model": record["model"]},
            default=str,
        )
    )
    return 0


def cmd_run(args) -> int:
    """Run the whole pipeline as the Prefect flow `rlhf-pipeline`, after `rlhf check`'s checks
    of the settings and data (without its timed steps)."""
    args.settings.require_data()  # before anything heavy is imported
    from rlhf.flows.check import check, print_report  # noqa: PLC0415
    from rlhf.flows.embedded_server import keep_apart  # noqa: PLC0415
    from rlhf.flows.env import report_flow_failures_once  # noqa: PLC0415
    from rlhf.flows.pipeline import rlhf_pipeline  # noqa: PLC0415

    report = check(args.settings, args.allow_leakage, estimate=False)
    print_report(report, sys.stderr)
    if report.errors:
        return 1

    report_flow_failures_once()
    keep_apart()
    result = rlhf_pipeline(params_path=str(args.params), force=args.force)
    print_summary(result, args.settings)
    return 0


def cmd_compare(args) -> int:
    """Train each alignment method from the same SFT and reward model and print their
    scoreboard (the Prefect flow `rlhf-compare`)."""
    args.settings.require_data()  # before anything heavy is imported
    from rlhf.flows.compare import rlhf_compare  # noqa: PLC0415
    from rlhf.flows.embedded_server import keep_apart  # noqa: PLC0415
    from rlhf.flows.env import report_flow_failures_once  # noqa: PLC0415

    report_flow_failures_once()
    keep_apart()
    methods = args.methods.split(",") if args.methods else None
    result = rlhf_compare(params_path=str(args.params), methods=methods)
    print("\n" + result["markdown"])
    print(f"scoreboard and plot in {result['folder']}; MLflow run {result['parent_run_id']}")
    return 0


def print_summary(result: dict, settings: Settings) -> None:
    records, ran = result["records"], set(result["ran"])
    print("\nstage      status    seconds  model")
    for name, rec in records.items():
        model = (rec.get("model") or {}).get("uri", "")
        status, secs = ("ran", f"{rec['seconds']:.0f}") if name in ran else ("cached", "-")
        print(f"{name:<10} {status:<9} {secs:>7}  {model}")
    from rlhf.core.evaluation.records import from_metrics  # noqa: PLC0415
    from rlhf.core.evaluation.report import summary_lines  # noqa: PLC0415

    print("", *summary_lines(from_metrics(records["evaluate"]["metrics"])), sep="\n")
    p = result["promotion"]
    print(verdict_line(p), "(`rlhf models`, artifacts/promote/report.md)")
    print(
        f"MLflow parent run {result['parent_run_id']}; metrics in artifacts/evaluate/metrics.json"
    )
    if result["dvc"]:
        print(result["dvc"])
    from rlhf.core.tracking.store import masked, tracking_uri  # noqa: PLC0415

    print(
        f"MLflow: {masked(tracking_uri(settings))}; Prefect: "
        f"{masked(os.environ.get('PREFECT_API_URL') or 'embedded (.prefect/)')}"
    )


def verdict_line(p: dict) -> str:
    """The promotion in plain words: promoted or not, and the reasons of the one who decided."""
    version, champion = p["policy"]["version"], p["champion_after"]
    reasons = "; ".join(p["reasons"])
    if p["promoted"]:
        head = f"promoted: policy v{version} is the champion"
    elif p["verdict"] == "pending":
        head = f"not promoted yet: policy v{version} awaits human labels"
    else:
        kept = f"v{champion} stays the champion" if champion else "no champion yet"
        head = f"not promoted ({p['verdict']}): policy v{version}; {kept}"
    return f"{head}. Decided by {p['judge'] or 'the rules'}: {reasons}."


def cmd_feedback_import(args) -> int:
    """Import annotator exports as a new batch of the feedback dataset."""
    from rlhf.core.feedback.batches import import_batch, log_import, track_with_dvc  # noqa: PLC0415
    from rlhf.core.tracking.store import TrackingUnavailable  # noqa: PLC0415

    s = args.settings
    out = args.out or s.feedback_dir
    summary = import_batch(args.sources, args.format, out, s)
    formats = ", ".join(f"{k}: {v}" for k, v in summary["formats"].items())
    print(
        f"batch {summary['batch']} ({formats}): {summary['total']} rows, {summary['imported']} "
        f"imported, {summary['quarantined']} quarantined; {summary['added']} new pairs, "
        f"{summary['dataset_pairs']} in {out} (of which {summary['dataset_ties']} ties; "
        f"{summary['conflicting_comparisons']} comparisons with conflicting votes)",
        file=sys.stderr,
    )
    tracker = track_with_dvc(out, s)
    if tracker:
        print(
            f"{tracker.name} updated: commit it (and `dvc push`) to share this version",
            file=sys.stderr,
        )
    print(json.dumps(summary, sort_keys=True))
    try:
        run_id = log_import(summary, args.sources, out, s)
    except TrackingUnavailable as e:
        print(
            f"rlhf: error: {e}; the batch is imported and kept (rerun the same command to "
            "record it)",
            file=sys.stderr,
        )
        return 1
    print(f"MLflow run {run_id}", file=sys.stderr)
    return 0


def cmd_params(args) -> int:
    """Print the settings: every key with its meaning, bounds and this project's value (the
    default beside a value that is not the default); --defaults: the defaults alone."""
    from rlhf.core.io import write_text  # noqa: PLC0415
    from rlhf.core.pipeline.params import params_yaml  # noqa: PLC0415
    from rlhf.core.settings import UserError, load_settings  # noqa: PLC0415

    if args.defaults and args.write:
        raise UserError("params: --write rewrites the project's params.yaml; --defaults prints")
    text = params_yaml(None if args.defaults else load_settings(args.params))  # may be absent
    if args.write:
        write_text(args.params, text)
        print(f"{args.params}: every key written, its values kept", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_dvc_yaml(args) -> int:
    """Print dvc.yaml as the stage table defines it."""
    from rlhf.flows.dvc_yaml import render  # noqa: PLC0415

    sys.stdout.write(render(args.settings))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from rlhf.core.feedback.formats import NAMES  # noqa: PLC0415
    from rlhf.core.settings import BEST_OF_N, METHODS  # noqa: PLC0415
    from rlhf.tasks import STAGES  # noqa: PLC0415

    p = argparse.ArgumentParser(
        prog="rlhf",
        description=(
            "RLHF pipeline: data -> pretrain -> SFT -> feedback -> reward model -> judge -> "
            f"policy ({', '.join(METHODS)}) -> evaluation, on Prefect, MLflow and DVC."
        ),
    )
    p.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="settings file (default: params.yaml)",
    )
    p.set_defaults(settings_needed=True)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help=cmd_run.__doc__)
    r.add_argument("--force", action="store_true", help="rerun every stage, ignoring the cache")
    r.add_argument("--allow-leakage", action="store_true", help="as `rlhf check --allow-leakage`")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("compare", help=cmd_compare.__doc__)
    c.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, of {','.join([*METHODS, BEST_OF_N])} (default: compare.methods)",
    )
    c.set_defaults(func=cmd_compare)
    st = sub.add_parser("stage", help=cmd_stage.__doc__)
    st.add_argument("name", choices=[s.name for s in STAGES])
    st.set_defaults(func=cmd_stage)
    sub.add_parser("data", help=cmd_data.__doc__).set_defaults(func=cmd_data)
    fb = sub.add_parser("feedback", help="human feedback: import exports")
    fb_sub = fb.add_subparsers(dest="action", required=True)
    imp = fb_sub.add_parser("import", help=cmd_feedback_import.__doc__)
    imp.add_argument(
        "sources",
        nargs="+",
        type=Path,
        metavar="SOURCE",
        help="export files: JSON, JSONL, CSV or Parquet (JSONL/JSON/CSV may be .gz)",
    )
    imp.add_argument(
        "--format",
        default="auto",
        choices=("auto", *NAMES),
        help="the export format (default: detected per file)",
    )
    imp.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the feedback dataset to add to (default: <paths.data>/feedback)",
    )
    imp.set_defaults(func=cmd_feedback_import)
    pa = sub.add_parser("params", help=cmd_params.__doc__)
    pa.add_argument("--defaults", action="store_true", help="every key with its default")
    pa.add_argument(
        "--write",
        action="store_true",
        help="rewrite --params in this form: every key, its values kept, with comments",
    )
    pa.set_defaults(func=cmd_params, settings_needed=False)
    sub.add_parser("dvc-yaml", help=cmd_dvc_yaml.__doc__).set_defaults(func=cmd_dvc_yaml)
    models_cli.add_commands(sub)
    ops_cli.add_commands(sub)
    project_cli.add_commands(sub)
    return p


def error(message: str) -> int:
    """A user's error: one line (names escaped), exit code 2."""
    print(f"rlhf: error: {shown(message)}", file=sys.stderr)
    return 2


def interrupted(e: KeyboardInterrupt) -> int:
    """A stop asked for by a signal: one line saying where it stopped and how to go on; exit
    code 128 + the signal's number, as a shell reports it."""
    signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
    where, resume = "", "finished stages are cached"
    if "last" in STOPPED:
        stage, checkpoint = STOPPED["last"]
        where = f" during stage {stage}"
        if checkpoint is not None:
            resume += f", {stage} resumes from {shown(checkpoint)}"
    print(
        f"rlhf: interrupted by {signal.Signals(signum).name}{where}; nothing half-written was "
        f"kept; the same command goes on ({resume})",
        file=sys.stderr,
    )
    return 128 + signum


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():  # where handlers can be set
        handle_interruptions()
    args = build_parser().parse_args(argv)
    apply_defaults(args.params.resolve().parent)
    quiet_logging()
    try:
        if args.settings_needed:  # checked before anything heavy is imported
            from rlhf.core.settings import load_settings  # noqa: PLC0415

            args.settings = load_settings(args.params)
        return args.func(args)
    except InputError as e:
        return error(str(e))
    except BrokenPipeError:  # stdout closed (`rlhf ... | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # a fault of the machine no seam named: the path and the cause
        return error(fault_line(e))
    except KeyboardInterrupt as e:
        return interrupted(e)
    except BaseException as e:  # Prefect's TerminationSignal: SIGTERM inside a flow run
        prefect = sys.modules.get("prefect.exceptions")
        if prefect is None or not isinstance(e, prefect.TerminationSignal):
            raise
        return interrupted(Interrupted(e.signal))
    except Exception as e:
        line = store_fault_line(e)
        if line is None:
            raise
        return error(line)


def store_fault_line(e: Exception) -> str | None:
    """The one line for a fault of the MLflow store (the store's module is loaded when its
    library raised one; not importing it otherwise keeps `rlhf --help` quick)."""
    store = sys.modules.get("rlhf.core.tracking.store")
    return None if store is None else store.store_fault(e)


if __name__ == "__main__":
    sys.exit(main())
