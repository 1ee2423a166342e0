"""Locks: runs sharing artifacts/ wait for each other; the loop may nest the pipeline; a wait
that runs out names the holder."""

import subprocess
import sys

import pytest

from rlhf.core.pipeline.locks import exclusive, project_lock
from rlhf.core.settings import UserError, load_settings
from tests.support.project import write_params

TRY_LOCK = (
    "import fcntl, sys\nf = open(sys.argv[1], 'a')\n"
    "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n"
    "    sys.exit(1)\n"
)


def other_process_gets_lock(path) -> bool:
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(path)]).returncode == 0


def test_lock_excludes_other_processes_and_nests_within_one(tmp_path):
    write_params(tmp_path / "params.yaml", {})
    settings = load_settings(tmp_path / "params.yaml")
    lock = tmp_path / ".rlhf.lock"
    with project_lock(settings):
        assert not other_process_gets_lock(lock)
        with project_lock(settings):  # the loop running the pipeline as a subflow
            assert not other_process_gets_lock(lock)
        assert not other_process_gets_lock(lock)  # the inner exit does not release it
    assert other_process_gets_lock(lock)


HOLD = (
    "import sys, time\nfrom rlhf.core.pipeline.locks import exclusive\n"
    "with exclusive(sys.argv[1], 'x', 0):\n    print('held', flush=True)\n    time.sleep(60)\n"
)


@pytest.mark.faults
def test_a_wait_that_runs_out_names_the_holder_and_a_killed_holder_frees_the_lock(tmp_path):
    lock = tmp_path / "data" / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(UserError) as e, exclusive(lock, "the feedback dataset", 0.3):
            pass
        assert f"locked by pid {holder.pid} on " in str(e.value) and "waited 0 s" in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    with exclusive(lock, "the feedback dataset", 5):  # the kernel released the dead holder's
        assert other_process_gets_lock(lock) is False
