"""DVC declares the same stages: `dvc repro` runs them once, then finds nothing to do; and
the Prefect flow reuses what DVC built."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rlhf.flows.pipeline import rlhf_pipeline
from rlhf.tasks import STAGES
from tests.flows.test_cli import ROOT, comparisons, project, rlhf

BIN = Path(sys.executable).parent


def dvc(*args, cwd):
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(cwd / ".dvc-site"),
    }
    out = subprocess.run(
        [str(BIN / "dvc"), *args], cwd=cwd, env=env, text=True, capture_output=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.e2e  # dvc repro of every stage in a git repository
def test_dvc_repro_runs_each_stage_once_and_prefect_reuses_it(tiny_project):
    dvc("init", "-q", cwd=tiny_project)
    dvc("add", "-q", "data", cwd=tiny_project)
    first = dvc("repro", cwd=tiny_project)
    assert first.count("Running stage") == len(STAGES), first
    second = dvc("repro", cwd=tiny_project)
    assert "Running stage" not in second
    assert "up to date" in second
    flow = rlhf_pipeline(params_path=str(tiny_project / "params.yaml"))
    assert flow["ran"] == []


@pytest.mark.e2e  # dvc and two imports, each a process of its own
def test_feedback_import_appends_a_new_version_of_the_dvc_tracked_dataset(tmp_path):
    params = project(tmp_path)
    (tmp_path / "data").mkdir()
    dvc("init", "-q", "--no-scm", cwd=tmp_path)
    first = rlhf(
        "--params",
        str(params),
        "feedback",
        "import",
        str(comparisons(tmp_path / "a.jsonl", 10)),
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    assert not (tmp_path / "data.dvc").exists()  # nothing tracks data/ yet
    dvc("add", "-q", "data", cwd=tmp_path)
    v1 = (tmp_path / "data.dvc").read_text()
    batch_one = json.loads(first.stdout.splitlines()[-1])["batch"]
    (tmp_path / "more").mkdir()
    second = rlhf(
        "--params",
        str(params),
        "feedback",
        "import",
        str(comparisons(tmp_path / "more/b.jsonl", 14)),
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr
    assert "data.dvc updated" in second.stderr
    assert (tmp_path / "data.dvc").read_text() != v1
    assert "up to date" in dvc("status", cwd=tmp_path)
    summary = json.loads(second.stdout.splitlines()[-1])
    assert (summary["added"], summary["merged"], summary["dataset_pairs"]) == (4, 10, 14)
    assert (tmp_path / "data/feedback/batches" / batch_one / "votes.parquet").is_file()


def test_the_demo_data_is_what_data_dvc_records(tmp_path):
    """A fresh clone writes data/ with `rlhf data`: DVC must find what data.dvc records, or
    the clone's `dvc status` reports the demo's inputs changed and `dvc repro` reruns all."""
    params = project(tmp_path)
    made = rlhf("--params", str(params), "data", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    dvc("init", "-q", "--no-scm", cwd=tmp_path)
    (tmp_path / ".dvcignore").write_text((ROOT / ".dvcignore").read_text())
    dvc("add", "-q", "data", cwd=tmp_path)
    assert md5_of(tmp_path / "data.dvc") == md5_of(ROOT / "data.dvc")


def md5_of(dvc_file: Path) -> str:
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]


def git(*args, cwd):
    who = ["-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    subprocess.run(["git", *who, *args], cwd=cwd, check=True, capture_output=True)


def aliases(project: Path) -> dict[str, dict[str, str]]:
    from mlflow import MlflowClient  # noqa: PLC0415  (a test's own store)

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    return {m.name: dict(m.aliases) for m in client.search_registered_models()}


def experiment_runs(project: Path) -> dict[str, dict[str, float]]:
    """The MLflow run of each DVC experiment: name -> its metrics."""
    from mlflow import MlflowClient  # noqa: PLC0415

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, filter_string="tags.`dvc.experiment` != ''")
    return {r.info.run_name: r.data.metrics for r in runs}


@pytest.mark.e2e  # rlhf run, dvc plots/metrics/exp/push/pull in two git clones
def test_a_dvc_user_sees_plots_metrics_experiments_and_a_remote(tiny_project, tmp_path):
    dvc("init", "-q", cwd=tiny_project)
    dvc("add", "-q", "data", cwd=tiny_project)
    ran = rlhf("run", cwd=tiny_project)
    assert ran.returncode == 0, ran.stderr
    assert "dvc.lock updated" in ran.stdout
    assert "up to date" in dvc("status", cwd=tiny_project)
    assert "Running stage" not in dvc("repro", cwd=tiny_project)
    one = rlhf("stage", "feedback", cwd=tiny_project)  # run by hand, outside DVC
    assert "dvc.lock updated" in one.stderr
    assert "up to date" in dvc("status", cwd=tiny_project)

    plots = json.loads(dvc("plots", "show", "--json", cwd=tiny_project))
    assert not plots.get("errors"), plots["errors"]
    curves = {
        name: len(shown[0]["content"]["data"]["values"])
        for name, shown in plots["data"].items()
        if shown[0]["type"] == "vega"
    }
    assert len(curves) >= 5 and all(curves.values()), curves
    assert any(shown[0]["type"] == "image" for shown in plots["data"].values())

    metrics = json.loads(dvc("metrics", "show", "--json", cwd=tiny_project))
    files = next(iter(metrics.values()))["data"]  # the workspace's, by metrics file
    columns = {f"{stage}.{k}" for f in files.values() for stage, m in f["data"].items() for k in m}
    assert 1 + len(columns) <= 40, columns  # the Path column and one per headline metric
    assert {stage.name for stage in STAGES} == {c.split(".")[0] for c in columns}

    # a remote: a second clone pulls the data and every stage's outputs and trains nothing
    dvc("remote", "add", "-d", "shared", str(tmp_path / "remote"), cwd=tiny_project)
    git("add", "-A", cwd=tiny_project)
    git("commit", "-qm", "pipeline run", cwd=tiny_project)
    dvc("push", "-q", cwd=tiny_project)
    second = tmp_path / "second"
    git("clone", "-q", str(tiny_project), str(second), cwd=tmp_path)
    dvc("pull", "-q", cwd=second)
    assert "up to date" in dvc("status", cwd=second)
    assert "Running stage" not in dvc("repro", cwd=second)
    assert not (second / "mlflow.db").exists()  # nothing ran there
    assert (second / "artifacts/policy/model").is_dir()

    # experiments: each through the runner, an MLflow run each, the registry's aliases kept
    before = aliases(tiny_project)
    for kl in ("0.05", "0.2"):
        dvc("exp", "run", "-n", f"kl-{kl}", "-S", f"ppo.kl_coef={kl}", cwd=tiny_project)
    shown = json.loads(dvc("exp", "show", "--json", cwd=tiny_project))
    experiments = {
        e["name"]: e["revs"][0]["data"]
        for baseline in shown
        for e in baseline.get("experiments") or ()
    }
    assert {"kl-0.05", "kl-0.2"} <= set(experiments)
    for name, kl in (("kl-0.05", 0.05), ("kl-0.2", 0.2)):
        data = experiments[name]
        assert data["params"]["params.yaml"]["data"]["ppo"]["kl_coef"] == kl
        summary = data["metrics"]["artifacts/evaluate/summary.json"]["data"]["evaluate"]
        assert "judge_win_rate_policy_vs_sft" in summary
    runs = experiment_runs(tiny_project)
    assert {"kl-0.05", "kl-0.2"} <= set(runs)
    assert all("evaluate.judge_win_rate_policy_vs_sft" in runs[n] for n in ("kl-0.05", "kl-0.2"))
    assert all("policy.selected_kl" in runs[n] for n in ("kl-0.05", "kl-0.2"))
    diff = json.loads(dvc("plots", "diff", "kl-0.05", "kl-0.2", "--json", cwd=tiny_project))
    assert not diff.get("errors"), diff["errors"]
    assert diff["data"]["policy-history"][0]["revisions"] == ["kl-0.05", "kl-0.2"]
    changed = json.loads(dvc("metrics", "diff", "kl-0.05", "kl-0.2", "--json", cwd=tiny_project))
    assert "evaluate.kl_policy_vs_ref" in changed["artifacts/evaluate/summary.json"]

    # a queued sweep runs in temporary copies of the project: its runs reach the project's store
    dvc("exp", "run", "--queue", "-S", "ppo.kl_coef=0.02,0.5", cwd=tiny_project)
    try:
        dvc("queue", "start", cwd=tiny_project)
        deadline = time.monotonic() + 600
        while re.search(r"\b(Queued|Running)\b", dvc("queue", "status", cwd=tiny_project)):
            assert time.monotonic() < deadline, dvc("queue", "status", cwd=tiny_project)
            time.sleep(5)
    finally:
        dvc("queue", "stop", "--kill", cwd=tiny_project)
    assert dvc("queue", "status", cwd=tiny_project).count("Success") == 2
    queued = set(experiment_runs(tiny_project)) - set(runs)
    assert len(queued) == 2
    assert all("evaluate.kl_policy_vs_ref" in experiment_runs(tiny_project)[n] for n in queued)
    assert not list(tiny_project.glob(".dvc/tmp/exps/tmp*/mlflow.db"))
    assert aliases(tiny_project) == before
