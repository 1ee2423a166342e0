"""Stopped from outside: Ctrl-C (SIGINT to the terminal's process group) and SIGTERM (what a
scheduler, systemd or Kubernetes sends) end a command with one line naming the stage and how to
go on, exit 128 + the signal, no temporary folder, no MLflow run left RUNNING and no process
left behind; a SIGKILL's leftovers are cleared by the next command, which resumes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.project import clone_project, write_params

pytestmark = pytest.mark.e2e  # several processes, each stopped mid-stage: the end-to-end job

LONG = {"pretrain": {"steps": 3000, "checkpoint_every": 20}}  # long enough to be stopped mid-way


def command(project: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "rlhf.flows.cli", "--params", str(project / "params.yaml"), *argv]


def stop_when(argv: list[str], project: Path, ready, sig: int, timeout: float = 240) -> tuple:
    """Start argv in a session of its own (as a terminal starts a job), send sig to its whole
    process group once ready() holds; (exit code, stderr, pids left in the session)."""
    proc = subprocess.Popen(
        argv, cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"ended before it could be stopped: {proc.stderr.read()[-2000:]}"
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    time.sleep(1)  # a child told to stop at its parent's end may take a moment
    return proc.returncode, err, session_members(proc.pid)


def session_members(sid: int) -> list[str]:
    """The command lines of live processes in session sid."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                left.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue
    return left


def run_statuses(project: Path) -> dict[str, str]:
    """The project's MLflow runs: name -> status (of the latest run of that name)."""
    with sqlite3.connect(project / "mlflow.db") as db:
        return dict(db.execute("SELECT name, status FROM runs ORDER BY start_time"))


def running(project: Path) -> int:
    """How many of the project's MLflow runs are RUNNING."""
    with sqlite3.connect(project / "mlflow.db") as db:
        return db.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]


def checkpoint_written(project: Path, stage: str):
    work = project / "artifacts/.work" / stage
    return lambda: any(work.glob("*/checkpoint-*/trainer_state.json"))


def temp_folders(project: Path) -> list[str]:
    return [p.name for p in (project / "artifacts").glob(".*.tmp-*")]


def assert_stopped(rc: int, err: str, sig: int, stage: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 128 + sig, err
    assert "Traceback" not in err, err
    assert lines[-1].startswith(f"rlhf: interrupted by {signal.Signals(sig).name} during stage "
                                f"{stage}"), err  # fmt: skip
    assert "resumes from" in lines[-1], err


@pytest.fixture
def long_project(tiny_project: Path) -> Path:
    write_params(tiny_project / "params.yaml", LONG, base=tiny_project / "params.yaml")
    subprocess.run(command(tiny_project, "stage", "ingest"), check=True, capture_output=True)
    return tiny_project


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_a_training_stage_stops_it_cleanly_and_keeps_its_checkpoint(long_project, sig):
    project = long_project
    argv = command(project, "stage", "pretrain")

    rc, err, left = stop_when(argv, project, checkpoint_written(project, "pretrain"), sig)

    assert_stopped(rc, err, sig, "pretrain")
    assert left == []
    assert temp_folders(project) == []
    assert not (project / "artifacts/pretrain").exists()  # nothing half-written published
    assert run_statuses(project)["pretrain"] == "KILLED"
    kept = err.strip().splitlines()[-1].split("resumes from ")[1].rstrip(")")
    assert (Path(kept) / "trainer_state.json").is_file()  # the checkpoint the next run takes


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_rlhf_run_stops_the_flow_before_its_server(long_project, sig):
    project = long_project
    rc, err, left = stop_when(
        command(project, "run", "--allow-leakage"),
        project,
        checkpoint_written(project, "pretrain"),
        sig,
    )

    assert_stopped(rc, err, sig, "pretrain")
    assert left == []  # the embedded Prefect server stopped with the flow
    assert temp_folders(project) == []
    statuses = run_statuses(project)
    assert statuses["pretrain"] == statuses["rlhf-pipeline"] == "KILLED", statuses
    assert running(project) == 0


def test_after_a_sigkill_the_next_command_closes_the_orphaned_run_and_clears_leftovers(
    long_project,
):
    project = long_project
    argv = command(project, "stage", "pretrain")
    rc, err, _ = stop_when(argv, project, checkpoint_written(project, "pretrain"), signal.SIGKILL)
    assert rc == -signal.SIGKILL, err
    assert run_statuses(project)["pretrain"] == "RUNNING"  # nobody could close it
    assert temp_folders(project)  # nor remove its temporary folder

    write_params(project / "params.yaml", {"pretrain": {"max_minutes": 0.05}},
                 base=project / "params.yaml")  # fmt: skip
    out = subprocess.run(command(project, "stage", "pretrain"), capture_output=True, text=True)

    assert "closed 1 run(s) a killed process left RUNNING" in out.stderr, out.stderr
    assert "removed what a killed run left" in out.stderr, out.stderr
    with sqlite3.connect(project / "mlflow.db") as db:
        rows = db.execute(
            "SELECT r.status, t.value FROM runs r LEFT JOIN tags t ON t.run_uuid = r.run_uuid "
            "AND t.key = 'rlhf.ended_by' WHERE r.name = 'pretrain' ORDER BY r.start_time"
        ).fetchall()
    assert rows[0][0] == "FAILED" and "SIGKILL" in rows[0][1], rows
    assert "RUNNING" not in {status for status, _ in rows}
    assert temp_folders(project) == []


@pytest.fixture
def upstream(trained_upstream, tmp_path) -> Path:
    """A copy of the tiny project with every stage before the policy done; PPO long enough to
    be stopped mid-way, with a checkpoint every iteration."""
    return clone_project(
        trained_upstream,
        tmp_path / "project",
        {"ppo": {"iterations": 400, "checkpoint_every": 1}},
    )


def test_sigterm_to_an_online_stage_stops_it_cleanly(upstream):
    work = upstream / "artifacts/.work/policy"
    rc, err, left = stop_when(
        command(upstream, "stage", "policy"),
        upstream,
        lambda: any(work.glob("*/checkpoint.pt")),
        signal.SIGTERM,
    )

    assert_stopped(rc, err, signal.SIGTERM, "policy")
    assert left == []
    assert temp_folders(upstream) == []
    assert not (upstream / "artifacts/policy").exists()
    assert run_statuses(upstream)["policy"] == "KILLED"
    assert running(upstream) == 0
