"""Real servers on loopback: `mlflow server`, `prefect server` and a throwaway PostgreSQL.

`rlhf servers start` runs the first two for a project (pids, logs and credentials in
.servers/, mode 0700), each with authentication on: MLflow's basic-auth app and Prefect's API
auth string, with secrets generated once into files only the user can read. A request
without them is refused. Secrets and the backend store's URI reach the servers through
files and the environment, never a command line, so `ps` does not show them. The
integration tests start the same processes through the same functions. Nothing here listens
beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from rlhf.core.settings import UserError
from rlhf.flows.env import MLFLOW_USER, SECRETS, STATE

HOST = "127.0.0.1"
AUTH_INI = "mlflow-auth.ini"  # MLflow's auth app config: admin user, its database


@dataclass
class Server:
    name: str
    pid: int
    url: str  # what clients point at (MLFLOW_TRACKING_URI, PREFECT_API_URL, a database URI)
    log: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def spawn(name: str, cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start cmd in its own session (so stop() ends its workers too), output to log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def wait_healthy(
    name: str, url: str, proc: subprocess.Popen, log: Path, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(f"{name} server exited with {proc.returncode}: {tail[0]} (log: {log})")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    stop_pid(proc.pid)
    raise UserError(f"{name} server not healthy at {url} after {timeout:.0f} s (log: {log})")


def start_mlflow(
    backend_uri: str,
    artifacts: Path,
    log: Path,
    port: int | None = None,
    auth_config: Path | None = None,
) -> Server:
    """`mlflow server` with the given backend store, serving artifacts from a local folder;
    with auth_config, behind MLflow's basic-auth app."""
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "2",
        "--artifacts-destination",
        str(Path(artifacts).resolve()),
    ]
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_BACKEND_STORE_URI": backend_uri}
    if auth_config is not None:
        cmd += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
        # the auth app's CSRF key: the same for every worker, kept beside its config
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secret(auth_config.parent, "mlflow-flask-key")
    proc = spawn("mlflow", cmd, log, env)
    url = f"http://{HOST}:{port}"
    wait_healthy("mlflow", f"{url}/health", proc, log)
    return Server("mlflow", proc.pid, url, str(log))


def start_prefect(
    home: Path, log: Path, port: int | None = None, auth_string: str | None = None
) -> Server:
    """`prefect server start` (API, UI and the scheduler) with its database under home; with
    auth_string ("user:password"), every API request but the health check must carry it."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    env = {
        "PREFECT_HOME": str(Path(home).resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": f"http://{HOST}:{port}/api",
    }
    if auth_string is not None:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    proc = spawn("prefect", cmd, log, env)
    url = f"http://{HOST}:{port}/api"
    wait_healthy("prefect", f"{url}/health", proc, log)
    return Server("prefect", proc.pid, url, str(log))


# ------------------------------------------------------------------------------ credentials
def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file only the user can read, created with that mode (never readable between
    creation and a chmod)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)


def secret(state: Path, name: str, prefix: str = "") -> str:
    """The secret in state/name, generated on the first start and kept after (MLflow's auth
    database holds the admin password it was first started with)."""
    path = state / name
    if not path.is_file():
        write_private(path, prefix + secrets.token_urlsafe(32))
    return path.read_text(encoding="utf-8").strip()


def mlflow_auth_config(state: Path, password: str) -> Path:
    """The basic-auth app's config: one admin user, no access for anyone else."""
    config = {
        "default_permission": "NO_PERMISSIONS",
        "database_uri": f"sqlite:///{state / 'mlflow-auth.db'}",
        "admin_username": MLFLOW_USER,
        "admin_password": password,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    write_private(
        state / AUTH_INI, "[mlflow]\n" + "".join(f"{k} = {v}\n" for k, v in config.items())
    )
    return state / AUTH_INI


def alive(pid: int) -> bool:
    """Whether the process group of pid still has its leader running (a zombie, which a
    container's init may never reap, counts as gone)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: trust the signal


def stop_pid(pid: int, timeout: float = 20) -> bool:
    """Stop a server and its workers (its process group); False if it was not running."""
    if not alive(pid):
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True


# ---------------------------------------------------------------- `rlhf servers` for a project
def state_dir(root: Path) -> Path:
    return Path(root) / STATE


def running(root: Path) -> list[Server]:
    """Servers `rlhf servers start` recorded for this project that are still alive."""
    found = []
    for path in sorted(state_dir(root).glob("*.json")):
        server = Server(**json.loads(path.read_text()))
        if alive(server.pid):
            found.append(server)
        else:
            path.unlink()
    return found


def start_project_servers(
    root: Path, mlflow_port: int, prefect_port: int, backend_uri: str | None
) -> list[Server]:
    """MLflow on the project's own store (or backend_uri) and Prefect on its .prefect home,
    so runs made with the embedded defaults are there in both UIs; both with authentication."""
    root = Path(root).resolve()
    if running(root):
        raise UserError(f"{state_dir(root)}: servers already running (`rlhf servers stop` first)")
    logs = private_dir(state_dir(root))
    backend = backend_uri or f"sqlite:///{root / 'mlflow.db'}"
    auth = mlflow_auth_config(logs, secret(logs, SECRETS["MLFLOW_TRACKING_PASSWORD"]))
    started = []
    try:
        started.append(
            start_mlflow(backend, root / "mlartifacts", logs / "mlflow.log", mlflow_port, auth)
        )
        started.append(
            start_prefect(
                root / ".prefect",
                logs / "prefect.log",
                prefect_port,
                secret(logs, SECRETS["PREFECT_API_AUTH_STRING"], prefix="rlhf:"),
            )
        )
    except BaseException:
        for server in started:
            stop_pid(server.pid)
        raise
    for server in started:
        (logs / f"{server.name}.json").write_text(json.dumps(asdict(server)))
    return started


def stop_project_servers(root: Path) -> list[str]:
    stopped = []
    for server in running(root):
        stop_pid(server.pid)
        (state_dir(root) / f"{server.name}.json").unlink(missing_ok=True)
        stopped.append(server.name)
    return stopped
