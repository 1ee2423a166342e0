"""The exceptions that end a command with one line: bad input (a config, a checkpoint folder)
and an interruption (Ctrl-C, SIGTERM)."""

import signal
from pathlib import Path
from types import FrameType


class InputError(Exception):
    """Bad input from the user: reported as one line, never a traceback."""


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal (SIGINT: Ctrl-C; SIGTERM: what a scheduler, systemd or
    Kubernetes sends). A KeyboardInterrupt, so every cleanup that handles Ctrl-C runs: temp
    folders removed, MLflow runs ended KILLED, locks released."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# Code an exception must not be raised inside: a database driver stopped mid-statement keeps
# its connection's lock, and the cleanup that ends the MLflow run then waits on it and fails
# ("database is locked"). A signal that arrives there is raised as soon as the code returns.
UNSAFE_TO_INTERRUPT = ("/sqlalchemy/", "/sqlite3/", "/psycopg2/", "/psycopg/")
RETRY_SECONDS = 0.02
PENDING: list[int] = []  # the deferred signal, at most one


def raise_interrupted(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT and SIGTERM (and of SIGALRM, which retries a deferred one):
    raises Interrupted where it is safe, else defers it by RETRY_SECONDS."""
    if signum == signal.SIGALRM:
        if not PENDING:
            return
        signum = PENDING[0]
    if inside(frame, UNSAFE_TO_INTERRUPT):
        PENDING[:] = [signum]
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
        return
    PENDING.clear()
    raise Interrupted(signum)


def handle_interruptions() -> None:
    """SIGINT and SIGTERM raise Interrupted (SIGTERM as Ctrl-C: every cleanup runs)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, raise_interrupted)


def inside(frame: FrameType | None, paths: tuple[str, ...]) -> bool:
    """Whether frame or one of its callers runs code from a file under one of paths."""
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in paths):
            return True
        frame = frame.f_back
    return False


# Where the last stage an interruption stopped was, for the line that ends the command: the
# stage, and the checkpoint its next run resumes from (None: it starts over).
STOPPED: dict[str, tuple[str, Path | None]] = {}


def note_stopped(stage: str, checkpoint: Path | None) -> None:
    STOPPED["last"] = (stage, checkpoint)
