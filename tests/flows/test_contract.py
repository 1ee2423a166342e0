"""The runner holds a stage to the stage table: it reads only the inputs it declares and leaves
exactly the outs it declares, or it fails with one line naming both, and nothing is written."""

from dataclasses import dataclass

import pytest

from rlhf.core.pipeline.context import ContractError, StageContext
from rlhf.core.pipeline.stage import Stage
from rlhf.core.settings import load_settings
from rlhf.flows.runner import run_stage
from tests.support.project import make_project


@dataclass(frozen=True)
class Probe(Stage):
    """A stage whose body is `run` below; what it does is named by its name."""

    @property
    def module(self) -> str:
        return __name__


def run(ctx: StageContext) -> dict:
    if ctx.stage.name == "reads_undeclared":
        ctx.input("sft", "heldout.parquet")
    (ctx.out / "a.txt").write_text("declared")
    if ctx.stage.name == "writes_undeclared":
        (ctx.out / "notes.jsonl").write_text("{}\n")
    if ctx.stage.name == "leaves_an_out_out":
        (ctx.out / "a.txt").unlink()
    return {"ok": 1}


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings(make_project(tmp_path_factory.mktemp("contract") / "p") / "params.yaml")


def probe(name: str) -> Probe:
    return Probe(name, needs=("data/corpus",), params=("seed",), outs=("a.txt",))


def test_a_stage_that_keeps_its_contract_runs(settings):
    record = run_stage(probe("keeps"), settings)
    assert record["metrics"] == {"ok": 1} and set(record["outs"]) == {"a.txt"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("writes_undeclared", r"stage writes_undeclared wrote notes.jsonl and not less: .* a.txt$"),
        ("leaves_an_out_out", r"stage leaves_an_out_out wrote nothing else and not a.txt"),
        ("reads_undeclared", r"stage reads_undeclared reads sft/heldout.parquet, which the stage "),
    ],
)
def test_a_stage_that_breaks_it_fails_naming_what_and_writes_nothing(settings, name, message):
    with pytest.raises(ContractError, match=message) as error:
        run_stage(probe(name), settings)
    assert "\n" not in str(error.value)
    assert not settings.stage_dir(name).exists()
