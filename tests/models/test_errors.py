"""A signal that arrives inside a database driver is raised once the driver returns: stopped
mid-statement, a connection keeps its lock and the run's own cleanup fails on it."""

import os
import signal
import time

import pytest

from rlhf.models.errors import Interrupted, handle_interruptions

# A stand-in for a driver's code: what counts is the file it comes from, as for a real one.
DRIVER = compile(
    "def statement(seconds):\n"
    "    import os, signal, time\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "    end = time.monotonic() + seconds\n"
    "    while time.monotonic() < end:\n"
    "        pass\n"
    "    return 'done'\n",
    "/site-packages/sqlalchemy/engine/base.py",
    "exec",
)


@pytest.fixture
def handlers():
    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    handle_interruptions()
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    for s, h in kept.items():
        signal.signal(s, h)


def test_a_signal_inside_a_database_driver_waits_for_it_to_return(handlers):
    space: dict = {}
    exec(DRIVER, space)
    finished = []
    with pytest.raises(Interrupted) as stop:
        finished.append(space["statement"](0.3))
        time.sleep(1)  # the deferred signal is raised here, in the caller's code
    assert finished == ["done"]
    assert stop.value.signum == signal.SIGTERM


def test_a_signal_elsewhere_is_raised_at_once(handlers):
    with pytest.raises(Interrupted) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert stop.value.signum == signal.SIGINT
