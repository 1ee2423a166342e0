"""The store's runs name the process that opened them: a run left RUNNING is closed only when
that process is surely gone (core/tracking/store.py)."""

from rlhf.core.tracking.store import is_gone, machine_view, this_process


def test_a_run_is_taken_for_orphaned_only_when_its_process_is_surely_gone():
    host, boot, namespace = machine_view()
    me = this_process()
    assert not is_gone(me)  # alive
    pid, started = me.split(":")[1:3]
    assert is_gone(f"{host}:{pid}:{int(started) + 1}:{boot}:{namespace}")  # the pid reused
    assert is_gone(f"{host}:{pid}:{started}:another-boot:{namespace}")  # rebooted since
    assert not is_gone(f"{host}:{pid}:{int(started) + 1}:{boot}:another-namespace")  # a container
    assert not is_gone(f"another-host:{pid}:{int(started) + 1}:{boot}:{namespace}")
    assert not is_gone("written by an older version")
