"""Environment defaults applied before any heavy library is imported.

They keep the libraries' state inside the project (Prefect's database, DVC's index) and quiet
(no telemetry, no progress bars, no hub access). A value the user has set is kept. The one
list: `rlhf` applies it, the tests apply it, and `python -m rlhf.flows.env` prints it as shell
exports for tools started without `rlhf` (the Makefile's `dvc repro`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shlex
from pathlib import Path


def defaults(root: str | Path) -> dict[str, str]:
    """The variables and their defaults for a project in folder root."""
    root = Path(root).resolve()
    return {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # the first start migrates a fresh SQLite database, which can take longer than 20 s
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # ...but a run's own log (its stages' prints and warnings) reaches the Prefect UI
        "PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL": "INFO",
        "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "INFO",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GIT_PYTHON_REFRESH": "quiet",  # git is optional: GitPython (MLflow's) says nothing
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # a tracking server that is down fails a request in seconds, not minutes
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(root / ".dvc" / "tmp" / "site"),
        "GX_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",  # nothing may download from a hub at run time
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
    }


# `rlhf servers start` keeps its state in <project>/.servers (mode 0700): pids, logs, and the
# servers' credentials, each secret in its own file that only the user can read.
STATE = ".servers"
MLFLOW_USER = "rlhf"
SECRETS = {  # client variable -> file of its secret
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password",
    "PREFECT_API_AUTH_STRING": "prefect-auth-string",
}


def server_credentials(root: str | Path) -> dict[str, str]:
    """The client variables for the project's own servers (`rlhf servers start`), for those
    that the environment points at: credentials never go to a server they were not made for."""
    state = Path(root).resolve() / STATE
    found: dict[str, str] = {}
    for name, variable, secret in (
        ("mlflow", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_PASSWORD"),
        ("prefect", "PREFECT_API_URL", "PREFECT_API_AUTH_STRING"),
    ):
        try:
            url = json.loads((state / f"{name}.json").read_text())["url"]
            value = (state / SECRETS[secret]).read_text().strip()
        except (OSError, ValueError, KeyError):
            continue
        if os.environ.get(variable, "").rstrip("/") == url:
            found[secret] = value
            if name == "mlflow":
                found["MLFLOW_TRACKING_USERNAME"] = MLFLOW_USER
    return found


def apply_defaults(root: str | Path) -> None:
    for key, value in {**defaults(root), **server_credentials(root)}.items():
        os.environ.setdefault(key, value)


def own_lines(record: logging.LogRecord) -> bool:
    """A run logger's record made by the project (a stage's print, a warning), not by
    Prefect's engine (run states, failures)."""
    if not record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
        return True
    spec = importlib.util.find_spec("prefect")
    engine = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else ""
    return not (engine and record.pathname.startswith(engine))


def report_flow_failures_once() -> None:
    """A failed flow run is reported by `rlhf`, once (one line for a user error); Prefect's own
    console lines would repeat it with a traceback. The console keeps the runs' own lines
    (each stage's progress and summary, warnings); the run's log in Prefect's API keeps
    everything."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(own_lines)


def quiet_logging() -> None:
    """Library chatter (database migrations, temp folders) below WARNING stays off the console."""
    for name in ("mlflow", "alembic", "great_expectations", "httpx", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":
    for key, value in defaults(Path.cwd()).items():
        print(f"export {key}={shlex.quote(os.environ.get(key, value))}")
