"""Commands for tests that start processes of their own."""

from __future__ import annotations

import sys

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
