"""Commands for tests that start processes of their own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rlhf.flows.servers import free_port


def torchrun(processes: int = 2) -> list[str]:
    """The prefix that starts a command as `processes` torchrun workers on loopback."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(processes),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
    ]


def kill_matching(marker: str) -> int:
    """SIGKILL every process whose command line contains marker (torchrun's workers live in
    sessions of their own, so killing the launcher's group leaves them running). Returns how
    many were killed."""
    killed = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
                killed += 1
        except (OSError, ValueError):  # gone meanwhile
            continue
    return killed


def kill_at_checkpoint(
    command: list[str], cwd: Path, checkpoint: Path, pattern: str, marker: str | None = None
) -> None:
    """Run command and SIGKILL it once checkpoint/ holds a file matching pattern; given
    marker, every process whose command line holds it (torchrun's launcher and workers)."""
    proc = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    while not list(checkpoint.glob(pattern)) and proc.poll() is None:
        time.sleep(0.02)
    if marker is None:
        proc.send_signal(signal.SIGKILL)
    else:
        assert kill_matching(marker) >= 2, "the launcher and its workers"
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read()[-2000:]  # killed, not finished
