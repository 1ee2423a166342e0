"""The files generated from the code are what the code makes today."""

from rlhf.flows.generated import FILES, stale
from tests.support.project import ROOT


def test_the_committed_generated_files_are_current():
    assert stale(ROOT) == [], "run `make generated` (python -m rlhf.flows.generated)"


def test_the_demo_params_are_the_defaults_plus_six_overrides():
    changed = [
        line for line in (ROOT / "params.yaml").read_text().splitlines() if "# default:" in line
    ]
    assert [line.split(":")[0].strip() for line in changed] == [
        "allow_leakage",
        "generator",
        "steps",
        "iterations",
        "reference_judge",
        "annotators",
    ]
    assert set(FILES) >= {"params.yaml", "dvc.yaml", "docs/settings.md"}
