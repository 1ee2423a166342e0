"""A throwaway PostgreSQL cluster for the tests of the production backends (Debian's package
`postgresql`, which .ci/run installs): started on a free loopback port, stopped by the test."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from rlhf.core.settings import UserError
from rlhf.flows.servers import HOST, Server, free_port


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (package postgresql), if installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


def as_postgres() -> list[str]:
    """The prefix that runs a PostgreSQL program as `postgres` when we are root (it refuses
    to run as root)."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def start_postgres(folder: Path, port: int | None = None) -> Server:
    """A fresh PostgreSQL cluster in folder (trust auth, loopback only) with a database
    `mlflow`; as root the server runs as the `postgres` user, which it insists on."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise UserError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    port = port or free_port()
    folder = Path(folder).resolve()
    data, log = folder / "data", folder / "postgres.log"
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")

    def run(*cmd: str) -> None:
        out = subprocess.run([*as_postgres(), *cmd], capture_output=True, text=True)
        if out.returncode:
            raise UserError(f"{cmd[0]} failed: {(out.stderr or out.stdout).strip()[-300:]}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(log),
        "-w",
        "-o",
        f"-h {HOST} -p {port} -k {folder}",
        "start",
    )
    run(str(bin_dir / "createdb"), "-h", HOST, "-p", str(port), "-U", "postgres", "mlflow")
    pid = int((data / "postmaster.pid").read_text().split()[0])
    return Server("postgres", pid, f"postgresql://postgres@{HOST}:{port}/mlflow", str(log))


def stop_postgres(folder: Path) -> None:
    bin_dir, data = postgres_bin(), Path(folder).resolve() / "data"
    subprocess.run(
        [*as_postgres(), str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
        capture_output=True,
    )
