"""Environment defaults applied before any heavy library is imported.

They keep the libraries' state inside the project (Prefect's database, results) and quiet
(no telemetry, no progress bars, no hub access). A value the user has set is kept.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path


def apply_defaults(root: str | Path) -> None:
    root = Path(root).resolve()
    defaults = {
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # the first start migrates a fresh SQLite database, which can take longer than 20 s
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",  # nothing may download from a hub at run time
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    for key, value in defaults.items():
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
