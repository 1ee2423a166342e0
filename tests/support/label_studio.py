"""A real Label Studio on loopback for the tests: the PyPI package in its own virtualenv
(Django and its pins stay out of the project's environment), kept under .venv/ so a second
run reuses it, and a user whose personal access token the tests hand to the loop."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from rlhf.flows.servers import Server, free_port, spawn, wait_healthy
from tests.support.project import ROOT

VERSION = "1.23.2"
LOCK = Path(__file__).with_name("label-studio.lock")  # label-studio==VERSION and every dependency
# named by the lock's content: an edited lock installs afresh
VENV = (
    ROOT / ".venv" / f"label-studio-{VERSION}-{hashlib.sha256(LOCK.read_bytes()).hexdigest()[:8]}"
)
USER, PASSWORD = "annotator@example.com", "annotator-password-1"
LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"  # only to make the personal one


def install() -> Path:
    """The label-studio command, installed on first use (a few minutes)."""
    command = VENV / "bin" / "label-studio"
    if not command.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "-r", str(LOCK)],
            check=True,
            timeout=1200,
        )
    return command


def start(data: Path) -> Server:
    """A fresh Label Studio with its database in data (its first start migrates it)."""
    port = free_port()
    log = data / "label-studio.log"
    cmd = [str(install()), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", str(data), "--username", USER, "--password", PASSWORD]
    cmd += ["--user-token", LEGACY_TOKEN, "--enable-legacy-api-token"]
    proc = spawn("label-studio", cmd, log)
    url = f"http://127.0.0.1:{port}"
    wait_healthy("label-studio", f"{url}/health", proc, log, timeout=300)
    return Server("label-studio", proc.pid, url, str(log))


def call(url: str, method: str, path: str, body=None, token: str = LEGACY_TOKEN):
    """What a person's browser would do, through the API (legacy token)."""
    request = urllib.request.Request(
        url + path,
        None if body is None else json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Token {token}"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def personal_token(url: str) -> str:
    """The user's personal access token (a JWT), as the account page gives it."""
    return str(call(url, "POST", "/api/token/")["token"])


def annotate(url: str, task_id: int, pick: str) -> None:
    """The user picks the left or the right answer of a pairwise task."""
    result = [{"from_name": "comparison", "to_name": "answer1", "type": "pairwise"}]
    result[0]["value"] = {"selected": pick}
    call(url, "POST", f"/api/tasks/{task_id}/annotations", {"result": result})


def project_tasks(url: str, title: str) -> list[dict]:
    (project,) = [p for p in call(url, "GET", "/api/projects")["results"] if p["title"] == title]
    return call(url, "GET", f"/api/tasks?project={project['id']}&page_size=1000")["tasks"]
