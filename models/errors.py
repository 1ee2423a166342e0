"""The exceptions that end a command with one line: bad input (a config, a checkpoint folder)
and an interruption (Ctrl-C, SIGTERM)."""

import signal
from pathlib import Path


class InputError(Exception):
    """Bad input from the user: reported as one line, never a traceback."""


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal (SIGINT: Ctrl-C; SIGTERM: what a scheduler, systemd or
    Kubernetes sends). A KeyboardInterrupt, so every cleanup that handles Ctrl-C runs: temp
    folders removed, MLflow runs ended KILLED, locks released."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


# Where the last stage an interruption stopped was, for the line that ends the command: the
# stage, and the checkpoint its next run resumes from (None: it starts over).
STOPPED: dict[str, tuple[str, Path | None]] = {}


def note_stopped(stage: str, checkpoint: Path | None) -> None:
    STOPPED["last"] = (stage, checkpoint)
