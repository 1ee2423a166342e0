"""Prefect's embedded (ephemeral) server, started apart from the terminal's signals.

Without a PREFECT_API_URL, a flow run starts Prefect's server as a child process. In the
terminal's process group it would get Ctrl-C too, and die before the flow could record that
it was interrupted (the flow then retries the dead server for over a minute). Started in a
process group of its own, it is stopped by `rlhf` after the flow, as Prefect stops it at
exit; on Linux it also gets SIGTERM when `rlhf` dies without a chance to stop it (SIGKILL),
so it is never left running.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import threading
from typing import Any

from prefect.server.api import server

PR_SET_PDEATHSIG = 1
# looked up here, not in the forked child, where loading a library is not safe
PRCTL = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent thread ends."""
    if PRCTL is not None:
        PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


class _ApartSubprocess:
    """The subprocess module as Prefect's server module sees it: Popen in its own group."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> subprocess.Popen:  # noqa: N802 (subprocess's name)
        # the parent-death signal follows the thread that started the child: only the main
        # thread lives as long as the process
        main = threading.current_thread() is threading.main_thread()
        hook = die_with_parent if main and PRCTL is not None else None
        kwargs |= {"process_group": 0, "preexec_fn": hook}
        return subprocess.Popen(*args, **kwargs)  # noqa: PLW1509 (the hook is async-signal-safe)


def keep_apart() -> None:
    """Start the embedded server of the flows this process runs in its own process group."""
    server.subprocess = _ApartSubprocess()  # type: ignore[assignment]
