"""A project of one's own: `rlhf init` from a preference file alone, `rlhf check` before
training (lengths, splits, leakage), and the whole pipeline in the folder init made, with no
git and no DVC; on real AlpacaEval judgements when ../shared/data is there."""

import json
import shutil

import pytest
import yaml

from rlhf.core.settings import load_settings
from rlhf.flows.cli import main
from rlhf.flows.runner import run_stage
from rlhf.tasks import STAGES
from tests.support.checkpoints import tiny_checkpoint
from tests.support.project import ROOT, TINY, write_params

ANNOTATIONS = ROOT.parent / "shared" / "data" / "alpaca-eval-gpt4-annotations"
ITEMS = ["lamp", "kettle", "chair", "desk", "cable", "fan", "mug", "clock", "shelf", "rug"]


def feedback_file(path, n: int = 240):
    """AlpacaFarm-style judgements of n instructions, every 20th a tie."""
    rows = [
        {
            "instruction": f"Write one line about the {ITEMS[i % 10]} number {i}.",
            "output_1": f"The {ITEMS[i % 10]} {i} is sturdy and works well.",
            "output_2": f"{ITEMS[i % 10]} {i} bad.",
            "preference": "0" if i % 20 == 0 else ("1" if i % 3 else "2"),
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def init(tmp_path, *args: str) -> int:
    source = feedback_file(tmp_path / "judgements.jsonl")
    return main(["init", str(tmp_path / "p"), "--feedback", str(source), *args])


def check(project, *args: str) -> int:
    return main(["--params", str(project / "params.yaml"), "check", *args])


def test_init_makes_a_whole_project_from_feedback_alone(tmp_path, capsys):
    assert init(tmp_path, "--preset", "tiny", "--minutes", "20") == 0
    out = capsys.readouterr().err
    project = tmp_path / "p"
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert set(params) == {"pretrain", "sft", "reward", "judge", "ppo"}  # nothing of the demo
    assert params["pretrain"]["model"] == "tiny"
    budget = sum(params[s]["max_minutes"] for s in params) + params["judge"]["max_minutes"]
    assert budget < 20  # the judge's two members each have their share; the rest: evaluation
    load_settings(project / "params.yaml")
    for name in ("sft", "prompts/train", "prompts/eval", "corpus"):
        assert (project / "data" / name / "from-feedback.jsonl").stat().st_size > 0
    assert "pairs (12 ties)" in out and "git: not a repository" in out
    for name in (".gitignore", "dvc.yaml", "README.md"):
        assert (project / name).is_file()
    assert "models/" not in (project / "dvc.yaml").read_text()  # no code deps off the source

    assert check(project, "--no-estimate") == 0
    lines = capsys.readouterr().err.splitlines()
    for stage in ("ingest", "feedback", "sft", "reward", "judge", "policy", "evaluate"):
        assert any(line.startswith(f"{stage}: ") for line in lines), stage
    assert "leakage: none: no held-out prompt in the SFT data, policy prompts or corpus" in lines


def test_init_from_a_local_checkpoint_gives_pretraining_time_to_the_other_stages(tmp_path, capsys):
    base = tiny_checkpoint("qwen2", tmp_path / "base", [f"{item} text" for item in ITEMS * 20])
    assert init(tmp_path, "--base", str(base), "--minutes", "20") == 0
    project = tmp_path / "p"
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["pretrain"] == {"init_checkpoint": str(base.resolve())}
    budget = sum(params[s]["max_minutes"] for s in ("sft", "reward", "ppo"))
    assert budget + 2 * params["judge"]["max_minutes"] == pytest.approx(20 * 0.78, abs=0.05)
    capsys.readouterr()
    assert check(project, "--no-estimate") == 0
    assert "sft: " in capsys.readouterr().err  # lengths with the checkpoint's own tokenizer


def test_check_fails_on_leakage_unless_allowed(tmp_path, capsys):
    # evaluation prompts that include the training split's: leaked into SFT and the policy's
    every = [
        {"prompt": f"Write one line about the {ITEMS[i % 10]} number {i}."} for i in range(240)
    ]
    prompts = tmp_path / "eval.jsonl"
    prompts.write_text("\n".join(json.dumps(r) for r in every) + "\n")
    assert init(tmp_path, "--preset", "tiny", "--eval-prompts", str(prompts)) == 0
    project = tmp_path / "p"
    capsys.readouterr()
    assert check(project, "--no-estimate") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert any(
        line.startswith("leakage: error: ")
        and "evaluation prompts in the SFT data" in line
        and "eval.jsonl" in line
        for line in errors
    )
    assert check(project, "--no-estimate", "--allow-leakage") == 0
    assert "leakage: warning: " in capsys.readouterr().err


def test_init_refuses_a_project_that_exists_and_leaves_nothing_when_it_fails(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "params.yaml").write_text("seed: 1\n")
    assert init(tmp_path) == 2
    assert "params.yaml: exists" in capsys.readouterr().err
    assert main(["init", str(tmp_path / "q"), "--feedback", str(tmp_path / "missing.json")]) == 2
    assert not (tmp_path / "q").exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"instruction": "a", "output_1": "b", "output_2": "c"}) + "\n")
    assert main(["init", str(tmp_path / "r"), "--feedback", str(empty)]) == 2
    assert not (tmp_path / "r").exists()


def run_tiny(project, own_model: bool = False):
    """Every stage of the project at TINY's step counts, on its data as init made it; on TINY's
    micro model, or (own_model) on the model init chose."""
    tiny = {k: v for k, v in TINY.items() if k not in ("demo", "feedback")}
    if own_model:
        shape = ("model", "presets", "vocab_size")
        tiny["pretrain"] = {k: v for k, v in TINY["pretrain"].items() if k not in shape}
    write_params(project / "params.yaml", tiny, base=project / "params.yaml")
    settings = load_settings(project / "params.yaml")
    return {s.name: run_stage(s, settings) for s in STAGES}


def test_a_project_from_init_runs_the_pipeline_without_git_or_dvc(tmp_path):
    assert init(tmp_path, "--preset", "tiny") == 0
    records = run_tiny(tmp_path / "p")
    assert records["feedback"]["metrics"]["ties"] == 12
    assert records["policy"]["model"]["version"]
    assert records["evaluate"]["metrics"]["judge_win_rate_policy_vs_sft"] is not None


@pytest.mark.e2e
@pytest.mark.skipif(
    not ANNOTATIONS.is_dir(),
    reason=f"{ANNOTATIONS} absent (real data lives outside the project, in ../shared/data)",
)
def test_the_own_data_recipe_on_real_alpacaeval_judgements(tmp_path, capsys):
    source = tmp_path / "gpt4.json.gz"
    shutil.copy(ANNOTATIONS / "gpt4.json.gz", source)
    project = tmp_path / "p"
    assert main(["init", str(project), "--feedback", str(source), "--preset", "tiny"]) == 0
    assert check(project) == 0
    report = capsys.readouterr().err
    assert "leakage: none" in report and "estimate: ~" in report
    records = run_tiny(project, own_model=True)
    assert records["reward"]["metrics"]["test_pairs"] > 50
    assert records["evaluate"]["metrics"]["judge_win_rate_policy_vs_sft"] is not None
