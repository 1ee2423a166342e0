"""The feedback loop through a Label Studio server: batches pushed as tasks, annotations pulled.

    <outbox>/label_studio.json   the project used, the batches pushed and those pulled back

The loop pushes each batch it writes (core/feedback/collect.py) as tasks of one pairwise project,
created on first use and reused by title after that. Once every task of a batch has an
annotation (a completed or a skipped one), the batch's export is written into the inbox,
where it is validated and imported like an export dropped there by hand, with the same
accounting. The API token comes from the environment or a file, never from params.yaml, and
is never printed: errors name the server, the request and the status.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from rlhf.core.feedback.collect import LABEL_CONFIG, LABEL_STUDIO_TASKS, outbox_dir, read_state
from rlhf.core.feedback.inbox import inbox_dir
from rlhf.core.io import read_json, write_json
from rlhf.core.settings import LabelStudio, Settings, UserError

STATE = "label_studio.json"


class LabelStudioError(UserError):
    """The server refused a request or could not be reached."""


def api_token(settings: Settings, cfg: LabelStudio) -> str:
    """The token from cfg.token_env, else from cfg.token_file."""
    token = os.environ.get(cfg.token_env, "").strip()
    if not token and cfg.token_file:
        path = settings.path(cfg.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UserError(f"loop.label_studio.token_file {path}: {e.strerror}") from None
    if not token:
        raise UserError(
            f"loop.label_studio: no API token (set {cfg.token_env} or loop.label_studio.token_file)"
        )
    return token


class Client:
    """Label Studio's REST API with a personal access token (a JWT that is exchanged for
    short-lived access tokens) or a legacy token."""

    def __init__(self, url: str, token: str, timeout: float):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self.personal = token.count(".") == 2  # a JWT: header.payload.signature
        self.access: str | None = None

    def authorization(self, renew: bool = False) -> str:
        if not self.personal:
            return f"Token {self.token}"
        if self.access is None or renew:
            answer = self.send("POST", "/api/token/refresh", {"refresh": self.token}, auth=False)
            self.access = str(answer["access"])
        return f"Bearer {self.access}"

    def send(
        self, method: str, path: str, body: Any = None, auth: bool = True, renew: bool = False
    ) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = self.authorization(renew)
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            if e.code == 401 and auth and self.personal and not renew:
                return self.send(method, path, body, auth, renew=True)  # access token expired
            detail = e.read(300).decode(errors="replace").replace("\n", " ")
            raise LabelStudioError(
                f"Label Studio at {self.url}: {method} {path.split('?')[0]}: HTTP {e.code} {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise LabelStudioError(f"Label Studio at {self.url}: unreachable ({reason})") from None
        except ValueError:  # e.g. an HTML page: the URL names another server
            raise LabelStudioError(
                f"Label Studio at {self.url}: {method} {path.split('?')[0]}: not a JSON answer"
            ) from None

    def project(self, title: str) -> int:
        """The id of the project with this title, created with the pairwise interface if
        there is none."""
        page = self.send("GET", "/api/projects?" + urllib.parse.urlencode({"page_size": 1000}))
        for project in page["results"]:
            if project["title"] == title:
                return int(project["id"])
        created = self.send("POST", "/api/projects", {"title": title, "label_config": LABEL_CONFIG})
        return int(created["id"])

    def import_tasks(self, project: int, tasks: list[dict]) -> int:
        return int(self.send("POST", f"/api/projects/{project}/import", tasks)["task_count"])

    def export(self, project: int) -> list[dict]:
        """Every task of the project with its annotations, in Label Studio's JSON export."""
        query = urllib.parse.urlencode({"exportType": "JSON", "download_all_tasks": "true"})
        return list(self.send("GET", f"/api/projects/{project}/export?{query}"))

    def emails(self) -> dict[int, str]:
        """User id -> email: the export names annotators by id."""
        answer = self.send("GET", "/api/users")
        users = answer["results"] if isinstance(answer, dict) else answer
        return {int(u["id"]): str(u.get("email") or u["id"]) for u in users}


def client(settings: Settings) -> Client:
    cfg = settings.loop.label_studio
    assert cfg is not None  # called only when params.yaml names a server
    return Client(cfg.url, api_token(settings, cfg), cfg.timeout_seconds)


def read_link(outbox: Path) -> dict:
    path = outbox / STATE
    return read_json(path) if path.exists() else {"project": None, "pushed": {}, "pulled": []}


def push_pending(settings: Settings) -> dict | None:
    """Push the batch out for labelling, if it has not been pushed yet; returns what was
    pushed ({"batch", "project", "tasks"}) or None."""
    outbox = outbox_dir(settings)
    batch = read_state(outbox)["waiting_for"]
    link = read_link(outbox)
    if batch is None or batch in link["pushed"]:
        return None
    assert settings.loop.label_studio is not None
    api = client(settings)
    project = api.project(settings.loop.label_studio.project)
    tasks = json.loads((outbox / batch / LABEL_STUDIO_TASKS).read_text(encoding="utf-8"))
    count = api.import_tasks(project, tasks)
    link = {**link, "project": project, "pushed": {**link["pushed"], batch: count}}
    write_json(outbox / STATE, link)
    return {"batch": batch, "project": project, "tasks": count}


def pull_finished(settings: Settings) -> dict | None:
    """Write the export of a pushed batch whose every task is annotated into the inbox.
    Returns {"batch", "tasks", "annotated", "file"} for the batch out (file is None while
    annotations are missing), or None when no pushed batch is waiting."""
    outbox = outbox_dir(settings)
    link = read_link(outbox)
    waiting = [b for b in link["pushed"] if b not in link["pulled"]]
    if not waiting:
        return None
    batch = waiting[0]
    api = client(settings)
    tasks = [t for t in api.export(int(link["project"])) if t["data"].get("batch") == batch]
    annotated = [t for t in tasks if t.get("annotations")]
    report: dict[str, Any] = {
        "batch": batch,
        "tasks": len(tasks),
        "annotated": len(annotated),
        "file": None,
    }
    if not tasks or len(annotated) < len(tasks):
        return report
    emails = api.emails()
    for task in tasks:
        for annotation in task["annotations"]:
            who = annotation.get("completed_by")
            if isinstance(who, int) and who in emails:
                annotation["completed_by"] = {"id": who, "email": emails[who]}
    inbox = inbox_dir(settings)
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / f"{batch}-labelstudio.json"
    partial = inbox / f".{target.name}"  # the inbox skips hidden names until the rename
    write_json(partial, tasks)
    partial.replace(target)
    write_json(outbox / STATE, {**link, "pulled": [*link["pulled"], batch]})
    return report | {"file": str(target)}
