"""The lineage a user follows by clicking, in a real browser: `mlflow server` on the finished
project, its pages opened in headless Chromium. From the champion's registered version to its
run and logged model, from the policy's run to the SFT, reward and judge versions it started
from, from the SFT run to the base model, and every dataset by its DVC path and md5."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient
from playwright.sync_api import Page, sync_playwright

from rlhf.core.io import digest_path
from rlhf.core.settings import load_settings
from rlhf.core.tracking.store import tracking_uri
from rlhf.flows.servers import start_mlflow, stop_pid
from tests.support.registry import rlhf

pytestmark = pytest.mark.e2e  # a real mlflow server and a browser

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def server(two_runs, tmp_path_factory):
    project = two_runs["project"]
    settings = load_settings(project / "params.yaml")
    log = tmp_path_factory.mktemp("mlflow-ui") / "mlflow.log"
    started = start_mlflow(tracking_uri(settings), project / "mlartifacts", log)
    yield started.url
    stop_pid(started.pid)


@pytest.fixture(scope="module")
def page(server):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's package)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser.new_page(viewport={"width": 1400, "height": 1600})
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


def open_page(page: Page, url: str, expect: str, shot) -> tuple[str, set[str]]:
    """The page's text and link targets once `expect` shows, with a screenshot saved."""
    page.goto(url)
    page.get_by_text(expect).first.wait_for(timeout=60_000)
    time.sleep(1)  # the page's other panels load in parallel with the one awaited
    page.keyboard.press("Escape")  # MLflow's first-visit dialog, when it shows
    page.screenshot(path=str(shot), full_page=True)
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    return page.inner_text("body"), set(hrefs)


def test_the_champion_leads_by_links_to_its_models_and_datasets(two_runs, server, page, shots):
    project = two_runs["project"]
    client = MlflowClient(server)
    champion = client.get_model_version_by_alias("rlhf-policy", "champion")
    run = client.get_run(champion.run_id)
    eid, model_id = run.info.experiment_id, champion.source.removeprefix("models:/")
    sft = client.get_model_version("rlhf-sft", "1")

    # the registered version: its training run and its logged model
    _, links = open_page(
        page,
        f"{server}/#/models/rlhf-policy/versions/{champion.version}",
        "Source Run",
        shots / "ui-version.png",
    )
    assert f"#/experiments/{eid}/runs/{champion.run_id}" in links
    assert f"#/experiments/{eid}/models/{model_id}" in links

    # its run: the datasets it read, named by DVC path with their md5, and the models it
    # started from, each with its registered version
    text, links = open_page(
        page,
        f"{server}/#/experiments/{eid}/runs/{champion.run_id}",
        "Logged models",
        shots / "ui-policy-run.png",
    )
    prompts = project / "artifacts/ingest/prompts_train.parquet"
    assert f"artifacts/ingest/prompts_train.parquet ({digest_path(prompts)})" in text
    assert {"#/models/rlhf-sft/versions/1", "#/models/rlhf-reward/versions/1"} <= links
    assert any(re.fullmatch(r"#/models/rlhf-judge/versions/\d+", h) for h in links)

    # the policy's model page: the evaluation's metrics on the held-out prompts
    text, links = open_page(
        page,
        f"{server}/#/experiments/{eid}/models/{model_id}",
        "Datasets used",
        shots / "ui-policy-model.png",
    )
    assert "artifacts/ingest/prompts_eval.parquet" in text
    assert "gold_win_rate_policy_vs_sft" in text or "judge_win_rate_policy_vs_sft" in text
    assert any(h.endswith(f"/runs/{champion.run_id}") for h in links)

    # the SFT run: its data and the base model it was trained from
    text, links = open_page(
        page,
        f"{server}/#/experiments/{eid}/runs/{sft.run_id}",
        "Logged models",
        shots / "ui-sft-run.png",
    )
    sft_data = project / "artifacts/ingest/sft.parquet"
    assert f"artifacts/ingest/sft.parquet ({digest_path(sft_data)})" in text
    assert "#/models/rlhf-base/versions/1" in links

    # the pipeline's parent run names the Prefect flow run that started it
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    flow_runs = {two_runs[k]["flow_run_id"] for k in ("first", "second")}
    assert parent.data.tags["prefect.flow_run_id"] in flow_runs


def test_lineage_reads_the_same_links_from_a_tracking_server(two_runs, server):
    """`rlhf lineage` against the server prints the tree it prints from the SQLite store."""
    project = two_runs["project"]
    local = rlhf(project, "lineage", "models:/rlhf-policy@champion")[1]
    remote = subprocess.run(
        [sys.executable, "-m", "rlhf.flows.cli", "--params", str(project / "params.yaml")]
        + ["lineage", "models:/rlhf-policy@champion"],
        env={**os.environ, "MLFLOW_TRACKING_URI": server},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert remote == local and "from models:/rlhf-base/1" in remote
