"""The MLflow store as a dependency with a contract: checked before a stage runs, within
mlflow.wait_seconds, and otherwise one line naming the store and the cause, with nothing
written: an unknown scheme, a missing folder, an empty or foreign file where a store should
be, a SQLite store another process holds locked, a server that refuses or never answers."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf.flows.cli import main
from tests.support.faults import assert_one_line_error
from tests.support.project import write_params


def ingest_with_store(project: Path, capsys, uri: str, wait: float = 2) -> tuple[int, str]:
    write_params(
        project / "params.yaml",
        {"mlflow": {"tracking_uri": uri, "wait_seconds": wait}},
        base=project / "params.yaml",
    )
    rc = main(["--params", str(project / "params.yaml"), "stage", "ingest"])
    return rc, capsys.readouterr().err


def assert_nothing_written(project: Path) -> None:
    assert not (project / "artifacts/ingest").exists()


@pytest.mark.parametrize(
    ("uri", "cause"),
    [
        ("foo://store", "foo://store"),  # MLflow's own word: a plugin may add schemes
        ("sqlite:///missing/folder/mlflow.db", "no such folder"),
        ("sqlite:///empty.db", "an empty file, not an MLflow store"),
        ("sqlite:///foreign.db", "not an SQLite database"),
        ("http://127.0.0.1:{closed}", "no answer ("),
        ("sqlite+pysqlite:///missing/folder/mlflow.db", "no such folder"),
        ("http://127.0.0.1:99999", "not a usable address"),
    ],
)
def test_an_unusable_store_is_one_line_before_anything_runs(tiny_project, capsys, uri, cause):
    (tiny_project / "empty.db").write_bytes(b"")
    (tiny_project / "foreign.db").write_text("a spreadsheet, saved under the wrong name\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    uri = uri.format(closed=closed)

    rc, err = ingest_with_store(tiny_project, capsys, uri)

    line = assert_one_line_error(rc, err, "MLflow at ")
    assert cause in line
    assert_nothing_written(tiny_project)
    assert (tiny_project / "empty.db").read_bytes() == b""  # never made a new empty store


def test_a_server_that_accepts_and_never_answers_is_one_line_within_the_wait(tiny_project, capsys):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts connections; nobody reads or answers
        start = time.monotonic()
        rc, err = ingest_with_store(
            tiny_project, capsys, f"http://127.0.0.1:{silent.getsockname()[1]}", wait=2
        )
    line = assert_one_line_error(rc, err, "MLflow at http://127.0.0.1")
    assert "no answer within mlflow.wait_seconds (2 s)" in line
    assert time.monotonic() - start < 60  # the wait, not MLflow's minutes of retries
    assert_nothing_written(tiny_project)


HOLD = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process (a backup, say) holding the SQLite store locked for seconds."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def make_store(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE kept (x)")


def test_a_store_locked_past_the_wait_is_one_line(tiny_project, capsys):
    store = tiny_project / "locked.db"
    make_store(store)
    holder = hold_lock(store, 30)
    try:
        rc, err = ingest_with_store(tiny_project, capsys, "sqlite:///locked.db", wait=1)
    finally:
        holder.kill()
        holder.wait()
    assert "database is locked" in assert_one_line_error(rc, err, str(store))
    assert_nothing_written(tiny_project)


def test_a_store_locked_for_less_than_the_wait_is_waited_for(tiny_project, capsys):
    assert ingest_with_store(tiny_project, capsys, "sqlite:///mlflow.db", wait=60)[0] == 0
    record = tiny_project / "artifacts/ingest/stage.json"
    first = record.read_text()
    holder = hold_lock(tiny_project / "mlflow.db", 3)

    rc, err = ingest_with_store(tiny_project, capsys, "sqlite:///mlflow.db", wait=60)

    holder.wait()
    assert rc == 0, err
    assert record.read_text() != first  # ran again, in a new run of the store


def test_a_store_of_another_schema_revision_is_one_line(tiny_project, capsys):
    assert ingest_with_store(tiny_project, capsys, "sqlite:///mlflow.db")[0] == 0
    with sqlite3.connect(tiny_project / "mlflow.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0123abcd'")  # another MLflow's

    out = subprocess.run(  # a new process: this one has the store open already
        [sys.executable, "-m", "rlhf.flows.cli", "--params", str(tiny_project / "params.yaml"),
         "stage", "ingest"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    line = assert_one_line_error(out.returncode, out.stderr, "MLflow at sqlite:///")
    assert "out-of-date database schema" in line
