"""The project lock: runs sharing artifacts/ wait for each other; the loop may nest the pipeline."""

import subprocess
import sys

from rlhf.core.settings import load_settings
from rlhf.flows.pipeline import project_lock
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
