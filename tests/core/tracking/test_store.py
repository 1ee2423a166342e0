"""The store's runs name the process that opened them: a run left RUNNING is closed only when
that process is surely gone; a DVC experiment is one run its stages reopen
(core/tracking/store.py)."""

import pytest

from rlhf.core.settings import load_settings
from rlhf.core.tracking.store import (
    artifact_location,
    is_gone,
    machine_view,
    open_store,
    store_root,
    this_process,
)
from tests.support.project import ROOT


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


P1 = {"dvc.baseline_rev": "a" * 40, "params_digest": "1" * 32}
P2 = {**P1, "params_digest": "2" * 32}
BASE2 = {**P1, "dvc.baseline_rev": "b" * 40}


def test_a_dvc_experiment_has_one_run_its_stages_reopen_and_close(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    store = open_store(load_settings(tmp_path / "params.yaml"))
    with store.experiment_run("kl-sweep-a", P1, {}) as first:
        store.log_to(first, {"policy.selected_kl": 1.5}, {"ppo.kl_coef": 0.05})
    with store.experiment_run("kl-sweep-a", P1, {}) as again:  # the next stage's process
        assert store.client.get_run(again).info.status == "RUNNING"
        store.log_to(again, {"evaluate.kl_policy_vs_ref": 2.0}, {"ppo.kl_coef": 0.05})
    with store.experiment_run("kl-sweep-b", P1, {}) as other:
        pass
    with store.experiment_run("kl-sweep-a", P2, {}) as rerun:  # `-f`, other params
        store.log_to(rerun, {}, {"ppo.kl_coef": 0.5})
    run = store.client.get_run(first)
    with store.experiment_run("kl-sweep-a", BASE2, {}) as moved:  # on another commit
        store.log_to(moved, {}, {"ppo.kl_coef": 0.05, "ppo.steps": 3})
        store.log_to(moved, {}, {"ppo.kl_coef": 0.07})  # a param keeps its first value
    with (
        store.experiment_run("it's mine", P1, {}) as quoted,
        store.experiment_run("it's mine", P1, {}) as quoted_again,
    ):
        pass
    assert again == first and len({first, other, rerun, moved}) == 4
    assert quoted == quoted_again
    assert store.client.get_run(moved).data.params == {"ppo.kl_coef": "0.05", "ppo.steps": "3"}
    assert run.info.status == "FINISHED" and run.info.run_name == "kl-sweep-a"
    assert run.data.metrics == {"policy.selected_kl": 1.5, "evaluate.kl_policy_vs_ref": 2.0}
    assert run.data.params == {"ppo.kl_coef": "0.05"}
    with pytest.raises(RuntimeError), store.experiment_run("kl-sweep-a", P1, {}):
        raise RuntimeError("the stage failed")
    assert store.client.get_run(first).info.status == "FAILED"


def test_a_queued_dvc_experiment_records_in_the_projects_store(tmp_path, monkeypatch):
    """`dvc exp run --queue` runs in a copy under .dvc/tmp/exps and names the project in
    DVC_ROOT: its runs go to the project's store, not to one deleted with the copy."""
    copy = tmp_path / ".dvc/tmp/exps/tmpabc"
    copy.mkdir(parents=True)
    (copy / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    settings = load_settings(copy / "params.yaml")
    assert store_root(settings) == copy.resolve()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert store_root(settings) == tmp_path.resolve()
    assert artifact_location(settings, "sqlite:///x.db") == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "elsewhere"))
    assert store_root(settings) == copy.resolve()
    # a project in a folder of the repository: the same folder of the repository
    (copy / "team").mkdir()
    (copy / "team/params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert store_root(load_settings(copy / "team/params.yaml")) == (tmp_path / "team").resolve()
