"""The production path: real `prefect server`, `mlflow server` and PostgreSQL processes on
loopback, the deployments served and deployed to work pools, concurrent pipeline runs."""

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from rlhf.core.tracking.registry import champion_history
from rlhf.flows import servers
from tests.support import postgres as pg
from tests.support.project import ROOT, make_project

pytestmark = pytest.mark.e2e  # real servers, PostgreSQL, workers

LOOP = {"interval_seconds": 10, "min_new_comparisons": 100000, "collect_prompts": 8}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A project with its MLflow server (its own SQLite store, local artifacts) and Prefect
    server, started and stopped by `rlhf servers` as the README says: its export lines are
    run by a shell, which reads the secrets from their files."""
    project = make_project(tmp_path_factory.mktemp("servers") / "project", {"loop": LOOP})
    ports = [str(servers.free_port()), str(servers.free_port())]
    out = subprocess.run(
        rlhf(project, "servers", "start", "--mlflow-port", ports[0], "--prefect-port", ports[1]),
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    shell = subprocess.run(
        ["bash", "-c", f"{out.stdout}\nenv -0"], capture_output=True, text=True, check=True
    )
    env = dict(line.split("=", 1) for line in shell.stdout.split("\0") if "=" in line)
    names = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "MLFLOW_TRACKING_USERNAME")
    assert [env[k] for k in names] == [
        f"http://127.0.0.1:{ports[0]}",
        f"http://127.0.0.1:{ports[1]}/api",
        "rlhf",
    ]
    secrets = {k: env[k] for k in ("MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING")}
    assert all(len(v) > 30 and v not in out.stdout + out.stderr for v in secrets.values())
    clients = {k: env[k] for k in (*names, *secrets)}
    saved = {k: os.environ.get(k) for k in clients}
    os.environ.update(clients)  # this process's MLflow and Prefect clients, too
    yield {"project": project, "env": {**os.environ, **clients}, **clients}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    out = subprocess.run(
        rlhf(project, "servers", "stop"), cwd=project, capture_output=True, text=True
    )
    assert "stopped: mlflow, prefect" in out.stderr
    assert servers.running(project) == []


def prefect_settings(stack):
    return temporary_settings(
        {
            PREFECT_API_URL: stack["PREFECT_API_URL"],
            PREFECT_API_AUTH_STRING: stack["PREFECT_API_AUTH_STRING"],
        }
    )


def status_of(url: str, data: bytes | None = None, auth: str | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", f"Basic {base64.b64encode(auth.encode()).decode()}")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_servers_refuse_requests_without_credentials_and_never_show_them(stack):
    mlflow_api = f"{stack['MLFLOW_TRACKING_URI']}/api/2.0/mlflow"
    prefect_api = stack["PREFECT_API_URL"]
    move = b'{"name": "rlhf-policy", "alias": "champion", "version": "1"}'
    assert status_of(f"{mlflow_api}/registered-models/alias", move) == 401
    assert status_of(f"{mlflow_api}/experiments/search?max_results=1") == 401
    assert status_of(f"{prefect_api}/flows/filter", b"{}") == 401
    assert status_of(f"{prefect_api}/flows/filter", b"{}", "rlhf:wrong") == 401
    password = stack["MLFLOW_TRACKING_PASSWORD"]
    assert (
        status_of(f"{mlflow_api}/experiments/search?max_results=1", None, f"rlhf:{password}") == 200
    )
    assert status_of(f"{prefect_api}/flows/filter", b"{}", stack["PREFECT_API_AUTH_STRING"]) == 200
    state = stack["project"] / ".servers"
    private = ["mlflow-password", "prefect-auth-string", "mlflow-flask-key", "mlflow-auth.ini"]
    assert {oct((state / name).stat().st_mode & 0o777) for name in private} == {"0o600"}
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    secrets = [password, stack["PREFECT_API_AUTH_STRING"]]
    logs = "".join(p.read_text(errors="replace") for p in state.glob("*.log"))
    assert not any(s in text for s in secrets for text in [*command_lines(), logs])


def command_lines() -> list[str]:
    """What `ps` shows of every process."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):  # it ended meanwhile
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    return found


def rlhf(project, *args) -> list[str]:
    """The CLI, run from the project's own copy of the code."""
    return [sys.executable, "-m", "rlhf.flows.cli", "--params", str(project / "params.yaml"), *args]


def wait_for(what, check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def completed_runs(client, deployment_id):
    done = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(state=done),
    )


def test_served_deployments_run_on_demand_and_on_schedule(stack):
    project = stack["project"]
    serve = subprocess.Popen(
        rlhf(project, "serve"),
        cwd=project,
        env=stack["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with prefect_settings(stack), get_client(sync_client=True) as client:

            def deployed(name):
                try:
                    return client.read_deployment_by_name(name)
                except Exception:
                    return None

            loop = wait_for(
                "the loop deployment", lambda: deployed("rlhf-feedback-loop/feedback-loop"), 60
            )
            assert loop.schedules[0].schedule.interval.total_seconds() == 10
            run = run_deployment("rlhf-pipeline/pipeline", timeout=600)
            assert run.state.is_completed(), run.state
            # the schedule fires on its own: a scheduled loop run completes
            done = wait_for("a scheduled loop run", lambda: completed_runs(client, loop.id), 180)
            assert done[0].auto_scheduled
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
    # both URIs: another test in this process may have pointed the global registry URI elsewhere
    mlflow = MlflowClient(stack["MLFLOW_TRACKING_URI"], registry_uri=stack["MLFLOW_TRACKING_URI"])
    assert mlflow.get_model_version_by_alias("rlhf-policy", "champion").version == "1"
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("rlhf").experiment_id])
    assert {r.data.tags.get("stage") for r in runs} >= {"ingest", "policy", "evaluate"}
    # whichever of the two got the project's lock first trained; the other found its stages
    # cached (tests/core/pipeline/test_locks.py checks the lock itself)
    assert len(mlflow.search_model_versions("name='rlhf-policy'")) == 1
    # later scheduled runs import the simulated labels of the batches the earlier ones wrote
    outcomes = {r.data.tags["outcome"] for r in runs if r.info.run_name == "feedback-loop"}
    assert outcomes and all(
        o == "policy v1 first" or o.startswith("waiting for labels (") for o in outcomes
    ), outcomes
    secrets = (stack["MLFLOW_TRACKING_PASSWORD"], stack["PREFECT_API_AUTH_STRING"])
    recorded = json.dumps([[r.data.params, r.data.tags] for r in runs])
    assert not any(secret in recorded for secret in secrets)  # nor in any run's params or tags
    # artifacts went through the server (proxied), not to a folder of the client's
    assert runs[0].info.artifact_uri.startswith("mlflow-artifacts:")
    assert (project / "labeling/batch-0001/tasks.labelstudio.json").exists()


def test_deploy_registers_work_pool_deployments_that_a_worker_runs(stack):
    project = stack["project"]
    with prefect_settings(stack), get_client(sync_client=True) as client:
        for pool in ("cpu", "gpu"):
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        out = subprocess.run(
            rlhf(project, "deploy", "--pool", "cpu", "--gpu-pool", "gpu"),
            cwd=project,
            env=stack["env"],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        pools = {
            name: client.read_deployment_by_name(f"{flow}/{name}").work_pool_name
            for flow, name in (
                ("rlhf-pipeline", "pipeline"),
                ("rlhf-pipeline", "pipeline-gpu"),
                ("rlhf-feedback-loop", "feedback-loop"),
                ("rlhf-compare", "compare"),
            )
        }
        assert pools == {
            "pipeline": "cpu",
            "pipeline-gpu": "gpu",
            "feedback-loop": "gpu",
            "compare": "gpu",
        }
        client.pause_deployment(
            (client.read_deployment_by_name("rlhf-feedback-loop/feedback-loop")).id
        )  # only the run triggered below
        run = run_deployment("rlhf-pipeline/pipeline", timeout=0)
        worker = subprocess.run(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "cpu", "--run-once"],
            cwd=project,
            env=stack["env"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert worker.returncode == 0, worker.stdout[-2000:]
        state = client.read_flow_run(run.id).state
        assert state.is_completed(), state


@pytest.fixture
def postgres():
    if pg.postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail(
                "PostgreSQL is not installed; .ci/run installs it (Debian package postgresql)"
            )
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    # not under tmp_path: pytest makes that private to us, and the server runs as `postgres`
    folder = Path(tempfile.mkdtemp(prefix="rlhf-postgres-"))
    try:
        yield pg.start_postgres(folder)
    finally:
        pg.stop_postgres(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def mlflow_on_postgres(postgres, tmp_path):
    mlflow = servers.start_mlflow(postgres.url, tmp_path / "artifacts", tmp_path / "mlflow.log")
    yield mlflow
    servers.stop_pid(mlflow.pid)


# Sets alias-0..alias-19 on one model, and moves `champion` to its version, each at a given
# wall-clock moment, so that several of these processes make each move at the same time.
REGISTRY_WRITER = """
import sys, time
import mlflow
from rlhf.core.tracking.registry import move_champion, registry_client, set_alias
url, version, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
mlflow.set_tracking_uri(url)
mlflow.set_registry_uri(url)
for i in range(20):
    time.sleep(max(0.0, start + 0.3 * i - time.time()))
    set_alias(registry_client(), "race", f"alias-{i}", version)
    move_champion("race", version, "writer", f"round {i}")
"""


def test_registry_moves_made_by_two_processes_at_once_all_land(mlflow_on_postgres):
    """MLflow checks that an alias (or a registered model's tag) is absent before inserting it,
    so the same new key written at the same moment by two processes fails one of them on
    PostgreSQL's unique key (seen in CI when two projects promoted their first policy together:
    first on the alias, then on the champion history once kept as a registered-model tag).
    Without set_alias's retry, well over half of these 20 rounds fail."""
    client = MlflowClient(mlflow_on_postgres.url, registry_uri=mlflow_on_postgres.url)
    client.create_registered_model("race")
    versions = [client.create_model_version("race", "s3://bucket/race").version for _ in range(2)]
    start = time.time() + 10  # both writers have imported mlflow by then
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTRY_WRITER, mlflow_on_postgres.url, v, str(start)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for v in versions
    ]
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read()[-2000:]
    for i in range(20):
        assert client.get_model_version_by_alias("race", f"alias-{i}").version in versions
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(mlflow_on_postgres.url)
    mlflow.set_registry_uri(mlflow_on_postgres.url)
    try:  # both versions held champion; the one that took it last holds it now
        assert champion_history("race")[-1] == str(
            client.get_model_version_by_alias("race", "champion").version
        )
        assert sorted(champion_history("race")) == sorted(str(v) for v in versions)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def test_two_pipelines_at_once_on_a_postgres_backed_tracking_server(
    mlflow_on_postgres, stack, tmp_path
):
    """Two teams' projects (different seeds, so different weights) run at the same moment
    against one MLflow server on PostgreSQL and one Prefect server."""
    mlflow = mlflow_on_postgres
    projects = [make_project(tmp_path / f"team-{seed}", {"seed": seed}) for seed in (1, 2)]
    env = {**stack["env"], "MLFLOW_TRACKING_URI": mlflow.url}
    runs = [
        subprocess.Popen(
            rlhf(p, "run"),
            cwd=p,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in projects
    ]
    outputs = [r.communicate(timeout=600)[0] for r in runs]
    for r, out in zip(runs, outputs):
        assert r.returncode == 0, out[-3000:]
    client = MlflowClient(mlflow.url, registry_uri=mlflow.url)
    experiment = client.get_experiment_by_name("rlhf").experiment_id
    found = client.search_runs([experiment], max_results=1000)
    parents = [r for r in found if r.info.run_name == "rlhf-pipeline"]
    stages = [r for r in found if "stage" in r.data.tags]
    # no run lost: eight stages and the promote step per pipeline
    assert len(parents) == 2 and len(stages) == 18
    assert all(r.info.status == "FINISHED" for r in parents + stages)
    for kind in ("base", "sft", "reward", "policy"):
        versions = client.search_model_versions(f"name='rlhf-{kind}'")
        assert sorted(int(v.version) for v in versions) == [1, 2], kind  # none lost
        assert len({v.run_id for v in versions}) == 2
    judges = client.search_model_versions("name='rlhf-judge'")  # two members per project
    assert sorted(int(v.version) for v in judges) == [1, 2, 3, 4]
