"""`rlhf loop | serve | deploy | servers`: running the pipeline unattended."""

from __future__ import annotations

import json
import os
import shlex
import sys

from rlhf.core.settings import UserError


def cmd_loop(args) -> int:
    """Run one iteration of the feedback loop now (import, maybe retrain, collect)."""
    from rlhf.flows.embedded_server import keep_apart  # noqa: PLC0415
    from rlhf.flows.env import report_flow_failures_once  # noqa: PLC0415
    from rlhf.flows.loop import feedback_loop  # noqa: PLC0415

    report_flow_failures_once()
    keep_apart()
    summary = feedback_loop(params_path=str(args.params))
    print(
        f"feedback loop: {summary['outcome']}; imported {summary['imported_files']} file(s), "
        f"rejected {summary['rejected_files']}; champion v{summary['champion_after']}",
        file=sys.stderr,
    )
    print(json.dumps(summary, default=str))
    return 0


def require_api() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise UserError(
            "PREFECT_API_URL is not set: schedules need a running Prefect server "
            "(`rlhf servers start` prints the line to export)"
        )
    return url


def cmd_serve(args) -> int:
    """Serve the pipeline (on demand) and the feedback loop (on its schedule) until stopped."""
    from prefect import serve  # noqa: PLC0415

    from rlhf.flows.deployments import served  # noqa: PLC0415

    url = require_api()
    deployments = served(args.params)
    print(
        f"serving {', '.join(d.name for d in deployments)} on {url} (Ctrl-C stops)", file=sys.stderr
    )
    serve(*deployments, print_starting_message=False)
    return 0


def cmd_deploy(args) -> int:
    """Register the deployments on work pools, for `prefect worker start --pool ...`."""
    from rlhf.flows.deployments import deploy  # noqa: PLC0415

    require_api()
    for name in deploy(args.params, args.pool, args.gpu_pool):
        print(name)
    return 0


def cmd_servers(args) -> int:
    """Start, stop or list this project's MLflow and Prefect servers (loopback only)."""
    from rlhf.flows import servers  # noqa: PLC0415

    root = args.params.resolve().parent
    if args.action == "start":
        started = servers.start_project_servers(
            root, args.mlflow_port, args.prefect_port, args.backend_store_uri
        )
        for s in started:
            print(f"{s.name} server pid {s.pid} at {s.url} (log: {s.log})", file=sys.stderr)
        print(exports(root, {s.name: s.url for s in started}))
    elif args.action == "stop":
        stopped = servers.stop_project_servers(root)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    else:
        for s in servers.running(root):
            print(f"{s.name}\t{s.pid}\t{s.url}")
    return 0


def exports(root, url: dict[str, str]) -> str:
    """Shell lines that point clients at the servers; secrets are read from their files
    when the shell runs them, so they are never printed."""
    from rlhf.flows.env import MLFLOW_USER, SECRETS, STATE  # noqa: PLC0415

    lines = [
        f"export MLFLOW_TRACKING_URI={url['mlflow']}",
        f"export PREFECT_API_URL={url['prefect']}",
        f"export MLFLOW_TRACKING_USERNAME={MLFLOW_USER}",
    ]
    lines += [
        f'export {variable}="$(cat {shlex.quote(str(root / STATE / name))})"'
        for variable, name in SECRETS.items()
    ]
    return "\n".join(lines)


def add_commands(sub) -> None:
    sub.add_parser("loop", help=cmd_loop.__doc__).set_defaults(func=cmd_loop)
    sub.add_parser("serve", help=cmd_serve.__doc__).set_defaults(func=cmd_serve)
    d = sub.add_parser("deploy", help=cmd_deploy.__doc__)
    d.add_argument("--pool", required=True, help="work pool for the CPU deployments")
    d.add_argument(
        "--gpu-pool",
        default=None,
        help="work pool of GPU workers: pipeline-gpu and the feedback loop go there",
    )
    d.set_defaults(func=cmd_deploy)
    s = sub.add_parser("servers", help=cmd_servers.__doc__)
    s.add_argument("action", choices=("start", "stop", "status"))
    s.add_argument("--mlflow-port", type=int, default=5000)
    s.add_argument("--prefect-port", type=int, default=4200)
    s.add_argument(
        "--backend-store-uri",
        default=None,
        help="MLflow's database (default: the project's mlflow.db); e.g. postgresql://...",
    )
    s.set_defaults(func=cmd_servers, settings_needed=False)
