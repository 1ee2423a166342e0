"""The reward model: Bradley-Terry with margin and centring, calibration, and the score
statistics PPO normalises by."""

import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from rlhf.core.settings import load_settings
from rlhf.flows.runner import run_stage
from rlhf.models.reward import SCORE_STATS, bradley_terry_loss
from rlhf.models.reward_train import accuracy, encode
from rlhf.models.tokenizer import load_tokenizer
from rlhf.tasks import BY_NAME
from rlhf.tasks.reward import calibration
from tests.support.project import clone_project


def test_the_margin_asks_for_a_wider_gap_and_centring_pulls_scores_to_zero():
    chosen, rejected = torch.tensor([2.0, 0.5], requires_grad=True), torch.tensor([1.0, 0.0])
    plain = bradley_terry_loss(chosen, rejected)
    assert torch.isclose(plain, -torch.nn.functional.logsigmoid(torch.tensor([1.0, 0.5])).mean())
    with_margin = bradley_terry_loss(chosen, rejected, torch.tensor([1.0, 0.0]))
    assert with_margin > plain  # the first pair's gap of 1 no longer counts as a clear win
    centred = bradley_terry_loss(chosen, rejected, center_coef=0.1)
    assert torch.isclose(centred - plain, 0.1 * torch.tensor([9.0, 0.25]).mean())
    (grad,) = torch.autograd.grad(centred, chosen)
    assert (grad > torch.autograd.grad(plain, chosen)[0]).all()  # pushes both scores down


def test_a_tie_is_a_draw_whose_loss_is_least_at_equal_scores():
    chosen = torch.tensor([1.0, 0.3], requires_grad=True)
    rejected = torch.tensor([0.0, 0.3])
    loss = bradley_terry_loss(chosen, rejected, torch.tensor([math.nan, math.nan]))
    draw = -(F.logsigmoid(torch.tensor(1.0)) + F.logsigmoid(torch.tensor(-1.0))) / 2
    assert torch.isclose(loss, (draw + math.log(2)) / 2)
    (grad,) = torch.autograd.grad(loss, chosen)
    assert grad[0] > 0 and grad[1] == 0  # the apart pair pulled together, the equal one left
    mixed = bradley_terry_loss(chosen, rejected, torch.tensor([math.nan, 0.0]))
    assert torch.isclose(mixed, (draw - F.logsigmoid(torch.tensor(0.0))) / 2)


def test_calibration_buckets_gaps_and_compares_with_predicted_agreement():
    gap = torch.tensor([-0.1, 0.2, 0.3, -0.4, 2.0, 3.0, 4.0, -5.0, 6.0, 7.0])
    table = calibration(gap, buckets=2)
    assert table["pairs"].tolist() == [5, 5]
    assert table["accuracy"].tolist() == [0.6, 0.8]
    assert table["predicted"].iloc[0] < table["predicted"].iloc[1]
    assert accuracy(gap) == pytest.approx(0.7)


@pytest.fixture(scope="module")
def project(tmp_path_factory, trained_upstream):
    """A tiny project with its SFT model and feedback (and the rest up to the judge)."""
    return clone_project(trained_upstream, tmp_path_factory.mktemp("reward") / "project")


def test_the_stage_saves_calibration_and_the_score_statistics_ppo_uses(project):
    settings = load_settings(project / "params.yaml")
    record = run_stage(BY_NAME["reward"], settings)
    m = record["metrics"]
    table = pd.read_csv(project / "artifacts/reward/calibration.csv")
    assert (
        table["pairs"].sum() == m["test_pairs"]
        and len(table) == settings.reward.calibration_buckets
    )
    assert abs((table["accuracy"] * table["pairs"]).sum() / m["test_pairs"] - m["accuracy"]) < 1e-6
    stats = json.loads((project / "artifacts/reward/model" / SCORE_STATS).read_text())
    assert stats["samples"] == settings.reward.reference_samples and stats["std"] > 0
    assert (m["reference_score_mean"], m["reference_score_std"]) == (stats["mean"], stats["std"])

    run_stage(BY_NAME["judge"], settings)
    ppo = run_stage(BY_NAME["policy"], settings)["metrics"]
    assert (ppo["reference_score_mean"], ppo["reference_score_std"]) == (
        stats["mean"],
        stats["std"],
    )


def test_margins_from_the_feedback_reach_the_loss_only_when_asked(project, tmp_path):
    pairs = pd.read_parquet(project / "artifacts/feedback/pairs.parquet").head(4)
    pairs["margin"] = [2.0, None, 0.5, None]
    tok = load_tokenizer(str(project / "artifacts/sft/model"))
    with_margin, _ = encode(tok, pairs, 96, use_margin=True)
    without, _ = encode(tok, pairs, 96, use_margin=False)
    assert [m for *_, m in with_margin] == [2.0, 0.0, 0.5, 0.0]
    assert [m for *_, m in without] == [0.0] * 4
