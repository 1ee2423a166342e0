"""dvc.yaml as the stage table renders it: plots of outs the stages declare, headline metrics
that fit a screen, and dvc.lock committed only where it describes what ran."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlhf.core.settings import METHODS, Settings, UserError, load_settings
from rlhf.core.tracking.dvc_source import run_dvc
from rlhf.flows import dvc_yaml
from rlhf.flows.dvc_yaml import commit_lock, render
from rlhf.flows.runner import run_stage
from rlhf.tasks import BY_NAME, STAGES
from tests.flows.test_cli import project
from tests.support.project import WITHOUT_MODEL, write_params


@pytest.mark.parametrize("method", list(METHODS))
def test_every_plot_reads_an_out_its_stage_declares(tmp_path, method):
    params = project(tmp_path)
    write_params(params, {"policy": {"method": method}})
    declared = yaml.safe_load(render(load_settings(params)))
    sources = []
    for plot in declared["plots"]:
        ((name, spec),) = plot.items()
        sources += list(spec["y"]) if spec else [name]
    assert len(sources) >= 7
    for source in sources:
        artifacts, stage, out = source.split("/", 2)
        assert artifacts == "artifacts" and out in BY_NAME[stage].outs, source


def test_the_headline_metrics_fit_a_screen_one_file_per_stage(tmp_path):
    declared = yaml.safe_load(render(load_settings(project(tmp_path))))["stages"]
    assert [s["metrics"] for s in declared.values()] == [
        [f"artifacts/{name}/summary.json"] for name in declared
    ]
    assert 1 + sum(len(s.headline) for s in STAGES) <= 40  # `dvc metrics show`: Path + each
    assert all(s.headline for s in STAGES)


def test_dvc_lock_is_left_alone_where_dvc_yaml_does_not_describe_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    params = project(tmp_path)
    settings = load_settings(params)
    assert commit_lock(settings, str(params), ["ingest"]) == ""  # not a DVC repository
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    said = commit_lock(settings, str(params), ["ingest"])
    assert "dvc.yaml is not what these settings declare" in said
    other = tmp_path / "other.yaml"
    other.write_text(params.read_text())
    said = commit_lock(load_settings(other), str(other), ["ingest"])
    assert said == f"dvc.lock not updated: dvc.yaml reads params.yaml, this run read {other}"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # a stage DVC runs: DVC keeps its lock
    assert commit_lock(settings, str(params), ["ingest"]) == ""
    assert not Path(tmp_path / "dvc.lock").exists()


def dvc_project(tmp_path: Path, monkeypatch) -> tuple[Path, Settings]:
    """A project in a DVC repository of its own whose dvc.yaml is what its settings declare."""
    monkeypatch.delenv("DVC_ROOT", raising=False)
    params = project(tmp_path)
    settings = load_settings(params)
    assert run_dvc(tmp_path, "init", "--no-scm", "-q") is None
    (tmp_path / "dvc.yaml").write_text(render(settings))
    return params, settings


def test_a_failed_or_interrupted_commit_leaves_dvc_lock_as_it_was(tmp_path, monkeypatch):
    params, settings = dvc_project(tmp_path, monkeypatch)
    tracker = tmp_path / "data.dvc"  # a .dvc file of the data is put back with dvc.lock
    tracker.write_text("outs:\n- path: data\n")
    lock = tmp_path / "dvc.lock"
    said = commit_lock(settings, str(params), ["ingest"])  # nothing built: DVC refuses
    assert said.startswith("dvc.lock not updated: dvc commit: ") and not lock.exists()
    lock.write_text("schema: '2.0'\n")

    def cut_short(root, *args):  # DVC rewrites dvc.lock in place: killed half-way
        lock.write_text("schema: '2.0'\nstages:\n  ingest:\n    cmd: rlhf st")
        tracker.write_text("outs:\n- md5: 3a")
        raise KeyboardInterrupt

    monkeypatch.setattr(dvc_yaml, "run_dvc", cut_short)
    with pytest.raises(KeyboardInterrupt):
        commit_lock(settings, str(params), ["ingest"])
    assert lock.read_text() == "schema: '2.0'\n"
    assert tracker.read_text() == "outs:\n- path: data\n"


def test_the_data_a_run_read_is_committed_beside_dvc_lock(tmp_path, monkeypatch):
    params, settings = dvc_project(tmp_path, monkeypatch)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/prompts.jsonl").write_text('{"prompt": "Hi?"}\n')
    assert run_dvc(tmp_path, "add", "-q", "data") is None
    recorded = (tmp_path / "data.dvc").read_text()
    shutil.rmtree(tmp_path / ".dvc/cache")  # as after `rlhf data` in a fresh clone
    assert "not in cache" in dvc_status(tmp_path)
    said = commit_lock(settings, str(params), [])
    assert said.endswith("; data.dvc the data they read"), said
    assert "not in cache" not in dvc_status(tmp_path)
    assert (tmp_path / "data.dvc").read_text() == recorded  # the same data, the same record


def dvc_status(root: Path) -> str:
    return subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "status"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_without_a_reward_model_no_stage_needs_feedback(tmp_path):
    params = project(tmp_path)
    write_params(params, {"policy": {"method": "grpo"}, "rewards": WITHOUT_MODEL})
    settings = load_settings(params)
    declared = yaml.safe_load(render(settings))
    assert list(declared["stages"]) == ["ingest", "pretrain", "sft", "policy", "evaluate"]
    deps = [d for s in declared["stages"].values() for d in s["deps"]]
    assert not [d for d in deps if d.split("/")[1] in ("feedback", "reward", "judge")]
    plotted = [src for p in declared["plots"] for spec in p.values() for src in spec.get("y", {})]
    assert not [src for src in plotted if src.split("/")[1] in ("reward", "judge")]
    with pytest.raises(UserError, match="stage reward: not part of this project's runs"):
        run_stage(BY_NAME["reward"], settings)
