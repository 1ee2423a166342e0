"""Several imports into one dataset at once, and imports killed midway: every batch lands
exactly once, the table equals the sequential result, and no kill leaves a trace."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rlhf.core.feedback.dataset import BATCHES, PAIRS, Splits, add_batch
from rlhf.core.io import digest_path
from rlhf.core.settings import Limits

pytestmark = [pytest.mark.integration, pytest.mark.faults]  # starts Python processes

IMPORT = """
import sys
from pathlib import Path
from rlhf.core.feedback.dataset import Splits, add_batch
from rlhf.core.settings import Limits
print("ready", flush=True)
sys.stdin.readline()
add_batch([Path(sys.argv[1])], "auto", Path(sys.argv[2]), Limits(), Splits(0.3))
"""
VOTE = ["pair_id", "prompt", "chosen", "rejected", "annotator", "split"]


def votes_file(path: Path, ids: range) -> Path:
    rows = (
        {"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}", "annotator": "a"}
        for i in ids
    )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def table(dataset: Path) -> list[tuple]:
    df = pd.read_parquet(dataset / PAIRS, columns=VOTE)
    return sorted(map(tuple, df.values.tolist()))


def sequential(files: list[Path], dataset: Path) -> list[tuple]:
    for f in files:
        add_batch([f], "auto", dataset, Limits(), Splits(0.3))
    return table(dataset)


def start_import(source: Path, dataset: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", IMPORT, str(source), str(dataset)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def go(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"\n")
    proc.stdin.flush()


def hidden(dataset: Path) -> list[str]:
    """Entries a writer leaves besides the lock: temp folders and files."""
    return [str(p.relative_to(dataset)) for p in dataset.rglob(".*") if p.name != ".lock"]


@pytest.mark.parametrize(
    ("n", "overlap"), [(2, False), pytest.param(4, True, marks=pytest.mark.e2e)]
)
def test_concurrent_imports_land_once_each_as_in_sequence(tmp_path, n, overlap):
    step = 150 if overlap else 300
    files = [
        votes_file(tmp_path / f"export{k}.jsonl", range(k * step, k * step + 300)) for k in range(n)
    ]
    procs = [start_import(f, tmp_path / "fb") for f in files]
    for p in procs:  # all started, then released together
        go(p)
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    batches = sorted(d.name for d in (tmp_path / "fb" / BATCHES).iterdir())
    assert [b[:4] for b in batches] == [f"{k:04d}" for k in range(1, n + 1)]
    assert table(tmp_path / "fb") == sequential(files, tmp_path / "seq")
    assert hidden(tmp_path / "fb") == []
    later = add_batch(
        [votes_file(tmp_path / "later.jsonl", range(5000, 5010))],
        "auto",
        tmp_path / "fb",
        Limits(),
        Splits(0.3),
    )
    assert later["added"] == 10


def test_an_import_killed_at_any_point_reruns_to_the_same_dataset(tmp_path):
    first = votes_file(tmp_path / "first.jsonl", range(0, 200))
    big = votes_file(tmp_path / "big.jsonl", range(100, 10_100))
    start = tmp_path / "start"
    add_batch([first], "auto", start, Limits(), Splits(0.3))
    expected = sequential([first, big], tmp_path / "seq")
    before = digest_path(start)

    proc = start_import(big, start.with_name("timed"))
    shutil.copytree(start, start.with_name("timed"))
    t0 = time.monotonic()
    go(proc)
    proc.communicate(timeout=300)
    duration = time.monotonic() - t0

    for k, fraction in enumerate([0.1, 0.5, 0.9]):
        dataset = tmp_path / f"killed{k}"
        shutil.copytree(start, dataset)
        proc = start_import(big, dataset)
        go(proc)
        time.sleep(fraction * duration)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        committed = any(d.name.startswith("0002-") for d in (dataset / BATCHES).iterdir())
        assert committed or digest_path(dataset) == before, fraction  # temp folders not counted
        summary = add_batch([big], "auto", dataset, Limits(), Splits(0.3))
        assert summary["already_imported"] == committed
        assert hidden(dataset) == [], fraction
        assert len(list((dataset / BATCHES).iterdir())) == 2
        assert table(dataset) == expected
