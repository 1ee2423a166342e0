"""Environment defaults applied before any heavy library is imported.

They keep the libraries' state inside the project (Prefect's database, DVC's index) and quiet
(no telemetry, no progress bars, no hub access). A value the user has set is kept. The one
list: `rlhf` applies it, the tests apply it, and `python -m rlhf.flows.env` prints it as shell
exports for tools started without `rlhf` (the Makefile's `dvc repro`).
"""

from __future__ import annotations

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
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(root / ".dvc" / "tmp" / "site"),
        "GX_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",  # nothing may download from a hub at run time
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
    }


def apply_defaults(root: str | Path) -> None:
    for key, value in defaults(root).items():
        os.environ.setdefault(key, value)


def report_flow_failures_once() -> None:
    """A failed flow run is reported by `rlhf`, once (one line for a user error); Prefect's own
    console copy would repeat it with a traceback. It is still recorded in Prefect's API."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def quiet_logging() -> None:
    """Library chatter (database migrations, temp folders) below WARNING stays off the console."""
    for name in ("mlflow", "alembic", "great_expectations", "httpx", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":
    for key, value in defaults(Path.cwd()).items():
        print(f"export {key}={shlex.quote(os.environ.get(key, value))}")
