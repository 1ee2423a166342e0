"""The feedback loop through a live Label Studio: each batch pushed as tasks of a pairwise
project, annotations made there through its API, pulled back once the batch is complete and
imported like any export, with the same accounting."""

import json

import pytest

from rlhf.core.feedback.label_studio import LabelStudioError, client
from rlhf.core.settings import load_settings
from rlhf.flows.loop import feedback_loop
from rlhf.flows.servers import stop_pid
from tests.support import label_studio as ls
from tests.support.project import make_project

pytestmark = pytest.mark.e2e  # a real Label Studio in its own virtualenv

TITLE = "rlhf tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = ls.start(tmp_path_factory.mktemp("label-studio"))
    yield started.url
    stop_pid(started.pid)


@pytest.fixture(scope="module")
def rounds(server, tmp_path_factory):
    """Three loop iterations: train and push batch 1; annotate all but one task, pull
    nothing; annotate the last, pull and import it, push batch 2."""
    cfg = {"url": server, "token_file": "label-studio.token", "project": TITLE}
    project = make_project(
        tmp_path_factory.mktemp("ls-loop") / "project",
        {
            "loop": {
                "min_new_comparisons": 1000,
                "collect_prompts": 6,
                "annotators": None,
                "label_studio": cfg,
            }
        },
    )
    (project / "label-studio.token").write_text(ls.personal_token(server) + "\n")
    params = str(project / "params.yaml")
    first = feedback_loop(params_path=params)
    tasks = ls.project_tasks(server, TITLE)
    for i, task in enumerate(tasks[:-1]):
        ls.annotate(server, task["id"], "left" if i % 2 == 0 else "right")
    second = feedback_loop(params_path=params)
    ls.annotate(server, tasks[-1]["id"], "left")
    third = feedback_loop(params_path=params)
    return project, tasks, first, second, third


def test_a_batch_goes_to_label_studio_and_its_annotations_come_back(server, rounds):
    project, tasks, first, second, third = rounds
    pushed = first["label_studio_push"]
    assert pushed["batch"] == "batch-0001" and pushed["tasks"] == first["collected"]["tasks"]
    assert len(tasks) == pushed["tasks"] > 1
    assert {t["data"]["batch"] for t in tasks} == {"batch-0001"}

    # one task still open: nothing pulled, nothing imported, the batch still out
    assert second["label_studio_pull"] == {
        "batch": "batch-0001",
        "tasks": len(tasks),
        "annotated": len(tasks) - 1,
        "file": None,
    }
    assert second["imported_files"] == 0 and second["collected"] is None
    assert second["label_studio_push"] == {}

    # complete: pulled into the inbox, imported as one batch with every annotation a pair
    assert third["label_studio_pull"]["file"].endswith("inbox/batch-0001-labelstudio.json")
    assert third["imported_files"] == 1 and third["added_pairs"] == len(tasks)
    assert not list((project / "inbox").glob("*.json"))  # moved to imported/
    (report,) = (project / "inbox" / "imported").glob("*batch-0001-labelstudio.json")
    assert third["label_studio_push"]["batch"] == "batch-0002"
    assert len(ls.project_tasks(server, TITLE)) == len(tasks) + third["collected"]["tasks"]

    # the people who labelled are named by their Label Studio account
    export = json.loads(report.read_text())
    assert {a["completed_by"]["email"] for t in export for a in t["annotations"]} == {ls.USER}


def test_a_wrong_token_is_one_line_naming_the_server_never_the_token(server, tmp_path):
    project = make_project(
        tmp_path / "project",
        {"loop": {"label_studio": {"url": server, "token_env": "RLHF_TEST_LS_TOKEN"}}},
    )
    settings = load_settings(project / "params.yaml")
    secret = "not-a-token-0123456789"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RLHF_TEST_LS_TOKEN", secret)
        with pytest.raises(LabelStudioError) as error:
            client(settings).project(TITLE)
    message = str(error.value)
    assert server in message and "HTTP 401" in message and secret not in message
    assert "\n" not in message
